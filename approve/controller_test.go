package approve

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/kubestrap/kubestrap/generator/token"
)

func startController(t *testing.T, objs ...runtime.Object) (*fake.Clientset, *Controller, *prometheus.Registry, *record.FakeRecorder) {
	t.Helper()
	client := fake.NewClientset(objs...)
	c, reg, rec := run(t, client)
	return client, c, reg, rec
}

// run starts a controller on client (whose reactors the test may have set)
// until the test ends.
func run(t *testing.T, client *fake.Clientset) (*Controller, *prometheus.Registry, *record.FakeRecorder) {
	t.Helper()
	reg := prometheus.NewRegistry()
	rec := record.NewFakeRecorder(100)
	c, err := New(Options{Client: client, Policy: NewPolicy(testNodes()), Identity: "test", Metrics: NewMetrics(reg), Recorder: rec, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return c, reg, rec
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func condition(t *testing.T, client *fake.Clientset, name string) *certv1.CertificateSigningRequestCondition {
	t.Helper()
	csr, err := client.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.Status.Conditions) == 0 {
		return nil
	}
	if len(csr.Status.Conditions) > 1 {
		t.Fatalf("CSR %s decided %d times: %+v", name, len(csr.Status.Conditions), csr.Status.Conditions)
	}
	return &csr.Status.Conditions[0]
}

func TestControllerDecidesAndEndsTokens(t *testing.T) {
	good := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
	forged := bootstrapCSR(t, "aaaaaa", "node-a", "node-b")
	kubeadm := bootstrapCSR(t, "abcdef", "node-a", "worker-1")
	kubeadm.Spec.Groups = []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token"}
	foreignIP := servingCSR(t, "node-a", []string{"node-a"}, "10.9.9.9")
	other := bootstrapCSR(t, "bbbbbb", "node-b", "node-b")
	other.Spec.SignerName = certv1.KubeAPIServerClientSignerName
	client, c, reg, rec := startController(t, tokenSecret("aaaaaa", "node-a"), tokenSecret("bbbbbb", "node-b"), good, forged, kubeadm, foreignIP, other)

	waitFor(t, "the decisions", func() bool {
		return condition(t, client, good.Name) != nil && condition(t, client, forged.Name) != nil && condition(t, client, foreignIP.Name) != nil
	})
	if c := condition(t, client, good.Name); c.Type != certv1.CertificateApproved || c.Reason != ReasonApproved || !strings.HasSuffix(c.Message, "(test)") {
		t.Errorf("node-a's own CSR: %+v", c)
	}
	if c := condition(t, client, forged.Name); c.Type != certv1.CertificateDenied || !strings.Contains(c.Message, "system:node:node-b") {
		t.Errorf("node-b's name with node-a's token: %+v", c)
	}
	if c := condition(t, client, foreignIP.Name); c.Type != certv1.CertificateDenied || !strings.Contains(c.Message, "10.9.9.9") {
		t.Errorf("serving CSR with a foreign IP: %+v", c)
	}
	if c := condition(t, client, kubeadm.Name); c != nil {
		t.Errorf("kubeadm's CSR was decided: %+v", c)
	}
	if c := condition(t, client, other.Name); c != nil {
		t.Errorf("a CSR for another signer was decided: %+v", c)
	}
	events := map[string]int{}
	for range 3 {
		select {
		case e := <-rec.Events:
			events[strings.Fields(e)[0]]++
		case <-time.After(5 * time.Second):
			t.Fatal("an Event per decision")
		}
	}
	if events["Normal"] != 1 || events["Warning"] != 2 {
		t.Errorf("events: %v", events)
	}

	// The token stays until the certificate is issued and the Node exists.
	ctx := context.Background()
	issued, _ := client.CertificatesV1().CertificateSigningRequests().Get(ctx, good.Name, metav1.GetOptions{})
	issued.Status.Certificate = []byte("issued")
	if _, err := client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, issued, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-aaaaaa", metav1.GetOptions{}); err != nil {
		t.Fatalf("token deleted before its node existed: %v", err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-a's token to end", func() bool {
		_, err := client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-aaaaaa", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-bbbbbb", metav1.GetOptions{}); err != nil {
		t.Errorf("node-b's token went too: %v", err)
	}
	waitFor(t, "the deletion's count", func() bool {
		return testutil.ToFloat64(c.o.Metrics.tokensDeleted) == 1
	})
	want := `
# HELP kubestrap_approve_decisions_total CSRs decided, by kind (bootstrap, renewal, serving, other) and verdict (approve, deny, skip).
# TYPE kubestrap_approve_decisions_total counter
kubestrap_approve_decisions_total{kind="bootstrap",verdict="approve"} 1
kubestrap_approve_decisions_total{kind="bootstrap",verdict="deny"} 1
kubestrap_approve_decisions_total{kind="bootstrap",verdict="skip"} 1
kubestrap_approve_decisions_total{kind="serving",verdict="deny"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kubestrap_approve_decisions_total"); err != nil {
		t.Error(err)
	}
}

// A conflict (another replica decided first) is retried against the
// fresh object, which is then left as it is: never decided twice.
func TestControllerConflictNotDecidedTwice(t *testing.T) {
	good := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
	client := fake.NewClientset(tokenSecret("aaaaaa", "node-a"), good)
	first := true
	client.PrependReactor("update", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "approval" || !first {
			return false, nil, nil
		}
		first = false
		// Another replica's approval lands first.
		other := good.DeepCopy()
		other.Status.Conditions = []certv1.CertificateSigningRequestCondition{{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Other"}}
		if err := client.Tracker().Update(certv1.SchemeGroupVersion.WithResource("certificatesigningrequests"), other, ""); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewConflict(certv1.Resource("certificatesigningrequests"), good.Name, nil)
	})
	c, _, _ := run(t, client)
	waitFor(t, "the other replica's approval to reach the cache", func() bool {
		got, err := c.csrs.Get(good.Name)
		return err == nil && Finished(got)
	})
	time.Sleep(300 * time.Millisecond)
	if cond := condition(t, client, good.Name); cond.Reason != "Other" {
		t.Errorf("decided again after a conflict: %+v", cond)
	}
}

func TestExpiredUnused(t *testing.T) {
	expired := tokenSecret("expir1", "node-a")
	expired.Data["expiration"] = []byte(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	usedExpired := tokenSecret("expir2", "node-b")
	usedExpired.Data["expiration"] = expired.Data["expiration"]
	csr := bootstrapCSR(t, "expir2", "node-b", "node-b")
	_, c, reg, _ := startController(t, expired, usedExpired, tokenSecret("live00", "node-a"), csr)
	waitFor(t, "the caches", c.HasSynced)
	want := `
# HELP kubestrap_approve_tokens_expired_unused kubestrap's bootstrap tokens past their expiration that no CSR was made with.
# TYPE kubestrap_approve_tokens_expired_unused gauge
kubestrap_approve_tokens_expired_unused 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kubestrap_approve_tokens_expired_unused"); err != nil {
		t.Error(err)
	}
}

// At join, the node's tokens minted before its CSR end with the one it
// joined with (a reader of its documents may hold one); one minted since,
// for a later boot, stays; other nodes' stay.
func TestJoinEndsTheNodesOlderTokens(t *testing.T) {
	minted := func(s *corev1.Secret, at time.Time) *corev1.Secret {
		s.CreationTimestamp = metav1.NewTime(at)
		return s
	}
	t0 := time.Now().Add(-time.Hour)
	csr := bootstrapCSR(t, "aaaaaa", "node-a", "node-a")
	csr.CreationTimestamp = metav1.NewTime(t0.Add(20 * time.Minute))
	csr.Status.Conditions = []certv1.CertificateSigningRequestCondition{{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue}}
	csr.Status.Certificate = []byte("issued")
	client, _, _, _ := startController(t,
		minted(tokenSecret("stolen", "node-a"), t0),
		minted(tokenSecret("aaaaaa", "node-a"), t0.Add(10*time.Minute)),
		minted(tokenSecret("later0", "node-a"), t0.Add(30*time.Minute)),
		minted(tokenSecret("bbbbbb", "node-b"), t0),
		csr, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	ctx := context.Background()
	gone := func(id string) bool {
		_, err := client.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+id, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}
	waitFor(t, "node-a's tokens to end", func() bool { return gone("aaaaaa") && gone("stolen") })
	time.Sleep(100 * time.Millisecond)
	if gone("later0") || gone("bbbbbb") {
		t.Errorf("a later boot's token gone: %v; node-b's gone: %v", gone("later0"), gone("bbbbbb"))
	}
}

// A token the cache lacks is read from the API server: another tool's
// token carrying a node's group does not pass for kubestrap's.
func TestForeignTokenReadLive(t *testing.T) {
	foreign := tokenSecret("kbadm1", "node-a")
	delete(foreign.Labels, token.LabelManagedBy)
	csr := bootstrapCSR(t, "kbadm1", "node-a", "node-a")
	client := fake.NewClientset(foreign, csr)
	// The cache, like a real label-selected one, never holds it.
	client.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &corev1.SecretList{}, nil
	})
	run(t, client)
	waitFor(t, "the decision", func() bool { return condition(t, client, csr.Name) != nil })
	if c := condition(t, client, csr.Name); c.Type != certv1.CertificateDenied || !strings.Contains(c.Message, "not kubestrap's") {
		t.Errorf("foreign token's CSR: %+v", c)
	}
}

// A Node read that fails is retried, not taken for "no Node": the valid
// serving CSR is approved once the API server answers.
func TestServingNodeReadRetried(t *testing.T) {
	csr := servingCSR(t, "node-b", []string{"node-b"}, "192.168.5.12")
	client := fake.NewClientset(csr)
	fails := 2
	client.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewTooManyRequests("slow down", 0)
		}
		return true, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.5.12"}}}}, nil
	})
	run(t, client)
	waitFor(t, "the decision", func() bool { return condition(t, client, csr.Name) != nil })
	if c := condition(t, client, csr.Name); c.Type != certv1.CertificateApproved {
		t.Errorf("valid serving CSR after two failed Node reads: %+v", c)
	}
}

// The approver's cache holds no token's secret.
func TestCacheHoldsNoTokenSecret(t *testing.T) {
	_, c, _, _ := startController(t, tokenSecret("aaaaaa", "node-a"))
	waitFor(t, "the caches", c.HasSynced)
	s := c.tokenSecret("aaaaaa")
	if s == nil {
		t.Fatal("token not cached")
	}
	if _, ok := s.Data["token-secret"]; ok || string(s.Data["token-id"]) != "aaaaaa" || s.Annotations[token.AnnotationNode] != "node-a" {
		t.Errorf("cached token: %v", s.Data)
	}
}
