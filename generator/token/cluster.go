package token

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// DefaultParallel is how many API calls Cluster has in flight by default.
const DefaultParallel = 16

// maxAttempts bounds the retries of one API call on a retryable error.
const maxAttempts = 6

// Cluster obtains tokens from a live cluster for one run: it reuses a node's
// token while it stays valid long enough and its run committed, and
// otherwise creates the Secret that `kubeadm token create --groups
// system:bootstrappers:<node>` would.
type Cluster struct {
	Client  kubernetes.Interface
	TTL     time.Duration
	Signing bool
	// ReuseMargin: a node's existing token is reused only if it is still
	// valid this long from now (so the node can boot before it expires).
	// Zero reuses any valid token: most callers want DefaultReuseMargin(TTL),
	// or a margin of the user's checked with CheckReuseMargin.
	ReuseMargin time.Duration
	// Rotate mints new tokens for every node and, at Commit, deletes the
	// committed ones they replace.
	Rotate bool
	// Parallel bounds the API calls in flight.
	Parallel int
	// Now, Generate and Backoff are injected so tests are repeatable; nil
	// means the wall clock, Generate, and 100ms doubling.
	Now      func() time.Time
	Generate func() (string, error)
	Backoff  func(attempt int) time.Duration
	// Progress, if set, is called after each node's token is obtained.
	Progress func(done int)

	mu  sync.Mutex
	run *Obtained // what the last successful Obtain did
}

// Obtained is what one run did in the cluster.
type Obtained struct {
	// Tokens holds one token per node, in the order asked for.
	Tokens []Token
	// Created and Reused count what the run did.
	Created, Reused int
	// Run names the run: its tokens carry it as LabelRun.
	Run string

	client  kubernetes.Interface
	backoff func(int) time.Duration
	now     func() time.Time
	created []string // Secret names this run created
	// replaced are committed Secrets that rotated tokens replace.
	replaced []string
	// uncertain are Secrets whose create failed without a clear "no" (the
	// connection broke, the server went away): they may exist.
	uncertain []*corev1.Secret
	// orphanMarkers are run markers with no token left, tidied at Commit.
	orphanMarkers []string
}

// NodeError says which nodes failed and why.
type NodeError struct {
	Nodes []string
	// Last is the last real error seen (not the cancellation it caused).
	Last error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("no token for %d node(s) (%s): %v", len(e.Nodes), strings.Join(e.Nodes, ", "), e.Last)
}

func (e *NodeError) Unwrap() error { return e.Last }

// Obtain gets one token per node (see Provider).
func (c *Cluster) Obtain(ctx context.Context, nodes []string, ready func(int, Token)) (Summary, error) {
	o, err := c.obtain(ctx, nodes, ready)
	if err != nil {
		return Summary{}, err
	}
	c.mu.Lock()
	c.run = o
	c.mu.Unlock()
	return Summary{Created: o.Created, Reused: o.Reused}, nil
}

// Commit records that the run's documents are written (see Obtained.Commit).
func (c *Cluster) Commit(ctx context.Context) error {
	c.mu.Lock()
	o := c.run
	c.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.Commit(ctx)
}

// Rollback deletes what the run created (see Obtained.Rollback).
func (c *Cluster) Rollback(ctx context.Context) error {
	c.mu.Lock()
	o := c.run
	c.run = nil
	c.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.Rollback(ctx)
}

// obtain gets one token per node, all or nothing: if any node fails, the
// Secrets this run created are deleted before it returns.
func (c *Cluster) obtain(ctx context.Context, nodes []string, ready func(int, Token)) (*Obtained, error) {
	now, generate, backoff := c.Now, c.Generate, c.Backoff
	if now == nil {
		now = time.Now
	}
	if generate == nil {
		generate = Generate
	}
	if backoff == nil {
		backoff = func(attempt int) time.Duration { return 100 * time.Millisecond << attempt }
	}
	margin := c.ReuseMargin
	run, err := newRunID()
	if err != nil {
		return nil, err
	}
	parallel := max(c.Parallel, 1)
	o := &Obtained{client: c.Client, backoff: backoff, now: now, Run: run, Tokens: make([]Token, len(nodes))}

	existing, err := c.existing(ctx, backoff)
	if err != nil {
		return nil, fmt.Errorf("listing bootstrap tokens: %w", err)
	}
	o.orphanMarkers = existing.orphanMarkers()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		failed  []string
		last    error
		done    int
		ids     = map[string]bool{}
		sem     = make(chan struct{}, parallel)
		wg      sync.WaitGroup
		reserve = func(id string) bool {
			mu.Lock()
			defer mu.Unlock()
			if ids[id] || existing.ids[id] {
				return false
			}
			ids[id] = true
			return true
		}
	)
	for i, node := range nodes {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			have := existing.committed(node)
			tok, reused, name, maybe, err := c.one(ctx, node, run, have, margin, now, generate, backoff, reserve)
			mu.Lock()
			defer mu.Unlock()
			if maybe != nil {
				o.uncertain = append(o.uncertain, maybe)
			}
			if err != nil {
				// Nodes cancelled because another failed are not failures.
				if !(errors.Is(err, context.Canceled) && last != nil) {
					failed = append(failed, node)
					last = err
				}
				cancel()
				return
			}
			o.Tokens[i] = tok
			if ready != nil {
				ready(i, tok)
			}
			if reused {
				o.Reused++
			} else {
				o.Created++
				o.created = append(o.created, name)
				if c.Rotate {
					for _, s := range have {
						o.replaced = append(o.replaced, s.Name)
					}
				}
			}
			done++
			if c.Progress != nil {
				c.Progress(done)
			}
		}()
	}
	wg.Wait()
	if last == nil && ctx.Err() != nil {
		last = context.Cause(ctx)
		failed = []string{"(interrupted)"}
	}
	if last != nil {
		slices.Sort(failed)
		if rerr := o.Rollback(context.WithoutCancel(ctx)); rerr != nil {
			last = errors.Join(last, rerr)
		}
		return nil, &NodeError{Nodes: failed, Last: last}
	}
	return o, nil
}

// newRunID is ten random characters from the token alphabet, enough that
// two runs never share one.
func newRunID() (string, error) {
	a, err := Generate()
	if err != nil {
		return "", fmt.Errorf("generating a run id: %w", err)
	}
	id, secret, _ := strings.Cut(a, ".")
	return id + secret[:4], nil
}

// one obtains node's token: an existing one still valid past the margin, or
// a new one. It returns the new Secret's name when it created one.
// A create that fails without a clear answer from the server may still have
// happened; the Secret is returned as maybe, for the rollback to look for.
func (c *Cluster) one(ctx context.Context, node, run string, have []corev1.Secret, margin time.Duration, now func() time.Time, generate func() (string, error),
	backoff func(int) time.Duration, reserve func(string) bool) (tok Token, reused bool, name string, maybe *corev1.Secret, err error) {
	if !c.Rotate {
		if tok, ok := c.reusable(node, have, now(), margin); ok {
			return tok, true, "", nil, nil
		}
	}
	for range maxTries {
		value, err := generate()
		if err != nil {
			return Token{}, false, "", nil, fmt.Errorf("node %s: generating a token: %w", node, err)
		}
		tok, err := New(value, node, now().Add(c.TTL).UTC().Truncate(time.Second), c.Signing)
		if err != nil {
			return Token{}, false, "", nil, fmt.Errorf("node %s: %w", node, err)
		}
		tok.Run = run
		if !reserve(tok.ID) {
			continue
		}
		secret := Secret(tok)
		err = retry(ctx, backoff, func(ctx context.Context) error {
			_, err := c.Client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, secret, metav1.CreateOptions{})
			return err
		})
		if apierrors.IsAlreadyExists(err) {
			// A retried create whose first attempt reached the server finds
			// its own Secret: that one is ours, and must be rolled back and
			// used like any other. An id someone else holds is never
			// overwritten: pick another.
			ours, err := c.isOurs(ctx, secret, backoff)
			if err != nil {
				return Token{}, false, "", secret, fmt.Errorf("node %s: reading back Secret %s/%s: %w", node, secret.Namespace, secret.Name, err)
			}
			if ours {
				return tok, false, secret.Name, nil, nil
			}
			continue
		}
		if err != nil {
			if !refused(err) {
				maybe = secret
			}
			return Token{}, false, "", maybe, fmt.Errorf("node %s: creating Secret %s/%s: %w", node, secret.Namespace, secret.Name, err)
		}
		return tok, false, secret.Name, nil, nil
	}
	return Token{}, false, "", nil, fmt.Errorf("node %s: %d token ids in a row were taken", node, maxTries)
}

// refused reports whether the server answered err with a clear "no" (a 4xx
// other than 408 and 429), so the request certainly changed nothing.
func refused(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := status.Status().Code
	return code >= 400 && code < 500 && code != 408 && code != 429
}

// isOurs reports whether the existing Secret named like want holds want's
// token secret.
func (c *Cluster) isOurs(ctx context.Context, want *corev1.Secret, backoff func(int) time.Duration) (bool, error) {
	var have *corev1.Secret
	err := retry(ctx, backoff, func(ctx context.Context) error {
		var err error
		have, err = c.Client.CoreV1().Secrets(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(have.Data[bootstrapapi.BootstrapTokenSecretKey], want.Data[bootstrapapi.BootstrapTokenSecretKey]) == 1, nil
}

// reusable returns the node's committed token that stays valid longest, if
// it is valid past now+margin and has the usages asked for.
func (c *Cluster) reusable(node string, have []corev1.Secret, now time.Time, margin time.Duration) (Token, bool) {
	var best Token
	found := false
	for _, s := range have {
		d := s.Data
		exp, err := time.Parse(time.RFC3339, string(d[bootstrapapi.BootstrapTokenExpirationKey]))
		if err != nil || !exp.After(now.Add(margin)) {
			continue
		}
		if string(d[bootstrapapi.BootstrapTokenUsageAuthentication]) != "true" ||
			(string(d[bootstrapapi.BootstrapTokenUsageSigningKey]) == "true") != c.Signing ||
			string(d[bootstrapapi.BootstrapTokenExtraGroupsKey]) != Group(node) {
			continue
		}
		tok, err := New(bootstraputil.TokenFromIDAndSecret(string(d[bootstrapapi.BootstrapTokenIDKey]), string(d[bootstrapapi.BootstrapTokenSecretKey])), node, exp, c.Signing)
		if err != nil {
			continue
		}
		tok.Run = s.Labels[LabelRun]
		if !found || tok.Expires.After(best.Expires) {
			best, found = tok, true
		}
	}
	return best, found
}

type existingTokens struct {
	byNode map[string][]corev1.Secret
	ids    map[string]bool
	// markers maps a committed run to its marker's name; runs holds every
	// run that still has a token.
	markers map[string]string
	runs    map[string]bool
}

// committed returns node's tokens that a run committed (or that no run
// created: offline ones applied by hand, and those of kubestrap before run
// markers). A token of a run that has not committed is in documents that
// may never be written: its run may still roll it back.
func (ex existingTokens) committed(node string) []corev1.Secret {
	var out []corev1.Secret
	for _, s := range ex.byNode[node] {
		if s.Labels[LabelSource] == SourceServe {
			// In the document of one boot, which the next boot's request
			// deletes: never another run's to hand out.
			continue
		}
		run := s.Labels[LabelRun]
		if _, ok := ex.markers[run]; run == "" || ok {
			out = append(out, s)
		}
	}
	return out
}

// orphanMarkers are markers whose tokens are all gone (expired and
// cleaned up, rotated out): they say nothing any more. A run writes its
// marker after its last token, so a marker with no tokens cannot belong to
// a run still in progress.
func (ex existingTokens) orphanMarkers() []string {
	var out []string
	for run, name := range ex.markers {
		if !ex.runs[run] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// existing lists the tool's bootstrap tokens and run markers once, rather
// than once per node.
func (c *Cluster) existing(ctx context.Context, backoff func(int) time.Duration) (existingTokens, error) {
	ex := existingTokens{byNode: map[string][]corev1.Secret{}, ids: map[string]bool{}, markers: map[string]string{}, runs: map[string]bool{}}
	sel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy}).String()
	var list *corev1.SecretList
	err := retry(ctx, backoff, func(ctx context.Context) error {
		var err error
		list, err = c.Client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: sel})
		return err
	})
	if err != nil {
		return ex, err
	}
	for _, s := range list.Items {
		if s.DeletionTimestamp != nil {
			continue
		}
		switch s.Type {
		case SecretTypeRunMarker:
			if run := s.Labels[LabelRun]; run != "" {
				ex.markers[run] = s.Name
			}
		case bootstrapapi.SecretTypeBootstrapToken:
			ex.ids[string(s.Data[bootstrapapi.BootstrapTokenIDKey])] = true
			node := s.Annotations[AnnotationNode]
			ex.byNode[node] = append(ex.byNode[node], s)
			ex.runs[s.Labels[LabelRun]] = true
		}
	}
	return ex, nil
}

// Rollback deletes the Secrets this run created, and those it may have
// created (a create cut off mid-way) if they hold this run's token.
func (o *Obtained) Rollback(ctx context.Context) error {
	// Every token the run created carries its run label: one selector
	// finds what a failed rollback leaves, however many there are.
	hint := fmt.Sprintf("kubectl -n %s delete secret -l %s=%s", metav1.NamespaceSystem, LabelRun, o.Run)
	return deleteSecrets(ctx, o.client, o.backoff, o.created, o.uncertain, hint)
}

// Commit marks the run committed, so later runs may reuse its tokens, then
// deletes the committed tokens that rotated ones replace, and markers left
// with no tokens. Call it once the documents holding the tokens are
// written. If the marker cannot be created the documents still work; a
// later run just mints new tokens instead of reusing these.
func (o *Obtained) Commit(ctx context.Context) error {
	var errs []error
	if o.Created > 0 {
		marker := RunMarker(o.Run, o.now())
		err := retry(ctx, o.backoff, func(ctx context.Context) error {
			_, err := o.client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, marker, metav1.CreateOptions{})
			return err
		})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("marking run %s committed (its tokens work, but a re-run will mint new ones instead of reusing them): %w", o.Run, err))
		}
	}
	hint := fmt.Sprintf("kubectl -n %s delete secret NAME...", metav1.NamespaceSystem)
	if err := deleteSecrets(ctx, o.client, o.backoff, slices.Concat(o.replaced, o.orphanMarkers), nil, hint); err != nil {
		errs = append(errs, fmt.Errorf("deleting replaced tokens: %w", err))
	}
	return errors.Join(errs...)
}

// deleteSecrets deletes names, and each of maybe that exists and holds its
// own token. It stops trying once the server is unreachable, and then says
// in one error which Secrets are left (the first few by name) and how to
// delete them: hint, a command.
func deleteSecrets(ctx context.Context, client kubernetes.Interface, backoff func(int) time.Duration, names []string, maybe []*corev1.Secret, hint string) error {
	// Cleanup must not hang on a dead API server, nor stop at a cancelled ctx.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	api := client.CoreV1().Secrets(metav1.NamespaceSystem)
	var (
		left []string
		last error
	)
	del := func(name string, check *corev1.Secret) {
		if last != nil && !isAPIError(last) {
			left = append(left, name) // unreachable: do not wait on each
			return
		}
		err := retry(ctx, backoff, func(ctx context.Context) error {
			if check != nil {
				have, err := api.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if subtle.ConstantTimeCompare(have.Data[bootstrapapi.BootstrapTokenSecretKey], check.Data[bootstrapapi.BootstrapTokenSecretKey]) != 1 {
					return nil // someone else's: never ours to delete
				}
			}
			return api.Delete(ctx, name, metav1.DeleteOptions{})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			left, last = append(left, name), err
		}
	}
	for _, name := range names {
		del(name, nil)
	}
	for _, s := range maybe {
		del(s.Name, s)
	}
	if last == nil {
		return nil
	}
	const shown = 10
	named := strings.Join(left[:min(len(left), shown)], ", ")
	if len(left) > shown {
		named += fmt.Sprintf(" and %d more", len(left)-shown)
	}
	return fmt.Errorf("%d Secret(s) may be left in %s, valid until they expire (delete them with: %s): %s: %w",
		len(left), metav1.NamespaceSystem, hint, named, last)
}

// isAPIError reports whether err is an answer from the API server (as
// opposed to no answer at all).
func isAPIError(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status)
}

// retry calls f until it succeeds, fails for good, or maxAttempts retryable
// failures (429, 5xx, timeouts, refused connections) have happened.
func retry(ctx context.Context, backoff func(int) time.Duration, f func(context.Context) error) error {
	var err error
	for attempt := range maxAttempts {
		if err = f(ctx); err == nil || !retryable(err) {
			return err
		}
		delay := backoff(attempt)
		if d, ok := apierrors.SuggestsClientDelay(err); ok && time.Duration(d)*time.Second > delay {
			delay = time.Duration(d) * time.Second
		}
		select {
		case <-ctx.Done():
			// Keep the real error: "context canceled" alone says nothing.
			return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
	return err
}

func retryable(err error) bool {
	if apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Code >= 500 {
		return true
	}
	// Transport failures: refused or reset connections, client timeouts, a
	// reply cut off mid-way.
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Registered returns those of nodes that already have a Node object: a
// second machine booted with that name would take the Node over.
func Registered(ctx context.Context, client kubernetes.Interface, nodes []string) ([]string, error) {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range nodes {
		want[n] = true
	}
	var found []string
	for _, n := range list.Items {
		if want[n.Name] {
			found = append(found, n.Name)
		}
	}
	slices.Sort(found)
	return found, nil
}
