package token

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
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
	bootPrefix  = "kubestrap-boot-"
)

// Boot mints a node's token at the moment its machine asks for its
// document. Each Mint leaves the node with one unused token from Boot, the
// one it returns: the one before it, if no kubelet used it, is deleted.
//
// Which token is a node's current one is kept in boot records: ConfigMaps
// in Namespace, each holding node → token id for the nodes that hash to it
// (RecordShards of them), updated with the API server's optimistic
// concurrency. So Boot never reads a Secret: it needs only to create and
// delete its own tokens, which an admission policy can hold it to, where a
// list of kube-system's Secrets would hand it every secret there. The mints
// under way at once for one record are written to it together (a group
// commit), so a storm of boots costs about one write per machine, its
// token's. And Boot keeps nothing the API server does not have: any number
// of servers may mint for one cluster, and of two requests racing for one
// node, the one recorded last stands, as if they had come one after the
// other.
//
// A Boot must not be copied after first use.
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
	// Parallel bounds the token creates in flight, the one write per mint
	// that is not shared; zero means DefaultParallel.
	Parallel int

	mu      sync.Mutex
	creates chan struct{}
	queues  map[string]*recordQueue // by record name
}

// RecordShards is how many boot records the nodes are spread over: few
// enough that a storm's mints share writes, enough that one record stays
// small (at 20,000 nodes, about 200 kB of the 1 MiB a ConfigMap may hold).
const RecordShards = 4

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
	b.mu.Lock()
	if b.creates == nil {
		b.creates = make(chan struct{}, cmp.Or(b.Parallel, DefaultParallel))
	}
	creates := b.creates
	b.mu.Unlock()
	select {
	case creates <- struct{}{}:
	case <-ctx.Done():
		return Minted{}, fmt.Errorf("node %s: waiting for a turn to create a token: %w", node, context.Cause(ctx))
	}
	tok, err := b.create(ctx, node)
	<-creates
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

// recordQueue holds the mints waiting to be written to one boot record;
// flushing says a writer is at work on it.
type recordQueue struct {
	pending  []*recordUpdate
	flushing bool
	// last is the record as this writer last wrote it: the next batch
	// starts from it and reads the record again only if someone else
	// moved it since.
	last *corev1.ConfigMap
}

// recordUpdate asks for node's current token to become id.
type recordUpdate struct {
	ctx      context.Context
	node, id string
	done     chan struct{}
	minted   Minted
	err      error
}

// advance makes id the node's current token in its boot record, retiring
// the one it replaces (deleted if unused) before the record moves, so a
// failure leaves that one current. It waits for the record's writer, which
// takes every update queued meanwhile in one write.
func (b *Boot) advance(ctx context.Context, node, id string) (Minted, error) {
	u := &recordUpdate{ctx: ctx, node: node, id: id, done: make(chan struct{})}
	name := BootRecordName(node)
	b.mu.Lock()
	if b.queues == nil {
		b.queues = map[string]*recordQueue{}
	}
	q := b.queues[name]
	if q == nil {
		q = &recordQueue{}
		b.queues[name] = q
	}
	q.pending = append(q.pending, u)
	start := !q.flushing
	q.flushing = true
	b.mu.Unlock()
	if start {
		go b.flush(name, q)
	}
	// The writer finishes what it took, whatever becomes of this request:
	// waiting for it keeps the undo of a failed update after the write.
	<-u.done
	return u.minted, u.err
}

// flush writes q's updates to record name, batch after batch, until none
// is left.
func (b *Boot) flush(name string, q *recordQueue) {
	for {
		// A moment for the mints of a storm to gather: one write for
		// them all.
		time.Sleep(recordLinger)
		b.mu.Lock()
		batch := q.pending
		q.pending = nil
		if len(batch) == 0 {
			q.flushing = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.write(name, q, batch)
		for _, u := range batch {
			close(u.done)
		}
	}
}

// write applies batch to the record, in order: each update retires the
// token before it (another server's, or an earlier one of the batch) and
// takes its place. An update whose retirement fails keeps the node's token
// as it was and fails alone; a failure to write the record fails them all.
func (b *Boot) write(name string, q *recordQueue, batch []*recordUpdate) {
	cms := b.Client.CoreV1().ConfigMaps(b.Namespace)
	// What this batch did to each token it retired, over the retries of
	// a moved record.
	retired := map[string]retirement{}
	var live []*recordUpdate
	for _, u := range batch {
		if u.ctx.Err() == nil {
			live = append(live, u)
			continue
		}
		u.err = context.Cause(u.ctx)
	}
	if len(live) == 0 {
		return
	}
	// The API calls outlive any one request: they serve the whole batch.
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	fail := func(err error) {
		for _, u := range live {
			if u.err == nil {
				u.err = err
			}
		}
	}
	for range maxRecordTries {
		rec, err := q.last, error(nil)
		if rec == nil {
			rec, err = cms.Get(ctx, name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) {
			rec = nil
		} else if err != nil {
			fail(fmt.Errorf("reading boot record %s/%s: %w", b.Namespace, name, err))
			return
		}
		current := map[string]string{}
		if rec != nil {
			maps.Copy(current, rec.Data)
		}
		for _, u := range live {
			// u.minted keeps what earlier tries did: a token deleted
			// before the record turned out moved is gone all the same.
			u.err = nil
			prev := current[u.node]
			if prev == "" || prev == u.id {
				current[u.node] = u.id
				continue
			}
			r, ok := retired[prev]
			if !ok {
				var err error
				if r, err = b.retire(ctx, prev); err != nil {
					u.err = err
					continue
				}
				retired[prev] = r
			}
			u.minted.note(prev, r)
			current[u.node] = u.id
		}
		var written *corev1.ConfigMap
		if rec == nil {
			written, err = cms.Create(ctx, bootRecord(b.Namespace, name, current), metav1.CreateOptions{})
		} else {
			rec = rec.DeepCopy()
			rec.Data = current
			written, err = cms.Update(ctx, rec, metav1.UpdateOptions{})
		}
		q.last = nil
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || rec != nil && apierrors.IsNotFound(err) {
			continue // another server moved it first (or someone deleted it): read it again
		}
		if err != nil {
			fail(fmt.Errorf("writing boot record %s/%s: %w", b.Namespace, name, err))
			return
		}
		q.last = written
		return
	}
	fail(fmt.Errorf("boot record %s/%s: moved by others %d times in a row: %w", b.Namespace, name, maxRecordTries, ErrContended))
}

// recordLinger is how long a record's writer waits for more updates
// before it writes: a boot waits this much longer, a storm of boots makes
// that many times fewer writes.
const recordLinger = 20 * time.Millisecond

// batchTimeout bounds one batch's API calls.
const batchTimeout = 30 * time.Second

// retirement is what became of a token retired.
type retirement int

const (
	// retiredGone: there was none to delete (expired and cleaned up, or
	// retired by another server's request).
	retiredGone retirement = iota
	retiredDeleted
	retiredKept // used
)

// retire deletes the token with this id unless a kubelet used it.
func (b *Boot) retire(ctx context.Context, id string) (retirement, error) {
	if b.Used != nil && b.Used(id) {
		return retiredKept, nil
	}
	err := b.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return retiredGone, nil
	case err != nil:
		return 0, fmt.Errorf("deleting the earlier token %s: %w", id, err)
	}
	return retiredDeleted, nil
}

// note adds the token retired to m's Deleted or Kept, once.
func (m *Minted) note(id string, r retirement) {
	ids := &m.Deleted
	switch r {
	case retiredGone:
		return
	case retiredKept:
		ids = &m.Kept
	}
	if !slices.Contains(*ids, id) {
		*ids = append(*ids, id)
	}
}

// BootRecordName is the name of the boot record that holds node's
// current token id.
func BootRecordName(node string) string {
	sum := sha256.Sum256([]byte(node))
	return fmt.Sprintf("%s%02d", bootPrefix, binary.BigEndian.Uint32(sum[:4])%RecordShards)
}

func bootRecord(namespace, name string, current map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: namespace,
			Labels:    map[string]string{LabelManagedBy: ManagedBy},
		},
		Data: current,
	}
}

// Unavailable reports whether err says the API server could not be
// reached or could not answer (connection refused, timeouts, 429, 5xx):
// the caller may try again later.
func Unavailable(err error) bool { return retryable(err) }
