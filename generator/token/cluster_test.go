package token

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// seq is a repeatable token generator: id i is fmt("id%04d").
func seq() func() (string, error) {
	var n atomic.Int64
	return func() (string, error) {
		i := n.Add(1)
		return fmt.Sprintf("id%04d.%016d", i, i), nil
	}
}

func provider(client *fake.Clientset) *Cluster {
	return &Cluster{
		Client: client, TTL: 24 * time.Hour, ReuseMargin: time.Hour, Parallel: 4,
		Now: func() time.Time { return t0 }, Generate: seq(),
		Backoff: func(int) time.Duration { return 0 },
	}
}

func secrets(t *testing.T, client *fake.Clientset) map[string]corev1.Secret {
	t.Helper()
	list, err := client.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		out[s.Name] = s
	}
	return out
}

func TestObtainCreatesAndReuses(t *testing.T) {
	client := fake.NewClientset()
	p := provider(client)
	nodes := []string{"n1", "n2", "n3.rack.example.com"}
	got, err := p.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Created != 3 || got.Reused != 0 {
		t.Errorf("created %d reused %d", got.Created, got.Reused)
	}
	have := secrets(t, client)
	if len(have) != 3 {
		t.Fatalf("%d Secrets, want 3", len(have))
	}
	for i, tok := range got.Tokens {
		if tok.Node != nodes[i] {
			t.Errorf("token %d is for %s, want %s (order kept)", i, tok.Node, nodes[i])
		}
		s, ok := have["bootstrap-token-"+tok.ID]
		if !ok || string(s.Data["token-secret"]) != tok.secret || string(s.Data["auth-extra-groups"]) != Group(nodes[i]) ||
			s.Labels[LabelManagedBy] != ManagedBy || s.Type != "bootstrap.kubernetes.io/token" {
			t.Errorf("Secret for %s: %+v", nodes[i], s)
		}
	}

	// Once the run committed, a re-run an hour later reuses every token:
	// same values, no new Secrets.
	if err := got.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Now = func() time.Time { return t0.Add(time.Hour) }
	again, err := p.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created != 0 || again.Reused != 3 || len(secrets(t, client)) != 4 {
		t.Errorf("re-run created %d reused %d", again.Created, again.Reused)
	}
	for i := range nodes {
		if again.Tokens[i].Value() != got.Tokens[i].Value() {
			t.Errorf("%s: token changed on re-run", nodes[i])
		}
	}

	// Within the margin of expiry, a token is not handed to a node that may
	// boot later: a new one is minted, the old one left to expire.
	p.Now = func() time.Time { return t0.Add(23*time.Hour + 30*time.Minute) }
	late, err := p.obtain(context.Background(), nodes[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if late.Created != 1 || late.Tokens[0].ID == got.Tokens[0].ID || len(secrets(t, client)) != 5 {
		t.Errorf("near expiry: created %d, id %s", late.Created, late.Tokens[0].ID)
	}
}

func TestObtainRotate(t *testing.T) {
	client := fake.NewClientset()
	p := provider(client)
	first, err := p.obtain(context.Background(), []string{"n1", "n2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Rotate = true
	rotated, err := p.obtain(context.Background(), []string{"n1", "n2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Created != 2 || len(secrets(t, client)) != 5 {
		t.Fatalf("rotate created %d, %d Secrets before Commit", rotated.Created, len(secrets(t, client)))
	}
	if err := rotated.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	have := secrets(t, client)
	for _, old := range first.Tokens {
		if _, ok := have["bootstrap-token-"+old.ID]; ok {
			t.Errorf("replaced token %s still exists", old.ID)
		}
	}
	for _, tok := range rotated.Tokens {
		if _, ok := have["bootstrap-token-"+tok.ID]; !ok {
			t.Errorf("new token %s missing", tok.ID)
		}
	}
}

// An id that already exists (someone else's token) is never overwritten.
func TestObtainNeverOverwrites(t *testing.T) {
	theirs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-id0001", Namespace: "kube-system"},
		Type: "bootstrap.kubernetes.io/token", Data: map[string][]byte{"token-secret": []byte("theirs")}}
	client := fake.NewClientset(theirs)
	var updates atomic.Int32
	client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		updates.Add(1)
		return false, nil, nil
	})
	got, err := provider(client).obtain(context.Background(), []string{"n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens[0].ID == "id0001" || updates.Load() != 0 {
		t.Errorf("took id %s with %d updates", got.Tokens[0].ID, updates.Load())
	}
	if s := secrets(t, client)["bootstrap-token-id0001"]; string(s.Data["token-secret"]) != "theirs" {
		t.Error("existing Secret was modified")
	}
}

// A create that reached the server but whose reply was lost is retried and
// meets AlreadyExists: that Secret is the run's own, used and rolled back.
func TestObtainLostReply(t *testing.T) {
	client := fake.NewClientset()
	var calls atomic.Int32
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) == 1 {
			// Store it, then fail as a lost reply would.
			obj := a.(k8stesting.CreateAction).GetObject()
			if err := client.Tracker().Create(a.GetResource(), obj, a.GetNamespace()); err != nil {
				t.Fatal(err)
			}
			return true, nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
		}
		return false, nil, nil
	})
	got, err := provider(client).obtain(context.Background(), []string{"n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens[0].ID != "id0001" || len(secrets(t, client)) != 1 {
		t.Fatalf("took id %s, %d Secrets; want the first id and one Secret", got.Tokens[0].ID, len(secrets(t, client)))
	}
	if err := got.Rollback(context.Background()); err != nil || len(secrets(t, client)) != 0 {
		t.Errorf("rollback left %d Secrets: %v", len(secrets(t, client)), err)
	}
}

func TestObtainRetries(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"429", apierrors.NewTooManyRequests("slow down", 0)},
		{"500", apierrors.NewInternalError(errors.New("etcd hiccup"))},
		{"503", apierrors.NewServiceUnavailable("restarting")},
		{"timeout", apierrors.NewServerTimeout(schema.GroupResource{Resource: "secrets"}, "create", 0)},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			var calls atomic.Int32
			client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				if calls.Add(1) <= 2 {
					return true, nil, tt.err
				}
				return false, nil, nil
			})
			got, err := provider(client).obtain(context.Background(), []string{"n1"}, nil)
			if err != nil {
				t.Fatalf("not retried: %v", err)
			}
			if calls.Load() != 3 || got.Created != 1 {
				t.Errorf("calls %d created %d", calls.Load(), got.Created)
			}
		})
	}
}

// One node failing for good fails the run, names the node and the real
// error, and deletes what the run created.
func TestObtainAllOrNothing(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret)
		if s.Annotations[AnnotationNode] == "n3" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, s.Name, errors.New("RBAC says no"))
		}
		return false, nil, nil
	})
	p := provider(client)
	p.Parallel = 1
	_, err := p.obtain(context.Background(), []string{"n1", "n2", "n3", "n4"}, nil)
	var ne *NodeError
	if !errors.As(err, &ne) {
		t.Fatalf("err = %v", err)
	}
	if strings.Join(ne.Nodes, ",") != "n3" || !strings.Contains(err.Error(), "RBAC says no") {
		t.Errorf("err = %v", err)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("the real error is not kept: %v", err)
	}
	if left := secrets(t, client); len(left) != 0 {
		t.Errorf("%d Secrets left after a failed run", len(left))
	}
	if strings.Contains(err.Error(), "000000000000000") {
		t.Errorf("error shows a token secret: %v", err)
	}
}

// An unreachable API server fails within the retry bound with the transport
// error, not a bare timeout.
func TestObtainUnreachable(t *testing.T) {
	client := fake.NewClientset()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, refused })
	start := time.Now()
	_, err := provider(client).obtain(context.Background(), []string{"n1", "n2"}, nil)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// The fake clientset serialises its reactors, so concurrency is measured
// against a real HTTP server speaking the Secrets API.
func TestObtainBoundsConcurrency(t *testing.T) {
	var inFlight, peak, creates atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			fmt.Fprint(w, `{"kind":"SecretList","apiVersion":"v1","items":[]}`)
			return
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		creates.Add(1)
		time.Sleep(5 * time.Millisecond)
		w.WriteHeader(http.StatusCreated)
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}))
	defer srv.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, QPS: 1000, Burst: 1000, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	p := provider(nil)
	p.Client = client
	p.Parallel = 3
	var mu sync.Mutex
	progress := 0
	p.Progress = func(done int) { mu.Lock(); progress = max(progress, done); mu.Unlock() }
	nodes := make([]string, 30)
	for i := range nodes {
		nodes[i] = fmt.Sprint("n", i)
	}
	if _, err := p.Obtain(context.Background(), nodes, nil); err != nil {
		t.Fatal(err)
	}
	if peak.Load() != 3 || creates.Load() != 30 {
		t.Errorf("peak concurrency %d over %d creates, want 3 over 30", peak.Load(), creates.Load())
	}
	if progress != 30 {
		t.Errorf("progress reached %d", progress)
	}
}

func TestObtainCancelled(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cancel() // Ctrl-C during the run
		return false, nil, nil
	})
	p := provider(client)
	p.Parallel = 1
	_, err := p.obtain(ctx, []string{"n1", "n2", "n3"}, nil)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if left := secrets(t, client); len(left) != 0 {
		t.Errorf("%d Secrets left after cancel", len(left))
	}
}

func TestRegistered(t *testing.T) {
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other"}})
	got, err := Registered(context.Background(), client, []string{"n1", "n2"})
	if err != nil || len(got) != 1 || got[0] != "n2" {
		t.Errorf("Registered = %v, %v", got, err)
	}
}

// A create whose outcome is unknown (stored, but every reply lost) fails the
// run; the rollback still finds and deletes the Secret, because it holds
// this run's token.
func TestObtainRollsBackUncertainCreates(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.CreateAction).GetObject()
		client.Tracker().Create(a.GetResource(), obj, a.GetNamespace())
		return true, nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	})
	p := provider(client)
	p.Parallel = 1
	_, err := p.obtain(context.Background(), []string{"n1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("err = %v", err)
	}
	// Every Secret left would be a valid token nobody knows about.
	if left := secrets(t, client); len(left) != 0 {
		t.Errorf("%d Secrets left after the rollback: %v", len(left), err)
	}
}

// With the server gone, the rollback says in one error which Secrets are
// left instead of waiting on each.
func TestRollbackUnreachable(t *testing.T) {
	client := fake.NewClientset()
	got, err := provider(client).obtain(context.Background(), []string{"n1", "n2", "n3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var deletes atomic.Int32
	client.PrependReactor("delete", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		deletes.Add(1)
		return true, nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	})
	err = got.Rollback(context.Background())
	if err == nil || !strings.Contains(err.Error(), "3 Secret(s) may be left in kube-system, valid until they expire (delete them with: kubectl -n kube-system delete secret -l kubestrap.dev/run="+got.Run+"): bootstrap-token-") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if n := deletes.Load(); n != maxAttempts {
		t.Errorf("%d deletes tried, want %d (one Secret's retries, then no more waiting)", n, maxAttempts)
	}
}

// Run X creates tokens; run Y, on the same nodes, starts while X is still
// creating; X then fails and rolls back. Y's documents must not hold X's
// tokens: a token is only reused once its run has committed.
func TestConcurrentRunsReuseOnlyCommitted(t *testing.T) {
	client := fake.NewClientset()
	yDone := make(chan struct{})
	var xCreates atomic.Int32
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// X's token ids come from seq ("id0001", ...), Y's start with "yy".
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret)
		if !strings.HasPrefix(s.Name, "bootstrap-token-id") {
			return false, nil, nil
		}
		// X's third create fails for good.
		if xCreates.Add(1) == 3 {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, s.Name, errors.New("quota"))
		}
		return false, nil, nil
	})
	nodes := []string{"n1", "n2", "n3"}
	x := provider(client)
	x.Parallel = 1
	xReady := make(chan struct{})
	var xErr error
	xFinished := make(chan struct{})
	go func() {
		defer close(xFinished)
		// X stops after its second token (the fake clientset runs one
		// reactor at a time, so X cannot wait inside one) until Y is done.
		_, xErr = x.obtain(context.Background(), nodes, func(i int, _ Token) {
			if i == 1 {
				close(xReady)
				<-yDone
			}
		})
	}()
	<-xReady // X holds uncommitted tokens for n1 and n2

	y := provider(client)
	var yN atomic.Int64
	y.Generate = func() (string, error) { return fmt.Sprintf("yy%04d.%016d", yN.Add(1), 7), nil }
	got, err := y.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reused != 0 || got.Created != 3 {
		t.Errorf("Y reused %d and created %d tokens; X's were not committed, so Y must create all 3", got.Reused, got.Created)
	}
	if err := got.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(yDone)
	<-xFinished
	if xErr == nil {
		t.Fatal("X did not fail")
	}
	have := secrets(t, client)
	for _, tok := range got.Tokens {
		if _, ok := have["bootstrap-token-"+tok.ID]; !ok {
			t.Errorf("%s: Y's token %s was deleted by X's rollback", tok.Node, tok.ID)
		}
	}
	for name := range have {
		if strings.HasPrefix(name, "bootstrap-token-id") {
			t.Errorf("X's %s survived its rollback", name)
		}
	}
	// A later run reuses Y's committed tokens.
	z := provider(client)
	again, err := z.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range again.Tokens {
		if again.Reused != 3 || tok.Value() != got.Tokens[i].Value() {
			t.Errorf("%s: Z did not reuse Y's committed token", tok.Node)
		}
	}
}

// Tokens without a run label (minted offline and applied by hand, or made
// before run markers existed) count as committed.
func TestReusesTokensWithoutRun(t *testing.T) {
	tok, err := New("abcdef.0123456789abcdef", "n1", t0.Add(24*time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(Secret(tok))
	got, err := provider(client).obtain(context.Background(), []string{"n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reused != 1 || got.Tokens[0].Value() != tok.Value() {
		t.Errorf("reused %d, token %s", got.Reused, got.Tokens[0])
	}
}

// With a 2h TTL, a re-run five minutes later reuses the token: the default
// margin follows the TTL (half of it, at most 2h). A fixed 2h margin would
// mint a new token on every run and leave the old ones valid.
func TestDefaultReuseMargin(t *testing.T) {
	for _, tt := range []struct {
		ttl, want time.Duration
	}{
		{2 * time.Hour, time.Hour},
		{24 * time.Hour, 2 * time.Hour},
		{10 * time.Minute, 5 * time.Minute},
	} {
		if got := DefaultReuseMargin(tt.ttl); got != tt.want {
			t.Errorf("DefaultReuseMargin(%v) = %v, want %v", tt.ttl, got, tt.want)
		}
		if err := CheckReuseMargin(DefaultReuseMargin(tt.ttl), tt.ttl); err != nil {
			t.Errorf("the default margin for %v is refused: %v", tt.ttl, err)
		}
	}
	for _, bad := range []time.Duration{2 * time.Hour, 3 * time.Hour, -time.Second} {
		if err := CheckReuseMargin(bad, 2*time.Hour); err == nil {
			t.Errorf("margin %v accepted for a 2h TTL", bad)
		}
	}

	client := fake.NewClientset()
	p := provider(client)
	p.TTL = 2 * time.Hour
	p.ReuseMargin = DefaultReuseMargin(p.TTL)
	first, err := p.obtain(context.Background(), []string{"n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Now = func() time.Time { return t0.Add(5 * time.Minute) }
	again, err := p.obtain(context.Background(), []string{"n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Reused != 1 || again.Tokens[0].ID != first.Tokens[0].ID {
		t.Errorf("five minutes into a 2h token, a re-run created a new one (reused %d)", again.Reused)
	}
}

// A commit writes one marker, whatever the node count; a marker whose
// tokens are all gone is deleted by the next commit.
func TestCommitMarker(t *testing.T) {
	client := fake.NewClientset()
	var creates atomic.Int32
	client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		creates.Add(1)
		return false, nil, nil
	})
	p := provider(client)
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	first, err := p.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := creates.Load()
	if err := first.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := creates.Load() - before; n != 1 {
		t.Errorf("commit made %d API creates, want 1", n)
	}
	marker, ok := secrets(t, client)["kubestrap-run-"+first.Run]
	if !ok || marker.Type != SecretTypeRunMarker || marker.Annotations[AnnotationCommitted] != t0.Format(time.RFC3339) || len(marker.Data) != 0 {
		t.Fatalf("marker %+v", marker)
	}
	// Rotate every token out: first's marker now marks nothing, and the
	// commit after next tidies it.
	p.Rotate = true
	second, err := p.obtain(context.Background(), nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Rotate = false
	third, err := p.obtain(context.Background(), nodes[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := third.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	have := secrets(t, client)
	if _, ok := have["kubestrap-run-"+first.Run]; ok {
		t.Error("the marker of a run with no tokens left was kept")
	}
	if _, ok := have["kubestrap-run-"+second.Run]; !ok {
		t.Error("the marker of a run whose tokens are in use was deleted")
	}
}
