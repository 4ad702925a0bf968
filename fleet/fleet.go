// Package fleet reads from a cluster how far the bootstrap of a node list
// went: each node's kubestrap token, its kubelet's client CSR and its Node
// object, and which of kubestrap's token Secrets no node needs any more.
//
// Nothing here ever holds a token's secret half: Secrets are reduced to
// their id, node, times and UID as soon as they are read.
package fleet

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/kubestrap/kubestrap/approve"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/token"
)

// TokenState is what became of a node's token.
type TokenState string

const (
	// TokenUnused: no CSR was made with it yet.
	TokenUnused TokenState = "unused"
	// TokenUsed: a CSR was made with it (a kubelet booted with it).
	TokenUsed TokenState = "used"
	// TokenExpired: its expiration passed before any CSR was made with it.
	TokenExpired TokenState = "expired"
	// TokenDeleted: the node has no token Secret, but a CSR made with one
	// of its tokens is left.
	TokenDeleted TokenState = "deleted"
	// TokenNone: no token Secret and no CSR made with one of the node's
	// tokens.
	TokenNone TokenState = "none"
)

// CSRState is where the node's kubelet client CSR stands.
type CSRState string

const (
	CSRNone     CSRState = "none"
	CSRPending  CSRState = "pending"
	CSRApproved CSRState = "approved" // approved, no certificate yet
	CSRDenied   CSRState = "denied"
	CSRIssued   CSRState = "issued"
	CSRFailed   CSRState = "failed" // approved, but the signer failed
)

// NodeState is the node's Node object, as its Ready condition says.
type NodeState string

const (
	NodeAbsent   NodeState = "absent"
	NodeNotReady NodeState = "NotReady"
	NodeReady    NodeState = "Ready"
)

// NodeStatus is one node's bootstrap. The tags are JSON's, which
// sigs.k8s.io/yaml also follows.
type NodeStatus struct {
	Name  string      `json:"name"`
	Token TokenStatus `json:"token"`
	CSR   CSRStatus   `json:"csr"`
	Node  NodeInfo    `json:"node"`
}

// TokenStatus is the node's newest token.
type TokenStatus struct {
	// ID is the token's public half; "" for TokenNone.
	ID    string     `json:"id,omitempty"`
	State TokenState `json:"state"`
	// Expires is nil when the token never expires or its Secret is gone.
	// An expiration that does not parse is, as to the API server, passed:
	// it shows as the zero time.
	Expires *time.Time `json:"expires,omitempty"`
	// Minted is the Secret's creation; Age how long ago that was, as
	// kubectl's AGE column writes it. Both are unset when there is no
	// Secret.
	Minted *time.Time `json:"minted,omitempty"`
	Age    string     `json:"age,omitempty"`
	// Others counts the node's other token Secrets, older than this one.
	Others int `json:"others,omitempty"`
}

// CSRStatus is the node's newest kubelet client CSR, made with one of its
// tokens or by the node itself (a renewal).
type CSRStatus struct {
	Name  string   `json:"name,omitempty"`
	State CSRState `json:"state"`
	// Reason and Message are the Denied (or Failed) condition's.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// NodeInfo is the node's Node object.
type NodeInfo struct {
	State          NodeState `json:"state"`
	KubeletVersion string    `json:"kubeletVersion,omitempty"`
}

// Snapshot is one read of the cluster: kubestrap's token Secrets (without
// their secrets), the CSRs and the Nodes.
type Snapshot struct {
	tokens []tokenSecret
	csrs   []certv1.CertificateSigningRequest
	nodes  map[string]NodeInfo
}

// tokenSecret is what is kept of a token Secret.
type tokenSecret struct {
	name, id, node string
	uid            types.UID
	minted         time.Time
	expires        *time.Time // nil: never
}

func (t *tokenSecret) expired(now time.Time) bool {
	return t.expires != nil && !now.Before(*t.expires)
}

// Read lists, once each, kubestrap's token Secrets in kube-system, the CSRs
// and the Nodes.
func Read(ctx context.Context, client kubernetes.Interface) (*Snapshot, error) {
	secrets, err := client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		LabelSelector: token.LabelManagedBy + "=" + token.ManagedBy,
		FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken),
	})
	if err != nil {
		return nil, fmt.Errorf("listing the token Secrets in %s: %w", metav1.NamespaceSystem, err)
	}
	csrs, err := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the CSRs: %w", err)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the Nodes: %w", err)
	}
	s := &Snapshot{csrs: csrs.Items, nodes: make(map[string]NodeInfo, len(nodes.Items))}
	for i := range secrets.Items {
		// The selectors already chose these; checking again keeps another
		// tool's token out even from a server (or fake) that ignored them.
		if sec := &secrets.Items[i]; approve.Owned(sec) {
			s.tokens = append(s.tokens, reduce(sec))
		}
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		s.nodes[n.Name] = NodeInfo{State: nodeState(n), KubeletVersion: n.Status.NodeInfo.KubeletVersion}
	}
	return s, nil
}

// reduce keeps what status and pruning read of a token Secret, never the
// secret itself.
func reduce(s *corev1.Secret) tokenSecret {
	t := tokenSecret{
		name:   s.Name,
		id:     string(s.Data[bootstrapapi.BootstrapTokenIDKey]),
		node:   s.Annotations[token.AnnotationNode],
		uid:    s.UID,
		minted: s.CreationTimestamp.UTC(),
	}
	if t.id == "" {
		t.id = strings.TrimPrefix(s.Name, bootstrapapi.BootstrapTokenSecretPrefix)
	}
	if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
		// The API server takes an expiration it cannot parse as passed.
		e, err := time.Parse(time.RFC3339, exp)
		if err != nil {
			e = time.Time{}
		}
		e = e.UTC()
		t.expires = &e
	}
	return t
}

func nodeState(n *corev1.Node) NodeState {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return NodeReady
		}
	}
	return NodeNotReady
}

// Tokens is how many kubestrap token Secrets the snapshot holds.
func (s *Snapshot) Tokens() int { return len(s.tokens) }

// Gather reads the cluster (see Read) and returns the status of each node
// of the list, in the list's order.
func Gather(ctx context.Context, client kubernetes.Interface, nodes []model.Node, now time.Time) ([]NodeStatus, error) {
	s, err := Read(ctx, client)
	if err != nil {
		return nil, err
	}
	return s.Status(nodes, now), nil
}

// index is a snapshot seen through a node list.
type index struct {
	policy *approve.Policy
	byID   map[string]*tokenSecret
	byNode map[string][]*tokenSecret // newest first
}

func (s *Snapshot) index(nodes []model.Node) index {
	ix := index{policy: approve.NewPolicy(nodes), byID: map[string]*tokenSecret{}, byNode: map[string][]*tokenSecret{}}
	for i := range s.tokens {
		t := &s.tokens[i]
		ix.byID[t.id] = t
		ix.byNode[t.node] = append(ix.byNode[t.node], t)
	}
	for _, ts := range ix.byNode {
		slices.SortFunc(ts, func(a, b *tokenSecret) int {
			return cmp.Or(b.minted.Compare(a.minted), strings.Compare(a.name, b.name))
		})
	}
	return ix
}

// owner is the node a CSR was made for, and the token id when it was made
// with a bootstrap token. The groups the API server recorded name the
// token's node even once its Secret is gone, so they come first; the
// Secret's annotation covers a token whose node has left the list.
func (ix index) owner(csr *certv1.CertificateSigningRequest) (node, id string) {
	if name, ok := strings.CutPrefix(csr.Spec.Username, approve.NodeUserPrefix); ok {
		return name, ""
	}
	node, id, ok := ix.policy.BootstrapNode(csr)
	if ok {
		return node, id
	}
	if t := ix.byID[id]; id != "" && t != nil {
		return t.node, id
	}
	return "", id
}

// newer is the newer of two CSRs, a possibly nil.
func newer(a, b *certv1.CertificateSigningRequest) *certv1.CertificateSigningRequest {
	if a == nil {
		return b
	}
	if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c > 0 || c == 0 && b.Name > a.Name {
		return b
	}
	return a
}

// Status is the status of each node of the list at now, in the list's
// order.
func (s *Snapshot) Status(nodes []model.Node, now time.Time) []NodeStatus {
	ix := s.index(nodes)
	used := map[string]bool{}
	// Per node: the newest kubelet client CSR, and the newest CSR of any
	// signer made with one of its tokens.
	client := map[string]*certv1.CertificateSigningRequest{}
	byToken := map[string]*certv1.CertificateSigningRequest{}
	for i := range s.csrs {
		csr := &s.csrs[i]
		node, id := ix.owner(csr)
		if id != "" {
			used[id] = true
			if node != "" {
				byToken[node] = newer(byToken[node], csr)
			}
		}
		if node != "" && csr.Spec.SignerName == certv1.KubeAPIServerClientKubeletSignerName {
			client[node] = newer(client[node], csr)
		}
	}

	out := make([]NodeStatus, 0, len(nodes))
	for _, n := range nodes {
		st := NodeStatus{
			Name:  n.Name,
			Token: TokenStatus{State: TokenNone},
			CSR:   CSRStatus{State: CSRNone},
			Node:  NodeInfo{State: NodeAbsent},
		}
		if ts := ix.byNode[n.Name]; len(ts) > 0 {
			t := ts[0]
			minted := t.minted
			st.Token = TokenStatus{ID: t.id, State: TokenUnused, Expires: t.expires, Minted: &minted,
				Age: duration.HumanDuration(now.Sub(t.minted)), Others: len(ts) - 1}
			switch {
			case used[t.id]:
				st.Token.State = TokenUsed
			case t.expired(now):
				st.Token.State = TokenExpired
			}
		} else if csr := byToken[n.Name]; csr != nil {
			st.Token = TokenStatus{ID: strings.TrimPrefix(csr.Spec.Username, approve.BootstrapUserPrefix), State: TokenDeleted}
		}
		if csr := client[n.Name]; csr != nil {
			st.CSR = csrStatus(csr)
		}
		if info, ok := s.nodes[n.Name]; ok {
			st.Node = info
		}
		out = append(out, st)
	}
	return out
}

func csrStatus(csr *certv1.CertificateSigningRequest) CSRStatus {
	st := CSRStatus{Name: csr.Name, State: CSRPending}
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certv1.CertificateDenied:
			return CSRStatus{Name: csr.Name, State: CSRDenied, Reason: c.Reason, Message: c.Message}
		case certv1.CertificateFailed:
			return CSRStatus{Name: csr.Name, State: CSRFailed, Reason: c.Reason, Message: c.Message}
		}
	}
	if approve.Approved(csr) {
		st.State = CSRApproved
		if len(csr.Status.Certificate) > 0 {
			st.State = CSRIssued
		}
	}
	return st
}
