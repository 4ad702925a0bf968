package token

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// LabelSource marks the tokens `serve` mints, one per boot: a run of
// generate never reuses them.
const (
	LabelSource = "kubestrap.dev/source"
	SourceServe = "serve"
	// BootTokenKey is the key of the node's current token id in its boot
	// record.
	BootTokenKey = "token-id"
	bootPrefix   = "kubestrap-boot-"
)

// Boot mints a node's token at the moment its machine asks for its
// document. Each Mint leaves the node with one unused token from Boot, the
// one it returns: the one before it, if no kubelet used it, is deleted.
//
// Which token is the node's current one is kept in the node's boot record,
// a ConfigMap in Namespace, updated with the API server's optimistic
// concurrency. So Boot never reads a Secret: it needs only to create and
// delete its own tokens, which an admission policy can hold it to, where a
// list of kube-system's Secrets would hand it every secret there. And it
// keeps no state of its own: any number of servers may mint for one
// cluster, and of two requests racing for one node the one that moves the
// record last stands, as if they had come one after the other.
type Boot struct {
	Client kubernetes.Interface
	// Namespace holds the boot records.
	Namespace string
	TTL       time.Duration
	Signing   bool
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

// ErrContended means others kept getting in the way (the node's boot
// record moved, token ids taken) more times in a row than Boot tries:
// asking again later will do.
var ErrContended = errors.New("contended")

// maxRecordTries bounds the retries of a boot record that other servers
// keep moving.
const maxRecordTries = 8

// Mint creates node's token, deletes the node's current one if it is
// unused, and makes the new one current. If any of that fails, the new
// token is deleted again: the node keeps its current token, and no caller
// gets a token while another unused one of the node's stays valid beside it.
func (b *Boot) Mint(ctx context.Context, node string) (Minted, error) {
	if b.Namespace == "" {
		return Minted{}, errors.New("token.Boot: no namespace for the boot records")
	}
	tok, err := b.create(ctx, node)
	if err != nil {
		return Minted{}, err
	}
	m, err := b.advance(ctx, node, tok.ID)
	if err != nil {
		// Without the request's deadline: the token must not outlive the
		// failure unless the server is gone.
		name := bootstraputil.BootstrapTokenSecretName(tok.ID)
		if uerr := b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{}); uerr != nil && !apierrors.IsNotFound(uerr) {
			err = errors.Join(err, fmt.Errorf("deleting the new token %s again: %w", tok.ID, uerr))
		}
		return Minted{}, fmt.Errorf("node %s: %w", node, err)
	}
	m.Token = tok
	return m, nil
}

// create makes the token's Secret, with another id if one is taken.
func (b *Boot) create(ctx context.Context, node string) (Token, error) {
	now, generate := b.Now, b.Generate
	if now == nil {
		now = time.Now
	}
	if generate == nil {
		generate = Generate
	}
	for range maxTries {
		value, err := generate()
		if err != nil {
			return Token{}, fmt.Errorf("node %s: generating a token: %w", node, err)
		}
		tok, err := New(value, node, now().Add(b.TTL).UTC().Truncate(time.Second), b.Signing)
		if err != nil {
			return Token{}, fmt.Errorf("node %s: %w", node, err)
		}
		secret := Secret(tok)
		secret.Labels[LabelSource] = SourceServe
		_, err = b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, secret, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue // someone else's id
		}
		if err != nil {
			return Token{}, fmt.Errorf("node %s: creating Secret %s/%s: %w", node, secret.Namespace, secret.Name, err)
		}
		return tok, nil
	}
	return Token{}, fmt.Errorf("node %s: %d token ids in a row were taken: %w", node, maxTries, ErrContended)
}

// advance makes id the node's current token in its boot record, retiring
// the one it replaces: deleted if unused, before the record moves, so a
// failure leaves that one current. A record another server moved meanwhile
// is read again, and its token retired in turn.
func (b *Boot) advance(ctx context.Context, node, id string) (Minted, error) {
	cms := b.Client.CoreV1().ConfigMaps(b.Namespace)
	name := BootRecordName(node)
	var m Minted
	retired := map[string]bool{}
	for range maxRecordTries {
		rec, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			rec = nil
		} else if err != nil {
			return Minted{}, fmt.Errorf("reading boot record %s/%s: %w", b.Namespace, name, err)
		}
		if rec != nil {
			if prev := rec.Data[BootTokenKey]; prev != "" && prev != id && !retired[prev] {
				if err := b.retire(ctx, prev, &m); err != nil {
					return Minted{}, err
				}
				retired[prev] = true
			}
		}
		if rec == nil {
			_, err = cms.Create(ctx, bootRecord(b.Namespace, name, node, id), metav1.CreateOptions{})
		} else {
			rec = rec.DeepCopy()
			if rec.Data == nil {
				rec.Data = map[string]string{}
			}
			rec.Data[BootTokenKey] = id
			_, err = cms.Update(ctx, rec, metav1.UpdateOptions{})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another server's request moved it first
		}
		if err != nil {
			return Minted{}, fmt.Errorf("writing boot record %s/%s: %w", b.Namespace, name, err)
		}
		return m, nil
	}
	return Minted{}, fmt.Errorf("boot record %s/%s: moved by others %d times in a row: %w", b.Namespace, name, maxRecordTries, ErrContended)
}

// retire deletes the token with this id unless a kubelet used it.
func (b *Boot) retire(ctx context.Context, id string, m *Minted) error {
	if b.Used != nil && b.Used(id) {
		m.Kept = append(m.Kept, id)
		return nil
	}
	err := b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Expired and cleaned up, or retired by another server's request.
	case err != nil:
		return fmt.Errorf("deleting the earlier token %s: %w", id, err)
	default:
		m.Deleted = append(m.Deleted, id)
	}
	return nil
}

// BootRecordName is the name of the ConfigMap that says which token is
// node's current one: the name itself when it fits, else a digest.
func BootRecordName(node string) string {
	if len(bootPrefix)+len(node) <= 253 {
		return bootPrefix + node
	}
	sum := sha256.Sum256([]byte(node))
	return bootPrefix + "sha256-" + hex.EncodeToString(sum[:])[:40]
}

func bootRecord(namespace, name, node, id string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   namespace,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(node)},
			Annotations: map[string]string{AnnotationNode: node},
		},
		Data: map[string]string{BootTokenKey: id},
	}
}

// Unavailable reports whether err says the API server could not be
// reached or could not answer (connection refused, timeouts, 429, 5xx):
// the caller may try again later.
func Unavailable(err error) bool { return retryable(err) }
