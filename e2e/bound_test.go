package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestBound is bound bootstrap: with `rbac apply --bound`,
// kube-controller-manager approves no bootstrap token's CSR, and `kubestrap
// approve` (two replicas, one Lease) approves each only for its token's
// node. A node joins from its document and gets a serving certificate that
// verifies against the cluster CA; node-a's token cannot become node-b, a
// serving CSR for a foreign address is denied, node-a's token ends at join,
// and a leader killed mid-way hands over with nothing decided twice or
// missed.
func TestBound(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		boundE2E(t)
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	runIsolated(t, "TestBound", envKubestrap+"="+ks)
}

// fleetSize is how many listed nodes never boot: their tokens make the CSRs
// a leader is killed amid.
const fleetSize = 40

func boundE2E(t *testing.T) {
	h := newHarness(t)
	start := time.Now()
	h.setupNetwork()
	// No tokencleaner: an expired token stays for `tokens prune` to find.
	cp := h.startControlPlane("--controllers=*,bootstrapsigner")
	h.diagnostics = append(h.diagnostics, h.clusterDiagnostics)
	ks := h.kubestrapFromOuter()
	criEndpoint := h.startFakeCRI()

	nodeA := &node{name: "e2e-node-a", ip: nodeAIP, via: viaIgnition}
	nodeA.root = h.path("nodes", nodeA.name)
	nodeA.port, nodeA.healthzPort = freePort(h, nodeA.ip), freePort(h, "127.0.0.1")
	h.seedImage(nodeA)
	// node-b never boots: its name is what node-a's token is forged for.
	nodeB := &node{name: "e2e-node-b", ip: nodeBIP, port: 10250, healthzPort: 10248}
	nodes := []*node{nodeA, nodeB}
	for i := range fleetSize {
		nodes = append(nodes, &node{name: fmt.Sprintf("fleet-%02d", i), ip: fmt.Sprintf("192.0.2.%d", 10+i), port: 10250, healthzPort: 10248})
	}
	clusterFile := h.writeClusterFile(cp, criEndpoint, nodes)
	data, err := os.ReadFile(clusterFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, clusterFile, []byte(strings.Replace(string(data), "kind: Cluster\n", "kind: Cluster\napprover: kubestrap\n", 1)), 0o644)

	out := ks.run("rbac-apply-bound", "rbac", "apply", "--bound", "--kubeconfig", cp.adminKubeconfig)
	if strings.Contains(string(out), "auto-approve") {
		t.Errorf("rbac apply --bound made the blanket approval:\n%s", out)
	}
	h.checkNoBlanketApproval()
	docs := h.path("out")
	ks.run("generate-live", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--out", docs)
	ignA := filepath.Join(docs, nodeA.name, "config.ign")
	tokenA := tokenValueIn(t, ignA)
	nodeA.tokenID, _, _ = strings.Cut(tokenA, ".")
	h.checkStatus(ks, cp, clusterFile, "after generate", map[string]string{nodeA.name: nodeA.tokenID + " unused, CSR none, Node absent"})

	approvers := []*proc{h.startApprover(ks, cp, "approve-1", clusterFile), h.startApprover(ks, cp, "approve-2", clusterFile)}
	leader := h.waitLeader(approvers)
	t.Logf("%s leads", leader.name)
	h.checkMetrics(leader, "kubestrap_approve_leader 1", "kubestrap_approve_blanket_approval 0")

	// The forgery: node-a's token asks for node-b's client certificate.
	forged := h.createClientCSR(cp, tokenA, "e2e-node-b")
	denial := h.waitDecided(forged, certificatesv1.CertificateDenied, approvers)
	if !strings.Contains(denial.Message, "token "+nodeA.tokenID+" was minted for node e2e-node-a, but the CSR asks for \"system:node:e2e-node-b\"") {
		t.Errorf("denial of the forged CSR says %q", denial.Message)
	}
	t.Logf("forged CSR %s (node-a's token %s, name system:node:e2e-node-b): denied, %s: %s", forged, nodeA.tokenID, denial.Reason, denial.Message)
	h.checkEvent(forged, "Warning", "KubestrapDenied")
	h.checkStatus(ks, cp, clusterFile, "after the forgery", map[string]string{nodeA.name: nodeA.tokenID + " used, CSR denied KubestrapDenied, Node absent"})

	// node-a joins from its document, with its serving certificate.
	h.applyIgnition(nodeA, ignA)
	h.checkLaidDown(nodeA, cp)
	h.startKubelet(nodeA)
	h.waitCSRIssued(nodeA)
	h.checkClientCert(nodeA, cp)
	h.waitNodeReady(nodeA)
	h.checkApprovedBy(nodeA, certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:"+nodeA.tokenID)
	h.checkServing(nodeA, cp)
	h.waitFor(nodeA.name+": its token "+nodeA.tokenID+" deleted once it joined", time.Minute, approvers, func(ctx context.Context) (bool, string) {
		_, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+nodeA.tokenID, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return false, fmt.Sprintf("Secret bootstrap-token-%s: %v", nodeA.tokenID, err)
	})

	// No certificate was ever issued for the forgery.
	if csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(h.ctx, forged, metav1.GetOptions{}); err != nil || len(csr.Status.Certificate) > 0 {
		t.Errorf("forged CSR %s: certificate issued (%d bytes), %v", forged, len(csr.Status.Certificate), err)
	}

	// A serving CSR, made with node-a's own client certificate, for an
	// address that is not node-a's.
	foreign := h.createServingCSR(nodeA, cp, "10.200.0.99")
	denial = h.waitDecided(foreign, certificatesv1.CertificateDenied, approvers)
	if !strings.Contains(denial.Message, "10.200.0.99") {
		t.Errorf("denial of the foreign-IP serving CSR says %q", denial.Message)
	}
	t.Logf("serving CSR %s for e2e-node-a with IP 10.200.0.99: denied: %s", foreign, denial.Message)

	h.checkStatus(ks, cp, clusterFile, "after node-a joined", map[string]string{
		nodeA.name: nodeA.tokenID + " deleted, CSR issued, Node Ready " + h.bins.k8sVersion,
		nodeB.name: tokenIDOfDoc(t, filepath.Join(docs, nodeB.name, "config.ign")) + " unused, CSR none, Node absent",
	})

	h.checkFailover(cp, docs, approvers)
	h.checkPrune(ks, cp, clusterFile, approvers)
	t.Logf("bound bootstrap: %s in all", time.Since(start).Round(time.Second))
}

// checkNoBlanketApproval checks that no ClusterRoleBinding lets
// kube-controller-manager approve bootstrap tokens' client CSRs.
func (h *harness) checkNoBlanketApproval() {
	h.t.Helper()
	crbs, err := h.client.RbacV1().ClusterRoleBindings().List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, b := range crbs.Items {
		if b.RoleRef.Name == "system:certificates.k8s.io:certificatesigningrequests:nodeclient" {
			h.t.Errorf("ClusterRoleBinding %s grants %v the blanket approval", b.Name, b.Subjects)
		}
	}
}

// startApprover runs `kubestrap approve` with a short Lease, so that a
// killed leader is replaced within seconds.
func (h *harness) startApprover(ks *kubestrap, cp *controlPlane, name, clusterFile string) *proc {
	h.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(h, "127.0.0.1"))
	p := h.start(name, exec.Command(ks.path, "approve", "-f", clusterFile, "--kubeconfig", cp.adminKubeconfig,
		"--leader-elect", "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms",
		"--identity", name, "--listen", addr, "--log-format", "text"))
	p.url = "http://" + addr
	h.waitFor(name+" ready (/readyz)", time.Minute, []*proc{p, cp.apiserver}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, http.DefaultClient, p.url+"/readyz")
	})
	return p
}

// waitLeader waits for one of the approvers to hold the Lease.
func (h *harness) waitLeader(approvers []*proc) *proc {
	h.t.Helper()
	var leader *proc
	h.waitFor("an approver holds Lease kube-system/kubestrap-approve", time.Minute, approvers, func(ctx context.Context) (bool, string) {
		lease, err := h.client.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, "kubestrap-approve", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range approvers {
			if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == p.name {
				leader = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("holder %v", lease.Spec.HolderIdentity)
	})
	return leader
}

// checkMetrics waits for p's /metrics to carry each of the lines.
func (h *harness) checkMetrics(p *proc, lines ...string) {
	h.t.Helper()
	h.waitFor(p.name+" /metrics: "+strings.Join(lines, ", "), 30*time.Second, []*proc{p}, func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		have := strings.Split(string(body), "\n")
		for _, l := range lines {
			if !slices.Contains(have, l) {
				return false, "no line " + l
			}
		}
		return true, ""
	})
}

// tokenValueIn is the whole bootstrap token of a node's Ignition config.
func tokenValueIn(t *testing.T, path string) string {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kc, ok := ignitionFile(doc, bootstrapKubeconfigPath)
	if !ok {
		t.Fatalf("%s: no bootstrap kubeconfig", path)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo].Token
}

// clientAs is a client of the API server that authenticates as cfg says.
func (h *harness) clientAs(cp *controlPlane, cfg rest.Config) kubernetes.Interface {
	h.t.Helper()
	cfg.Host = cp.url
	cfg.TLSClientConfig.CAFile = cp.pki.path("ca.crt")
	cfg.Timeout = 15 * time.Second
	cfg.QPS, cfg.Burst = 100, 100
	c, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// createClientCSR makes, as bootstrap token tok, a kubelet's client CSR
// for node name, and returns the CSR's name.
func (h *harness) createClientCSR(cp *controlPlane, tok, name string) string {
	h.t.Helper()
	return h.createCSR(h.clientAs(cp, rest.Config{BearerToken: tok}), certificatesv1.KubeAPIServerClientKubeletSignerName,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}}},
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
}

// createServingCSR makes, as node n with its client certificate, a serving
// CSR for n's name and the IP ip.
func (h *harness) createServingCSR(n *node, cp *controlPlane, ip string) string {
	h.t.Helper()
	pemData, err := n.readFile(clientCertPath)
	if err != nil {
		h.t.Fatal(err)
	}
	c := h.clientAs(cp, rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: pemData, KeyData: pemData}})
	return h.createCSR(c, certificatesv1.KubeletServingSignerName,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + n.name, Organization: []string{"system:nodes"}},
			DNSNames: []string{n.name}, IPAddresses: []net.IP{net.ParseIP(ip)}},
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth)
}

func (h *harness) createCSR(c kubernetes.Interface, signer string, tmpl *x509.CertificateRequest, usages ...certificatesv1.KeyUsage) string {
	h.t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, newKey(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	csr, err := c.CertificatesV1().CertificateSigningRequests().Create(h.ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			SignerName: signer, Usages: usages,
			Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("creating a CSR for %s: %v", tmpl.Subject.CommonName, err)
	}
	return csr.Name
}

// waitDecided waits for the CSR's one decision and checks it is want, by
// kubestrap.
func (h *harness) waitDecided(name string, want certificatesv1.RequestConditionType, watch []*proc) certificatesv1.CertificateSigningRequestCondition {
	h.t.Helper()
	var cond certificatesv1.CertificateSigningRequestCondition
	h.waitFor("CSR "+name+" decided", time.Minute, nil, func(ctx context.Context) (bool, string) {
		csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
				cond = c
				return true, ""
			}
		}
		return false, csrState(*csr)
	})
	if cond.Type != want || !strings.HasPrefix(cond.Reason, "Kubestrap") {
		h.t.Errorf("CSR %s: %s by %s (%s), want %s by kubestrap", name, cond.Type, cond.Reason, cond.Message, want)
	}
	return cond
}

// checkEvent checks that the CSR has an Event of that type and reason.
func (h *harness) checkEvent(csr, typ, reason string) {
	h.t.Helper()
	h.waitFor("an Event for CSR "+csr, 30*time.Second, nil, func(ctx context.Context) (bool, string) {
		events, err := h.client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + csr})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range events.Items {
			if e.Type == typ && e.Reason == reason {
				h.t.Logf("Event %s/%s: %s %s: %s", e.Namespace, e.Name, e.Type, e.Reason, e.Message)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(events.Items))
	})
}

// checkApprovedBy checks that the node's CSR of that signer, from user,
// was approved by kubestrap and not by kube-controller-manager.
func (h *harness) checkApprovedBy(n *node, signer, user string) {
	h.t.Helper()
	csrs, err := h.client.CertificatesV1().CertificateSigningRequests().List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	found := false
	for _, csr := range csrs.Items {
		// The test's own CSRs (the forgeries) are named e2e-.
		if csr.Spec.SignerName != signer || csr.Spec.Username != user || strings.HasPrefix(csr.Name, "e2e-") {
			continue
		}
		found = true
		if len(csr.Status.Conditions) != 1 || csr.Status.Conditions[0].Reason != "KubestrapApproved" {
			h.t.Errorf("%s: CSR %s conditions %+v, want one, KubestrapApproved", n.name, csr.Name, csr.Status.Conditions)
			continue
		}
		h.t.Logf("%s: CSR %s (%s) approved: %s", n.name, csr.Name, signer, csr.Status.Conditions[0].Message)
	}
	if !found {
		h.t.Errorf("%s: no %s CSR from %s", n.name, signer, user)
	}
}

// checkServing waits for the kubelet's serving certificate and calls the
// kubelet as the API server does for `kubectl logs`: TLS verified against
// the cluster CA, as a client the kubelet authorizes.
func (h *harness) checkServing(n *node, cp *controlPlane) {
	h.t.Helper()
	user := "system:node:" + n.name
	h.waitFor(n.name+": serving CSR approved and issued", csrTimeout, []*proc{n.kubelet}, func(ctx context.Context) (bool, string) {
		csrs, err := h.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, csr := range csrs.Items {
			if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && csr.Spec.Username == user {
				if len(csr.Status.Certificate) > 0 {
					return true, ""
				}
				seen = append(seen, csr.Name+": "+csrState(csr))
			}
		}
		return false, fmt.Sprintf("serving CSRs: %v", seen)
	})
	h.checkApprovedBy(n, certificatesv1.KubeletServingSignerName, user)
	admin, err := tls.LoadX509KeyPair(cp.pki.path("admin.crt"), cp.pki.path("admin.key"))
	if err != nil {
		h.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.pki.ca)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{admin}, ServerName: n.ip,
	}}}
	url := fmt.Sprintf("https://%s/pods", net.JoinHostPort(n.ip, fmt.Sprint(n.port)))
	// The kubelet swaps in the new certificate within seconds of issue.
	h.waitFor(n.name+": "+url+" verifies against the cluster CA", time.Minute, []*proc{n.kubelet}, func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Sprintf("%s: %s", resp.Status, body)
		}
		cert := resp.TLS.PeerCertificates[0]
		h.t.Logf("%s: kubelet serves %s (issuer %s, IPs %v, DNS %v); GET /pods as admin: %s", n.name, cert.Subject.CommonName, cert.Issuer.CommonName, cert.IPAddresses, cert.DNSNames, resp.Status)
		return true, ""
	})
}

// checkFailover makes the fleet's CSRs, one every 100ms, each with its own
// node's token, kills the leading approver part-way, and checks that every
// CSR was approved exactly once, some by each replica.
func (h *harness) checkFailover(cp *controlPlane, docs string, approvers []*proc) {
	h.t.Helper()
	leader := h.waitLeader(approvers)
	var names []string
	for i := range fleetSize {
		node := fmt.Sprintf("fleet-%02d", i)
		tok := tokenValueIn(h.t, filepath.Join(docs, node, "config.ign"))
		names = append(names, h.createClientCSR(cp, tok, node))
		if i == fleetSize/4 {
			_ = syscall.Kill(-leader.cmd.Process.Pid, syscall.SIGKILL)
			<-leader.exited
			h.t.Logf("killed the leader %s after %d CSRs", leader.name, i+1)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rest []*proc
	for _, p := range approvers {
		if p != leader {
			rest = append(rest, p)
		}
	}
	byWhom := map[string]int{}
	h.waitFor(fmt.Sprintf("all %d fleet CSRs approved", fleetSize), 2*time.Minute, rest, func(ctx context.Context) (bool, string) {
		clear(byWhom)
		pending := 0
		for _, name := range names {
			csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if len(csr.Status.Conditions) == 0 {
				pending++
				continue
			}
			c := csr.Status.Conditions[0]
			who := c.Message[strings.LastIndex(c.Message, "(")+1 : len(c.Message)-1]
			byWhom[string(c.Type)+" by "+who]++
		}
		return pending == 0, fmt.Sprintf("%d pending; %v", pending, byWhom)
	})
	for _, name := range names {
		csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(h.ctx, name, metav1.GetOptions{})
		if err != nil {
			h.t.Fatal(err)
		}
		if n := len(csr.Status.Conditions); n != 1 || csr.Status.Conditions[0].Type != certificatesv1.CertificateApproved || csr.Status.Conditions[0].Reason != "KubestrapApproved" {
			h.t.Errorf("fleet CSR %s: conditions %+v, want one approval by kubestrap", name, csr.Status.Conditions)
		}
	}
	if len(byWhom) != 2 {
		h.t.Errorf("fleet CSRs decided %v: want some by each replica", byWhom)
	}
	h.t.Logf("leader %s killed mid-way: %d fleet CSRs, each approved once: %v", leader.name, fleetSize, byWhom)
}

// statusRow is what the e2e reads of `kubestrap status -o json`.
type statusRow struct {
	Name  string `json:"name"`
	Token struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"token"`
	CSR struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"csr"`
	Node struct {
		State          string `json:"state"`
		KubeletVersion string `json:"kubeletVersion"`
	} `json:"node"`
}

func (r statusRow) String() string {
	s := fmt.Sprintf("%s %s, CSR %s", r.Token.ID, r.Token.State, r.CSR.State)
	if r.CSR.Reason != "" {
		s += " " + r.CSR.Reason
	}
	s += ", Node " + r.Node.State
	if r.Node.KubeletVersion != "" {
		s += " " + r.Node.KubeletVersion
	}
	return s
}

// checkStatus runs `kubestrap status -o json` and checks the rows of want
// (node: "id state, CSR state [reason], Node state [version]"); the table
// form goes to the log.
func (h *harness) checkStatus(ks *kubestrap, cp *controlPlane, clusterFile, when string, want map[string]string) {
	h.t.Helper()
	out := h.run("status", exec.Command(ks.path, "status", "-f", clusterFile, "--kubeconfig", cp.adminKubeconfig, "-o", "json"))
	var rows []statusRow
	if err := json.Unmarshal(out, &rows); err != nil {
		h.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Name] = r.String()
	}
	for node, w := range want {
		if got[node] != w {
			h.t.Errorf("status %s: %s is %q, want %q", when, node, got[node], w)
		}
	}
	table := h.run("status-table", exec.Command(ks.path, "status", "-f", clusterFile, "--kubeconfig", cp.adminKubeconfig))
	lines := strings.SplitN(string(table), "\n", 4)
	h.t.Logf("status %s (first rows of %d):\n%s", when, len(rows), strings.Join(lines[:min(3, len(lines))], "\n"))
}

func tokenIDOfDoc(t *testing.T, path string) string {
	id, _, _ := strings.Cut(tokenValueIn(t, path), ".")
	return id
}

// checkPrune stops the approvers (which would end joined nodes' tokens
// themselves), lets two fleet nodes "join" (their Nodes appear; their
// certificates were issued in the failover), expires a third's token, and
// checks that `tokens prune --dry-run` lists exactly those three and
// deletes nothing, and that `tokens prune` then deletes exactly those.
func (h *harness) checkPrune(ks *kubestrap, cp *controlPlane, clusterFile string, approvers []*proc) {
	h.t.Helper()
	for _, p := range approvers {
		p.stop()
	}
	for _, name := range []string{"fleet-00", "fleet-01"} {
		if _, err := h.client.CoreV1().Nodes().Create(h.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			h.t.Fatal(err)
		}
	}
	byNode, err := h.tokenSecrets(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	id := func(node string) string {
		if len(byNode[node]) != 1 {
			h.t.Fatalf("%s has %d tokens", node, len(byNode[node]))
		}
		return string(byNode[node][0].Data["token-id"])
	}
	expired := byNode["fleet-02"][0]
	expired.Data["expiration"] = []byte(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Update(h.ctx, &expired, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	want := []string{
		"bootstrap-token-" + id("fleet-00") + " node fleet-00 joined",
		"bootstrap-token-" + id("fleet-01") + " node fleet-01 joined",
		"bootstrap-token-" + id("fleet-02") + " node fleet-02 expired",
	}
	before := len(byNode)
	listed := func(out []byte, action string) []string {
		var got []string
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutSuffix(line, " "+action); ok && strings.HasPrefix(line, "bootstrap-token-") {
				got = append(got, rest)
			}
		}
		return got
	}
	out := h.run("prune-dry-run", exec.Command(ks.path, "tokens", "prune", "-f", clusterFile, "--kubeconfig", cp.adminKubeconfig, "--dry-run"))
	if got := listed(out, "would be deleted"); !slices.Equal(got, want) {
		h.t.Errorf("tokens prune --dry-run lists %q, want %q\n%s", got, want, out)
	}
	if after, _ := h.tokenSecrets(h.ctx); len(after) != before {
		h.t.Errorf("--dry-run deleted tokens: %d nodes with tokens, was %d", len(after), before)
	}
	h.t.Logf("tokens prune --dry-run:\n%s", out)
	out = h.run("prune", exec.Command(ks.path, "tokens", "prune", "-f", clusterFile, "--kubeconfig", cp.adminKubeconfig))
	if got := listed(out, "deleted"); !slices.Equal(got, want) {
		h.t.Errorf("tokens prune deleted %q, want %q\n%s", got, want, out)
	}
	after, _ := h.tokenSecrets(h.ctx)
	for _, node := range []string{"fleet-00", "fleet-01", "fleet-02"} {
		if len(after[node]) != 0 {
			h.t.Errorf("%s's token is still there after prune", node)
		}
	}
	if len(after) != before-3 {
		h.t.Errorf("prune left %d nodes with tokens, want %d", len(after), before-3)
	}
}
