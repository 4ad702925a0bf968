package e2e

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestBenchApprove is `kubestrap approve`'s half of bench/run.sh, on the e2e
// control plane: N nodes' kubelet client CSRs made at once, each with its
// own node's bootstrap token, and the time until every one is approved —
//
//   - by kube-controller-manager's csrapproving controller, with the blanket
//     binding of `kubestrap rbac apply` (what bound bootstrap replaces), and
//   - by one `kubestrap approve`, with `kubestrap rbac apply --bound`,
//
// round by round, the round with the median ratio being the figure; then N
// forged CSRs (node i's token asking for node i+1's name), and the time
// until every one is denied. kube-controller-manager gets the client limits
// `kubestrap approve` has (its defaults, 20 calls a second, would hold it
// back, not its approver). It prints "BENCH key=value" lines; it only runs
// when KUBESTRAP_BENCH=1 (runBench).
func TestBenchApprove(t *testing.T) { runBench(t, "TestBenchApprove", benchApprove) }

const (
	envBenchApproveNodes = "KUBESTRAP_BENCH_APPROVE_NODES" // default 1000

	// approveWorkers is `kubestrap approve`'s default --workers; its client
	// may make 50 calls a second per worker, 100 per worker at once
	// (discovery.NewClient), and kube-controller-manager gets the same.
	approveWorkers = 8
	approveQPS     = 50 * approveWorkers
	approveBurst   = 100 * approveWorkers

	// approveParallel is how many CSRs are being created at once.
	approveParallel = 64
	// benchRoundLabel marks a phase's CSRs, to watch and delete them.
	benchRoundLabel = "kubestrap-bench/round"
	// kcmApproved is kube-controller-manager's reason for its approvals.
	kcmApproved = "AutoApproved"
)

func benchApprove(t *testing.T) {
	h := newHarness(t)
	h.setupNetwork()
	cp := h.startControlPlane(fmt.Sprintf("--kube-api-qps=%d", approveQPS), fmt.Sprintf("--kube-api-burst=%d", approveBurst))
	ks := h.kubestrapFromOuter()
	// The admin client's default limit, 5 calls a second, would make
	// applying 1,000 tokens (one create each) take over three minutes.
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout, cfg.QPS, cfg.Burst = 15*time.Second, approveQPS, approveBurst
	if h.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	n := envInt(t, envBenchApproveNodes, 1000)
	rounds := envInt(t, "KUBESTRAP_BENCH_ROUNDS", 3)
	if n < 2 {
		t.Fatalf("%s=%d: forging needs two nodes at least", envBenchApproveNodes, n)
	}

	// The nodes never boot: their tokens make the CSRs. Their addresses
	// are in 198.18.0.0/15, the benchmarking range.
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = &node{name: fmt.Sprintf("bench-%05d", i), ip: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), port: 10250, healthzPort: 10248}
	}
	clusterFile := h.writeClusterFile(cp, "unix:///run/containerd/containerd.sock", nodes)
	docs := h.path("out")
	// h.run, not ks.run: the output goes to the log only (long, at 1,000).
	h.run("generate-offline", exec.Command(ks.path, "generate", "--offline", "-f", clusterFile, "--out", docs))
	setup := time.Now()
	h.applyTokens(filepath.Join(docs, "tokens.yaml"))
	t.Logf("%d tokens applied in %.1f s", n, time.Since(setup).Seconds())
	setup = time.Now()
	names := make([]string, n)
	clients := make([]kubernetes.Interface, n)
	for i, nd := range nodes {
		names[i] = nd.name
		clients[i] = h.clientAs(cp, rest.Config{BearerToken: tokenValueIn(t, filepath.Join(docs, nd.name, "config.ign"))})
	}
	t.Logf("%d clients, one per token, made in %.1f s", n, time.Since(setup).Seconds())

	// kcmRound: kube-controller-manager approves, by the blanket binding;
	// no kubestrap approve runs.
	var approver *proc
	kcmRound := func(r int) time.Duration {
		if approver != nil {
			approver.stop()
			approver = nil
		}
		ks.run(fmt.Sprintf("rbac-apply-%d", r), "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)
		h.checkBootstrapRBAC()
		time.Sleep(3 * time.Second)
		label := fmt.Sprintf("kcm-%d", r)
		d := benchDecide(h, label, clients, benchCSRs(h, label, names, 0), map[string]*proc{
			"kube-apiserver": cp.apiserver, "etcd": cp.etcd, "kube-controller-manager": cp.controllerManager,
		})
		h.checkDecisions(label, n, certificatesv1.CertificateApproved, kcmApproved)
		h.deleteCSRs(label)
		return d
	}
	// bound: the binding is gone and one kubestrap approve leads.
	bound := func(r int) {
		ks.run(fmt.Sprintf("rbac-apply-bound-%d", r), "rbac", "apply", "--bound", "--kubeconfig", cp.adminKubeconfig)
		h.checkNoBlanketApproval()
		if approver == nil {
			approver = h.startApprover(ks, cp, fmt.Sprintf("approve-%d", r), clusterFile)
			h.waitLeader([]*proc{approver})
		}
		time.Sleep(3 * time.Second)
	}
	approveRound := func(r int) time.Duration {
		bound(r)
		label := fmt.Sprintf("approve-%d", r)
		d := benchDecide(h, label, clients, benchCSRs(h, label, names, 0), map[string]*proc{
			"kube-apiserver": cp.apiserver, "etcd": cp.etcd, "kube-controller-manager": cp.controllerManager, "approve": approver,
		})
		h.checkDecisions(label, n, certificatesv1.CertificateApproved, "KubestrapApproved")
		h.deleteCSRs(label)
		return d
	}

	// A fresh control plane decides its first CSRs slower than the next:
	// kube-controller-manager approves one of each node's, untimed, before
	// the rounds, so that whoever goes first is not the one who pays for it.
	t.Logf("warm-up, untimed: kcm-0")
	kcmRound(0)

	// The two alternate, each going first every other round.
	type round struct{ kcm, approve float64 }
	var results []round
	for r := range rounds {
		var kcm, approve time.Duration
		if r%2 == 0 {
			kcm = kcmRound(r + 1)
			approve = approveRound(r + 1)
		} else {
			approve = approveRound(r + 1)
			kcm = kcmRound(r + 1)
		}
		results = append(results, round{kcm.Seconds(), approve.Seconds()})
		t.Logf("round %d: %d client CSRs approved by kube-controller-manager in %.3f s, by kubestrap approve in %.3f s: %.2fx",
			r+1, n, kcm.Seconds(), approve.Seconds(), approve.Seconds()/kcm.Seconds())
	}
	slices.SortFunc(results, func(a, b round) int { return cmp.Compare(a.approve/a.kcm, b.approve/b.kcm) })
	m := results[len(results)/2]
	t.Logf("median round: kubestrap approve %.3f s, kube-controller-manager %.3f s: %.2fx", m.approve, m.kcm, m.approve/m.kcm)

	// The forgeries: node i's token asks for node i+1's client
	// certificate.
	bound(rounds + 1)
	forged := benchDecide(h, "forged", clients, benchCSRs(h, "forged", names, 1), map[string]*proc{
		"kube-apiserver": cp.apiserver, "etcd": cp.etcd, "kube-controller-manager": cp.controllerManager, "approve": approver,
	})
	denied := h.checkDecisions("forged", n, certificatesv1.CertificateDenied, "KubestrapDenied")
	t.Logf("%d forged client CSRs: %d denied by kubestrap approve, none issued, in %.3f s", n, denied, forged.Seconds())
	fmt.Printf("BENCH approve_nodes=%d\nBENCH approve_rounds=%d\nBENCH approve_kcm_seconds=%.3f\nBENCH approve_seconds=%.3f\nBENCH approve_ratio=%.3f\nBENCH forged_nodes=%d\nBENCH forged_seconds=%.3f\nBENCH forged_denied=%d\n",
		n, rounds, m.kcm, m.approve, m.approve/m.kcm, n, forged.Seconds(), denied)
}

// benchCSRs are one kubelet client CSR per node, each with a fresh key and
// labelled label; node i's asks for the name of node (i+shift)%len(names).
func benchCSRs(h *harness, label string, names []string, shift int) []*certificatesv1.CertificateSigningRequest {
	h.t.Helper()
	csrs := make([]*certificatesv1.CertificateSigningRequest, len(names))
	for i := range names {
		name := names[(i+shift)%len(names)]
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
		}, newKey(h.t))
		if err != nil {
			h.t.Fatal(err)
		}
		csrs[i] = &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-", Labels: map[string]string{benchRoundLabel: label}},
			Spec: certificatesv1.CertificateSigningRequestSpec{
				SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
				Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
				Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			},
		}
	}
	return csrs
}

// benchDecide creates csrs[i] as clients[i], approveParallel at a time, all
// released at one instant, and returns the time from the first create until
// every one carries an Approved or Denied condition, as a watch sees it. It
// logs the CPU each of procs, and the benchmark itself, spent meanwhile.
func benchDecide(h *harness, label string, clients []kubernetes.Interface, csrs []*certificatesv1.CertificateSigningRequest, procs map[string]*proc) time.Duration {
	h.t.Helper()
	sel := benchRoundLabel + "=" + label
	api := h.client.CertificatesV1().CertificateSigningRequests()
	list, err := api.List(h.ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		h.t.Fatal(err)
	}
	rv := list.ResourceVersion

	var next atomic.Int64
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	created := make(chan error, 1)
	var firstErr atomic.Pointer[error]
	for range approveParallel {
		wg.Go(func() {
			<-startLine
			for {
				i := int(next.Add(1) - 1)
				if i >= len(csrs) {
					return
				}
				if _, err := clients[i].CertificatesV1().CertificateSigningRequests().Create(h.ctx, csrs[i], metav1.CreateOptions{}); err != nil {
					err = fmt.Errorf("creating CSR %d (%s): %w", i, csrs[i].Spec.SignerName, err)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	createsDone := make(chan time.Time, 1)
	go func() {
		wg.Wait()
		createsDone <- time.Now()
		if p := firstErr.Load(); p != nil {
			created <- *p
		}
		close(created)
	}()

	cpu0 := map[string]time.Duration{}
	for name, p := range procs {
		cpu0[name] = cpuTime(h.t, p)
	}
	self0 := selfCPU(h.t)
	t0 := time.Now()
	close(startLine)
	last := h.watchDecided(sel, rv, len(csrs), created, procs)
	d := last.Sub(t0)
	createdIn := (<-createsDone).Sub(t0)
	spent := []string{fmt.Sprintf("bench (creates, watch) %.2f s", (selfCPU(h.t) - self0).Seconds())}
	for _, name := range slices.Sorted(maps.Keys(procs)) {
		spent = append(spent, fmt.Sprintf("%s %.2f s", name, (cpuTime(h.t, procs[name])-cpu0[name]).Seconds()))
	}
	extra := ""
	if p, ok := procs["approve"]; ok {
		extra = fmt.Sprintf("; approve's log: %d retries", strings.Count(readLog(h.t, p.log), "retrying"))
	}
	h.t.Logf("%s: %d CSRs created in %.3f s, all decided in %.3f s; CPU spent: %s%s", label, len(csrs), createdIn.Seconds(), d.Seconds(), strings.Join(spent, ", "), extra)
	return d
}

// watchDecided watches the CSRs selected by sel from resourceVersion rv
// until n of them carry an Approved or Denied condition, and returns when
// it saw the last. created says whether the creates failed; a watch that
// ends is resumed, one that errs (expired) starts over from a list.
func (h *harness) watchDecided(sel, rv string, n int, created <-chan error, procs map[string]*proc) time.Time {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Minute)
	defer cancel()
	api := h.client.CertificatesV1().CertificateSigningRequests()
	decided := map[string]bool{}
	note := func(csr *certificatesv1.CertificateSigningRequest) {
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
				decided[csr.Name] = true
			}
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		w, err := api.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv})
		if err != nil {
			h.t.Fatalf("watching CSRs %s (%d of %d decided): %v", sel, len(decided), n, err)
		}
		relist := false
	events:
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					break events
				}
				switch ev.Type {
				case watch.Added, watch.Modified:
					csr := ev.Object.(*certificatesv1.CertificateSigningRequest)
					rv = csr.ResourceVersion
					note(csr)
					if len(decided) == n {
						w.Stop()
						return time.Now()
					}
				case watch.Error:
					relist = true
					break events
				}
			case err, ok := <-created:
				if ok && err != nil {
					h.t.Fatal(err)
				}
				created = nil
			case <-tick.C:
				for _, p := range procs {
					h.checkRunning(p)
				}
			case <-ctx.Done():
				h.t.Fatalf("timed out waiting for CSRs %s: %d of %d decided", sel, len(decided), n)
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			h.t.Fatalf("timed out waiting for CSRs %s: %d of %d decided", sel, len(decided), n)
		}
		if relist {
			list, err := api.List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				h.t.Fatal(err)
			}
			for i := range list.Items {
				note(&list.Items[i])
			}
			if len(decided) == n {
				return time.Now()
			}
			rv = list.ResourceVersion
		}
	}
}

// checkDecisions checks that each of the n CSRs labelled label has one
// decision, of type want and reason reason, and, denied, no certificate; it
// returns how many do.
func (h *harness) checkDecisions(label string, n int, want certificatesv1.RequestConditionType, reason string) int {
	h.t.Helper()
	list, err := h.client.CertificatesV1().CertificateSigningRequests().List(h.ctx, metav1.ListOptions{LabelSelector: benchRoundLabel + "=" + label})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(list.Items) != n {
		h.t.Errorf("%s: %d CSRs, want %d", label, len(list.Items), n)
	}
	good, bad := 0, 0
	for _, csr := range list.Items {
		var decisions []certificatesv1.CertificateSigningRequestCondition
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
				decisions = append(decisions, c)
			}
		}
		ok := len(decisions) == 1 && decisions[0].Type == want && decisions[0].Reason == reason
		if want == certificatesv1.CertificateDenied && len(csr.Status.Certificate) > 0 {
			ok = false
		}
		if ok {
			good++
			continue
		}
		if bad++; bad <= 5 {
			h.t.Errorf("%s: CSR %s (%s): decisions %+v, certificate %d bytes; want one %s, %s", label, csr.Name, csr.Spec.Username, decisions, len(csr.Status.Certificate), want, reason)
		}
	}
	if bad > 0 {
		h.t.Errorf("%s: %d of %d CSRs not %s by %s", label, bad, len(list.Items), want, reason)
	}
	return good
}

// deleteCSRs deletes the CSRs labelled label.
func (h *harness) deleteCSRs(label string) {
	h.t.Helper()
	sel := metav1.ListOptions{LabelSelector: benchRoundLabel + "=" + label}
	if err := h.client.CertificatesV1().CertificateSigningRequests().DeleteCollection(h.ctx, metav1.DeleteOptions{}, sel); err != nil && !apierrors.IsNotFound(err) {
		h.t.Fatal(err)
	}
	h.waitFor("CSRs "+label+" deleted", time.Minute, nil, func(ctx context.Context) (bool, string) {
		list, err := h.client.CertificatesV1().CertificateSigningRequests().List(ctx, sel)
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprintf("%d left", len(list.Items))
	})
}

// selfCPU is the user and system CPU time this process has used so far.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
