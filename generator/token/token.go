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
	// LabelRun names the run that created a token in the cluster. Only a
	// token whose run committed (wrote its documents and then said so with
	// a run marker, see RunMarker) is reused by a later run: a token of a
	// run still in progress may yet be rolled back.
	LabelRun = "kubestrap.dev/run"
	// AnnotationCommitted is the time a run committed, on its marker.
	AnnotationCommitted = "kubestrap.dev/committed"
	// SecretTypeRunMarker is the type of the marker Secret a run creates
	// when it commits.
	SecretTypeRunMarker = "kubestrap.dev/run"
	runMarkerPrefix     = "kubestrap-run-"
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
	// Run is the run that created the token in the cluster; "" for tokens
	// minted offline, which a later run may reuse once applied.
	Run string
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
	labels := map[string]string{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(t.Node)}
	if t.Run != "" {
		labels[LabelRun] = t.Run
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        bootstraputil.BootstrapTokenSecretName(t.ID),
			Namespace:   metav1.NamespaceSystem,
			Labels:      labels,
			Annotations: map[string]string{AnnotationNode: t.Node},
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}
}

// RunMarker is the Secret that says run committed at now: its tokens are
// in documents that were written, so a later run may reuse them. One marker
// per run, rather than a mark on each token, keeps a commit to one API call
// however many nodes the run had.
func RunMarker(run string, now time.Time) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        runMarkerPrefix + run,
			Namespace:   metav1.NamespaceSystem,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelRun: run},
			Annotations: map[string]string{AnnotationCommitted: now.UTC().Format(time.RFC3339)},
		},
		Type: SecretTypeRunMarker,
	}
}
