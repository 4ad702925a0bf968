package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// LabelSource marks the tokens `serve` mints, one per boot: a run of
// generate never reuses them, and the next boot's request deletes them
// if they were never used.
const (
	LabelSource = "kubestrap.dev/source"
	SourceServe = "serve"
)

// Boot mints a node's token at the moment its machine asks for its
// document. Each Mint leaves the node with one unused kubestrap token, the
// one it returns: it deletes the node's earlier tokens that no kubelet
// used. It keeps no state of its own, so any number of servers may mint
// for one cluster: of two requests racing for one node, the later token
// stands and the earlier is deleted, as if they had come one after the
// other.
type Boot struct {
	Client  kubernetes.Interface
	TTL     time.Duration
	Signing bool
	// Used reports whether the token with this id was used: some client
	// asked for a certificate with it (a CSR from system:bootstrap:<id>
	// exists). A used token is left alone: it is in a running kubelet's
	// bootstrap kubeconfig, and deleting it is the approver's call, not a
	// boot's. Nil: no token counts as used.
	Used func(id string) bool
	// Now and Generate are injected so tests are repeatable; nil means
	// the wall clock and Generate.
	Now      func() time.Time
	Generate func() (string, error)
}

// Minted is what one Mint did.
type Minted struct {
	Token Token
	// Deleted are the ids of the node's earlier unused tokens Mint deleted;
	// Kept those it left because they were used.
	Deleted, Kept []string
}

// Mint creates node's token and then deletes the node's older unused
// tokens. If that fails, the new token is deleted again (or, if even that
// fails, left for the next Mint to delete as older): no caller gets a token
// while an earlier unused one stays valid beside it.
func (b *Boot) Mint(ctx context.Context, node string) (Minted, error) {
	now, generate := b.Now, b.Generate
	if now == nil {
		now = time.Now
	}
	if generate == nil {
		generate = Generate
	}
	var (
		tok     Token
		created *corev1.Secret
	)
	for range maxTries {
		value, err := generate()
		if err != nil {
			return Minted{}, fmt.Errorf("node %s: generating a token: %w", node, err)
		}
		if tok, err = New(value, node, now().Add(b.TTL).UTC().Truncate(time.Second), b.Signing); err != nil {
			return Minted{}, fmt.Errorf("node %s: %w", node, err)
		}
		secret := Secret(tok)
		secret.Labels[LabelSource] = SourceServe
		created, err = b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, secret, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Someone else's id (a retry here is the caller's, with a new
			// id): pick another.
			continue
		}
		if err != nil {
			return Minted{}, fmt.Errorf("node %s: creating Secret %s/%s: %w", node, secret.Namespace, secret.Name, err)
		}
		break
	}
	if created == nil {
		return Minted{}, fmt.Errorf("node %s: %d token ids in a row were taken", node, maxTries)
	}
	m, err := b.retire(ctx, node, created)
	if err != nil {
		// Undo, without the request's deadline: the token must not outlive
		// the failure unless the server is gone.
		uerr := b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(context.WithoutCancel(ctx), created.Name, sameUID(created))
		if uerr != nil && !apierrors.IsNotFound(uerr) {
			err = errors.Join(err, fmt.Errorf("deleting the new token %s again: %w", tok.ID, uerr))
		}
		return Minted{}, fmt.Errorf("node %s: %w", node, err)
	}
	m.Token = tok
	return m, nil
}

// retire deletes node's unused tokens older than created.
func (b *Boot) retire(ctx context.Context, node string, created *corev1.Secret) (Minted, error) {
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(node)}).String()
	list, err := b.Client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return Minted{}, fmt.Errorf("listing the node's tokens: %w", err)
	}
	var m Minted
	for _, s := range list.Items {
		if s.Type != bootstrapapi.SecretTypeBootstrapToken || s.Annotations[AnnotationNode] != node ||
			s.Name == created.Name || s.DeletionTimestamp != nil || !older(&s, created) {
			continue
		}
		id := string(s.Data[bootstrapapi.BootstrapTokenIDKey])
		if b.Used != nil && b.Used(id) {
			m.Kept = append(m.Kept, id)
			continue
		}
		err := b.Client.CoreV1().Secrets(s.Namespace).Delete(ctx, s.Name, sameUID(&s))
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Another server's request retired it first.
		case err != nil:
			return Minted{}, fmt.Errorf("deleting the earlier token %s: %w", id, err)
		default:
			m.Deleted = append(m.Deleted, id)
		}
	}
	return m, nil
}

// sameUID deletes only the Secret that was read, not one made since
// under its name.
func sameUID(s *corev1.Secret) metav1.DeleteOptions {
	if s.UID == "" {
		return metav1.DeleteOptions{}
	}
	uid := s.UID
	return metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
}

// older orders Secrets by creation, then by name: the API server's
// timestamps have whole seconds, and every server must agree which of two
// racing tokens is the later one.
func older(a, b *corev1.Secret) bool {
	if ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time; !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return strings.Compare(a.Name, b.Name) < 0
}

// Unavailable reports whether err says the API server could not be
// reached or could not answer (connection refused, timeouts, 429, 5xx):
// the caller may try again later.
func Unavailable(err error) bool { return retryable(err) }
