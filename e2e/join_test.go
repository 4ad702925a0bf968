package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// Deadlines. A healthy join takes seconds; these leave room for a loaded CI
// machine and stay far inside go test's -timeout.
const (
	csrTimeout   = 3 * time.Minute
	readyTimeout = 3 * time.Minute
)

// TestNodesJoin is the end-to-end test: two nodes, one provisioned from its
// Ignition config and one from its cloud-init user-data, each run their
// kubelet exactly as the kubelet.service their document wrote, and must
// join: CSR approved and issued, client certificate on disk, Node Ready.
//
// It runs once per token mode (tokens_test.go), each time re-running itself
// inside a network namespace of its own (netns_test.go).
func TestNodesJoin(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		nodesJoin(t, os.Getenv(envTokenMode))
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	for _, mode := range tokenModes(t) {
		t.Run(mode+"-tokens", func(t *testing.T) { runIsolated(t, "TestNodesJoin", envKubestrap+"="+ks, envTokenMode+"="+mode) })
	}
}

// nodesJoin is one run, inside the network namespace.
func nodesJoin(t *testing.T, mode string) {
	h := newHarness(t)
	t.Logf("token mode: %s", mode)
	start := time.Now()
	h.setupNetwork()
	cp := h.startControlPlane()
	h.diagnostics = append(h.diagnostics, h.clusterDiagnostics)
	ks := h.kubestrapFromOuter()
	criEndpoint := h.startFakeCRI()

	nodes := []*node{
		{name: "e2e-node-a", ip: nodeAIP, via: viaIgnition},
		{name: "e2e-node-b", ip: nodeBIP, via: viaCloudInit},
	}
	for _, n := range nodes {
		n.root = h.path("nodes", n.name)
		n.port = freePort(h, n.ip)
		n.healthzPort = freePort(h, "127.0.0.1")
		h.seedImage(n)
	}
	clusterFile := h.writeClusterFile(cp, criEndpoint, nodes)
	out := h.path("out")
	h.generateDocuments(ks, cp, mode, clusterFile, out)

	for _, n := range nodes {
		switch n.via {
		case viaIgnition:
			h.applyIgnition(n, filepath.Join(out, n.name, "config.ign"))
		case viaCloudInit:
			h.applyCloudInit(n, filepath.Join(out, n.name, "user-data"))
		}
		h.checkLaidDown(n, cp)
	}
	h.checkTokens(nodes)
	if t.Failed() {
		t.FailNow()
	}
	if os.Getenv(envBreak) == "token" {
		h.breakToken(nodes[1])
	}

	for _, n := range nodes {
		h.startKubelet(n)
	}
	for _, n := range nodes {
		h.waitCSRIssued(n)
		h.checkClientCert(n, cp)
	}
	for _, n := range nodes {
		h.waitNodeReady(n)
	}
	if mode == liveTokens {
		h.checkRegenerate(ks, cp, clusterFile, nodes)
		h.checkConcurrentRuns(ks, cp, clusterFile)
		h.checkOutage(ks, cp, clusterFile)
	}
	t.Logf("both nodes joined; %s in all", time.Since(start).Round(time.Second))
}

// writeClusterFile writes the e2e cluster file. Everything specific to this
// host lives here, as kubelet.config overrides, never in kubestrap's
// profiles.
func (h *harness) writeClusterFile(cp *controlPlane, criEndpoint string, nodes []*node) string {
	h.t.Helper()
	var b strings.Builder
	err := template.Must(template.New("cluster").Parse(clusterTemplate)).Execute(&b, map[string]any{
		"APIServer":   cp.url,
		"CAFile":      cp.pki.path("ca.crt"),
		"ClusterDNS":  clusterDNS,
		"Domain":      clusterDomain,
		"ServiceCIDR": serviceCIDR,
		"PodCIDR":     podCIDR,
		"Version":     h.bins.k8sVersion,
		"Binary":      kubeletBinary,
		"CRI":         criEndpoint,
		"Nodes":       nodes,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	path := h.path("cluster.yaml")
	writeFile(h.t, path, []byte(b.String()), 0o644)
	return path
}

const clusterTemplate = `# The end-to-end test's cluster, in the test's own network namespace.
apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: {{.APIServer}}
caFile: {{.CAFile}}
clusterDNS: [{{.ClusterDNS}}]
clusterDomain: {{.Domain}}
serviceCIDR: {{.ServiceCIDR}}
podCIDR: {{.PodCIDR}}
kubernetesVersion: {{.Version}}
token:
  ttl: 24h  # a re-run reuses tokens valid for 2h more (--reuse-margin)
kubelet:
  profile: hardened
  binary: {{.Binary}}
  config:
    # This host, not a product default. Hosts here are cgroup v1, which
    # kubelets since v1.35 refuse unless told otherwise.
    failCgroupV1: false
    # No systemd as PID 1, so no systemd cgroup driver.
    cgroupDriver: cgroupfs
    # No container runtime: Kubernetes' fake CRI (e2e/tools/cmd/fake-cri),
    # which reports RuntimeReady and NetworkReady.
    containerRuntimeEndpoint: {{.CRI}}
    # Two kubelets share one host's cgroups: neither may build the
    # kubepods QoS hierarchy (and allocatable enforcement needs it).
    cgroupsPerQOS: false
    enforceNodeAllocatable: []
    # Whatever the host's swap, it is not what this test is about.
    failSwapOn: false
nodes:
{{- range .Nodes}}
- name: {{.Name}}
  ip: {{.IP}}
  kubelet:
    config:
      # Two kubelets on one host: distinct ports.
      port: {{.Port}}
      healthzPort: {{.HealthzPort}}
{{- end}}
`

// Accessors for the template (node's fields are unexported).
func (n *node) Name() string     { return n.name }
func (n *node) IP() string       { return n.ip }
func (n *node) Port() int        { return n.port }
func (n *node) HealthzPort() int { return n.healthzPort }

// startFakeCRI serves the fake runtime both kubelets use.
func (h *harness) startFakeCRI() string {
	h.t.Helper()
	sock := h.path("fake-cri.sock")
	p := h.start("fake-cri", exec.Command(h.bins.fakeCRI, "--listen", "unix://"+sock))
	h.waitFor("fake CRI listening", 30*time.Second, []*proc{p}, func(context.Context) (bool, string) {
		fi, err := os.Stat(sock)
		if err != nil {
			return false, err.Error()
		}
		return fi.Mode()&os.ModeSocket != 0, "not a socket yet"
	})
	return "unix://" + sock
}

// waitCSRIssued waits for the node's bootstrap CSR, made with its token, to
// be approved (by kube-controller-manager's csrapproving controller, on
// the strength of the RBAC) and issued (by its csrsigning controller).
func (h *harness) waitCSRIssued(n *node) {
	h.t.Helper()
	user := "system:bootstrap:" + n.tokenID
	h.waitFor(fmt.Sprintf("%s: CSR from %s approved and issued", n.name, user), csrTimeout, []*proc{n.kubelet}, func(ctx context.Context) (bool, string) {
		csrs, err := h.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, csr := range csrs.Items {
			if csr.Spec.Username != user {
				continue
			}
			if csr.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
				seen = append(seen, fmt.Sprintf("%s: signer %s", csr.Name, csr.Spec.SignerName))
				continue
			}
			approved := slices.ContainsFunc(csr.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
				return c.Type == certificatesv1.CertificateApproved && c.Status == corev1.ConditionTrue
			})
			if approved && len(csr.Status.Certificate) > 0 {
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%s: %s", csr.Name, csrState(csr)))
		}
		if len(seen) == 0 {
			status := "no CSR from " + user + " yet"
			if line := lastLine(n.kubelet.log, "certificate_manager.go"); line != "" {
				status += "; the kubelet's last word on it: " + line
			}
			return false, status
		}
		return false, strings.Join(seen, "; ")
	})
}

// checkClientCert checks the certificate the kubelet got and the kubeconfig
// it wrote for itself.
func (h *harness) checkClientCert(n *node, cp *controlPlane) {
	h.t.Helper()
	data := h.waitFile(n, clientCertPath, 30*time.Second)
	var cert *x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				h.t.Fatalf("%s: %s: %v", n.name, clientCertPath, err)
			}
			cert = c
			break
		}
	}
	if cert == nil {
		h.t.Fatalf("%s: %s holds no certificate", n.name, clientCertPath)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.pki.ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		h.t.Errorf("%s: client certificate does not verify against the cluster CA: %v", n.name, err)
	}
	if want := "system:node:" + n.name; cert.Subject.CommonName != want || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		h.t.Errorf("%s: client certificate is for %s %q, want %s [system:nodes]", n.name, cert.Subject.CommonName, cert.Subject.Organization, want)
	}
	h.waitFile(n, kubeletKubeconfigPath, 30*time.Second)
	kc, err := clientcmd.LoadFromFile(n.path(kubeletKubeconfigPath))
	if err != nil {
		h.t.Fatalf("%s: %s: %v", n.name, kubeletKubeconfigPath, err)
	}
	for _, c := range kc.Clusters {
		if c.Server != cp.url {
			h.t.Errorf("%s: %s dials %s, want %s", n.name, kubeletKubeconfigPath, c.Server, cp.url)
		}
	}
	h.t.Logf("%s: client certificate %s, serial %x, valid until %s", n.name, cert.Subject.CommonName, cert.SerialNumber, cert.NotAfter.Format(time.RFC3339))
}

// waitNodeReady waits for the Node to be registered and Ready, and checks
// it has the address its unit's --node-ip gave it.
func (h *harness) waitNodeReady(n *node) {
	h.t.Helper()
	var node *corev1.Node
	h.waitFor(n.name+": Node registered and Ready", readyTimeout, []*proc{n.kubelet}, func(ctx context.Context) (bool, string) {
		var err error
		node, err = h.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, conditions(node)
			}
		}
		return false, "no Ready condition yet"
	})
	if !slices.Contains(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: n.ip}) {
		h.t.Errorf("%s: Node addresses %v lack InternalIP %s", n.name, node.Status.Addresses, n.ip)
	}
	h.t.Logf("%s: %s; addresses %v; kubelet %s", n.name, conditions(node), node.Status.Addresses, node.Status.NodeInfo.KubeletVersion)
}

// clusterDiagnostics prints the CSRs, Nodes and token Secrets as the
// apiserver sees them.
func (h *harness) clusterDiagnostics() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var b strings.Builder
	if csrs, err := h.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "CSRs: %v\n", err)
	} else {
		fmt.Fprintf(&b, "CSRs (%d):\n", len(csrs.Items))
		for _, csr := range csrs.Items {
			fmt.Fprintf(&b, "  %s  user=%s signer=%s  %s\n", csr.Name, csr.Spec.Username, csr.Spec.SignerName, csrState(csr))
		}
	}
	if nodes, err := h.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "Nodes: %v\n", err)
	} else {
		fmt.Fprintf(&b, "Nodes (%d):\n", len(nodes.Items))
		for i := range nodes.Items {
			fmt.Fprintf(&b, "  %s  %s\n", nodes.Items[i].Name, conditions(&nodes.Items[i]))
		}
	}
	if byNode, err := h.tokenSecrets(ctx); err != nil {
		fmt.Fprintf(&b, "token Secrets: %v\n", err)
	} else {
		fmt.Fprintf(&b, "token Secrets:\n")
		for node, secrets := range byNode {
			for _, s := range secrets {
				fmt.Fprintf(&b, "  %s  %s  expiration=%s\n", node, s.Name, s.Data["expiration"])
			}
		}
	}
	h.t.Logf("cluster state:\n%s", b.String())
}

func csrState(csr certificatesv1.CertificateSigningRequest) string {
	var parts []string
	for _, c := range csr.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	if len(parts) == 0 {
		parts = append(parts, "Pending")
	}
	if len(csr.Status.Certificate) > 0 {
		parts = append(parts, "issued")
	}
	return strings.Join(parts, " ")
}

func conditions(node *corev1.Node) string {
	var parts []string
	for _, c := range node.Status.Conditions {
		s := fmt.Sprintf("%s=%s", c.Type, c.Status)
		if c.Status != corev1.ConditionFalse || c.Type == corev1.NodeReady {
			s += fmt.Sprintf("(%s: %s)", c.Reason, c.Message)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
