// Package token mints kubelet bootstrap tokens and describes them as the
// bootstrap-token Secrets that kube-apiserver authenticates against.
package token

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Labels that mark the tool's Secrets, so a later run can find a node's token.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelNode      = "kubestrap.dev/node"
	ManagedBy      = "kubestrap"
	// AnnotationNode holds the full node name when it does not fit a label value.
	AnnotationNode = "kubestrap.dev/node"
	Description    = "kubelet bootstrap token for node %s (kubestrap)"
)

// Token is one node's bootstrap token. Its String and GoString hide the
// secret, so a token that reaches a log or an error by mistake leaks nothing;
// Value is the only way to the whole token.
type Token struct {
	ID      string
	secret  string
	Node    string
	Expires time.Time
	// Signing adds the "signing" usage (cluster-info discovery).
	Signing bool
}

// New builds a Token from "id.secret", checking its format.
func New(value, node string, expires time.Time, signing bool) (Token, error) {
	if !bootstraputil.IsValidBootstrapToken(value) {
		return Token{}, errors.New("malformed bootstrap token (want [a-z0-9]{6}.[a-z0-9]{16})")
	}
	id, secret, _ := strings.Cut(value, ".")
	return Token{ID: id, secret: secret, Node: node, Expires: expires, Signing: signing}, nil
}

// Value is the bearer token "id.secret".
func (t Token) Value() string { return bootstraputil.TokenFromIDAndSecret(t.ID, t.secret) }

func (t Token) String() string   { return t.ID + ".<redacted>" }
func (t Token) GoString() string { return "token.Token{ID:" + t.ID + ", secret:<redacted>}" }

// Group is the extra group the token's user belongs to. Group names may not
// contain dots, and node names may not contain colons, so mapping dots to
// colons keeps FQDN node names valid and the mapping one-to-one.
func Group(node string) string {
	return bootstrapapi.BootstrapDefaultGroup + ":" + strings.ReplaceAll(node, ".", ":")
}

// nodeLabel returns the label value that marks the node's Secrets: the name
// itself when it fits a label value, else a stable digest of it.
func nodeLabel(node string) string {
	if len(validation.IsValidLabelValue(node)) == 0 {
		return node
	}
	sum := sha256.Sum256([]byte(node))
	return "sha256-" + hex.EncodeToString(sum[:])[:40]
}

// Secret is the bootstrap-token Secret that `kubeadm token create --groups
// system:bootstrappers:<node>` would make for t.
func Secret(t Token) *corev1.Secret {
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:               []byte(t.ID),
		bootstrapapi.BootstrapTokenSecretKey:           []byte(t.secret),
		bootstrapapi.BootstrapTokenExpirationKey:       []byte(t.Expires.UTC().Format(time.RFC3339)),
		bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
		bootstrapapi.BootstrapTokenDescriptionKey:      []byte(fmt.Sprintf(Description, t.Node)),
		bootstrapapi.BootstrapTokenExtraGroupsKey:      []byte(Group(t.Node)),
	}
	if t.Signing {
		data[bootstrapapi.BootstrapTokenUsageSigningKey] = []byte("true")
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        bootstraputil.BootstrapTokenSecretName(t.ID),
			Namespace:   metav1.NamespaceSystem,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(t.Node)},
			Annotations: map[string]string{AnnotationNode: t.Node},
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}
}
