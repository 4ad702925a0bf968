package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStockBoot boots stock machines for real: a Debian root filesystem
// with no kubelet in it, its own systemd as PID 1 (systemd-nspawn), its own
// cloud-init and its own containerd, and kubeadm's kubelet drop-in, whose
// ExecStart= reset would replace a unit's command line. The documents
// install the kubelet from a URL this test serves, with its real sha256,
// and the nodes must join: one from its NoCloud seed (cloud-init at boot),
// one from its Ignition config (ignition-apply fetches the kubelet and
// checks its hash, then systemd starts what Ignition enabled). A wrong hash
// must leave the kubelet uninstalled and not started, in both documents.
func TestStockBoot(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		stockBoot(t)
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	runIsolated(t, "TestStockBoot", envKubestrap+"="+ks, envRootfs+"="+buildRootfs(t))
}

// The vendor files of kubeadm's kubelet package (and, the drop-in, of
// Flatcar's kubernetes sysext): a unit, and a drop-in that resets ExecStart=
// to a command line for kubeadm's files and /usr/bin/kubelet.
const (
	kubeadmUnitPath   = "/usr/lib/systemd/system/kubelet.service"
	kubeadmDropInPath = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
	kubeadmUnit       = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`
	kubeadmDropIn = `# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`
)

// stockCluster is the cluster file of one boot: the hardened profile with
// only what this host needs (cgroup v1, swap), the kubelet installed from
// the test's server. The URL is the release layout, so the README's example
// is what runs.
const stockCluster = `apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
{{- if .OS}}
os: {{.OS}}
{{- end}}
apiServer: {{.APIServer}}
caFile: {{.CAFile}}
clusterDNS: [{{.ClusterDNS}}]
serviceCIDR: {{.ServiceCIDR}}
podCIDR: {{.PodCIDR}}
kubernetesVersion: {{.Version}}
kubelet:
  profile: hardened
  install:
    url: {{.URL}}/release/{version}/bin/linux/{arch}/kubelet
    sha256: {{.SHA256}}
  config:
    # This host, not a product default: it is cgroup v1, which kubelets
    # since v1.35 refuse unless told otherwise, and may have swap.
    failCgroupV1: false
    failSwapOn: false
nodes:
{{- range .Nodes}}
- name: {{.Name}}
  {{- if .IP}}
  ip: {{.IP}}
  {{- end}}
  {{- if .MAC}}
  mac: "{{.MAC}}"
  {{- end}}
  kubelet:
    config: {port: {{.Port}}, healthzPort: {{.HealthzPort}}}
    {{- if .BadHash}}
    install:
      url: {{$.URL}}/release/{version}/bin/linux/{arch}/kubelet
      sha256: {{.BadHash}}
    {{- end}}
{{- end}}
`

type stockNode struct {
	Name, IP string
	// MAC, if set, is what `serve` knows the machine by.
	MAC               string
	Port, HealthzPort int
	// BadHash, if set, is the node's own install with a wrong sha256.
	BadHash string
	machine *machine
}

func stockBoot(t *testing.T) {
	h := newHarness(t)
	start := time.Now()
	h.setupNetwork()
	cp := h.startControlPlane()
	h.diagnostics = append(h.diagnostics, h.clusterDiagnostics)
	ks := h.kubestrapFromOuter()
	srv := h.serveKubelet()
	wrong := strings.Repeat("0", 64)

	// Machine names differ from node names: the documents, not nspawn,
	// must give each machine its node's name.
	ci := &stockNode{Name: "boot-cloud-init", IP: nodeAIP, Port: 10250, HealthzPort: 10248}
	ciBad := &stockNode{Name: "boot-cloud-init-bad-hash", Port: 10270, HealthzPort: 10268, BadHash: wrong}
	ign := &stockNode{Name: "boot-ignition", IP: nodeBIP, Port: 10260, HealthzPort: 10258}
	ignBad := &stockNode{Name: "boot-ignition-bad-hash", Port: 10280, HealthzPort: 10278, BadHash: wrong}

	// Debian from its NoCloud seed: os debian, so the kubelet goes to
	// /usr/local/bin and containerd gets kubestrap's config.
	debian := h.writeStockCluster("debian.yaml", "debian", cp, srv, ci, ciBad)
	h.generateDocuments(ks, cp, liveTokens, debian, h.path("out-debian"))
	// An Ignition OS's document on the same image: no os, so /opt/bin.
	generic := h.writeStockCluster("ignition.yaml", "", cp, srv, ign, ignBad)
	ks.run("generate-ignition", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", generic, "--format", "ignition", "--out", h.path("out-ignition"))

	for _, n := range []*stockNode{ci, ciBad, ign, ignBad} {
		n.machine = h.newMachine("vm-" + strings.TrimPrefix(n.Name, "boot-"))
		n.machine.vendorKubelet()
	}
	for _, n := range []*stockNode{ci, ciBad} {
		dir := filepath.Join(h.path("out-debian"), n.Name)
		n.machine.seedNoCloud(string(readFileT(t, filepath.Join(dir, "meta-data"))), string(readFileT(t, filepath.Join(dir, "user-data"))))
	}
	// Ignition fetches the kubelet itself and checks its hash: a wrong one
	// fails ignition-apply (on a real machine, the boot) and writes no file.
	for _, n := range []*stockNode{ign, ignBad} {
		n.machine.ignitionOS()
	}
	h.ignitionApply(ign.machine, filepath.Join(h.path("out-ignition"), ign.Name, "config.ign"))
	if sum := fileSHA256(t, ign.machine.path("/opt/bin/kubelet")); sum != srv.sha256 {
		t.Fatalf("%s: /opt/bin/kubelet has sha256 %s, want the served kubelet's %s", ign.Name, sum, srv.sha256)
	}
	out, err := h.ignitionApplyErr(ignBad.machine, filepath.Join(h.path("out-ignition"), ignBad.Name, "config.ign"))
	if err == nil || !strings.Contains(out, "hash verification failed") {
		t.Fatalf("%s: ignition-apply with a wrong hash: %v, want a hash mismatch:\n%s", ignBad.Name, err, out)
	}
	if _, err := os.Lstat(ignBad.machine.path("/opt/bin/kubelet")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: a kubelet is in place after a failed hash check: %v", ignBad.Name, err)
	}
	t.Logf("%s: ignition-apply refused the wrong hash: %s", ignBad.Name, lastMatching(out, "hash verification failed"))

	booted := time.Now()
	for _, n := range []*stockNode{ci, ciBad, ign} {
		h.boot(n.machine)
	}
	for _, n := range []*stockNode{ci, ign} {
		h.checkStockJoin(n, srv.sha256, booted)
	}
	h.checkBadHashBoot(ciBad, srv.sha256, wrong)
	// Each install fetched once, the bad Ignition one too; the bad
	// cloud-init one twice: its own start, then kubelet.service's start
	// pulled the failed unit in again (and was refused again).
	if got := srv.served(); got != 5 {
		t.Errorf("the kubelet was downloaded %d times, want 5", got)
	}
	for _, n := range []*stockNode{ci, ciBad, ign} {
		t.Logf("%s: powered off in %s", n.machine.name, n.machine.poweroff().Round(10*time.Millisecond))
	}
	t.Logf("stock boots: both nodes joined with the kubelet their document installed; %s in all", time.Since(start).Round(time.Second))
}

// vendorKubelet lays down kubeadm's kubelet unit and drop-in, and checks the
// image has no kubelet anywhere the documents could use one.
func (m *machine) vendorKubelet() {
	m.h.t.Helper()
	writeFile(m.h.t, m.path(kubeadmUnitPath), []byte(kubeadmUnit), 0o644)
	writeFile(m.h.t, m.path(kubeadmDropInPath), []byte(kubeadmDropIn), 0o644)
	for _, p := range []string{"/usr/bin/kubelet", "/usr/local/bin/kubelet", "/opt/bin/kubelet"} {
		if _, err := os.Lstat(m.path(p)); !errors.Is(err, os.ErrNotExist) {
			m.h.t.Fatalf("%s: the image has %s (%v): the document must install the kubelet", m.name, p, err)
		}
	}
}

func (h *harness) writeStockCluster(name, osName string, cp *controlPlane, srv *kubeletServer, nodes ...*stockNode) string {
	h.t.Helper()
	var b strings.Builder
	err := template.Must(template.New(name).Parse(stockCluster)).Execute(&b, map[string]any{
		"OS": osName, "APIServer": cp.url, "CAFile": cp.pki.path("ca.crt"),
		"ClusterDNS": clusterDNS, "ServiceCIDR": serviceCIDR, "PodCIDR": podCIDR,
		"Version": h.bins.k8sVersion, "URL": srv.url, "SHA256": srv.sha256, "Nodes": nodes,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	p := h.path(name)
	writeFile(h.t, p, []byte(b.String()), 0o644)
	return p
}

// kubeletServer serves the cached kubelet where a release mirror would, on
// the test's own address: plain http, since the hash carries the integrity.
type kubeletServer struct {
	url, sha256 string
	mu          sync.Mutex
	count       int
}

func (s *kubeletServer) served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

func (h *harness) serveKubelet() *kubeletServer {
	h.t.Helper()
	s := &kubeletServer{sha256: fileSHA256(h.t, h.bins.kubelet)}
	l, err := net.Listen("tcp", net.JoinHostPort(apiserverIP, "0"))
	if err != nil {
		h.t.Fatal(err)
	}
	s.url = "http://" + l.Addr().String()
	want := "/release/" + h.bins.k8sVersion + "/bin/linux/amd64/kubelet"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != want {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.count++
		s.mu.Unlock()
		http.ServeFile(w, r, h.bins.kubelet)
	})}
	go srv.Serve(l)
	h.t.Cleanup(func() { srv.Close() })
	h.t.Logf("serving the kubelet (sha256 %s) at %s%s", s.sha256, s.url, want)
	return s
}

func (h *harness) ignitionApplyErr(m *machine, config string) (string, error) {
	h.t.Helper()
	// Not --offline: it fetches the kubelet from the URL.
	cmd := exec.Command(h.bins.ignition, "--root", m.root, config)
	cmd.Args[0] = "ignition-apply"
	cmd.Env = append(os.Environ(), "container=kubestrap-e2e")
	out, err := cmd.CombinedOutput()
	writeFile(h.t, h.path("logs", m.name+"-ignition-apply.log"), out, 0o644)
	return string(out), err
}

func (h *harness) ignitionApply(m *machine, config string) {
	h.t.Helper()
	if out, err := h.ignitionApplyErr(m, config); err != nil {
		h.t.Fatalf("%s: ignition-apply: %v\n%s", m.name, err, out)
	}
}

// checkStockJoin asserts what a good boot did: the kubelet installed by the
// document and started by systemd with kubestrap's command line in spite of
// kubeadm's drop-in, the machine named after its node, the CSR issued and
// the Node Ready.
func (h *harness) checkStockJoin(n *stockNode, sum string, booted time.Time) {
	h.t.Helper()
	m := n.machine
	binary := "/opt/bin/kubelet"
	if m.usesCloudInit() {
		binary = "/usr/local/bin/kubelet"
		st := m.cloudInitStatus()
		if st.Status != "done" || len(st.Errors) > 0 {
			h.t.Errorf("%s: cloud-init status %q, errors %q", m.name, st.Status, st.Errors)
		}
		inst := m.unitState("kubelet-install.service")
		if inst["ActiveState"] != "active" || inst["Result"] != "success" {
			h.t.Errorf("%s: kubelet-install.service %v\n%s", m.name, inst, m.journal("kubelet-install.service"))
		}
		h.t.Logf("%s: kubelet-install.service: %s", m.name, lastMatching(m.journal("kubelet-install.service"), "kubestrap-fetch:"))
	}
	if got := fileSHA256(h.t, m.path(binary)); got != sum {
		h.t.Errorf("%s: %s sha256 %s is not the served kubelet's", m.name, binary, got)
	}
	if host := strings.TrimSpace(m.run("hostname")); host != n.Name {
		h.t.Errorf("%s: hostname %q, want the node's name %q", m.name, host, n.Name)
	}
	// What systemd runs: kubestrap's drop-in after kubeadm's, and its
	// command line.
	dropIns := m.run("systemctl", "show", "--property=DropInPaths", "--value", "kubelet.service")
	if !strings.Contains(dropIns, kubeadmDropInPath) || !strings.Contains(dropIns, dropInPath) {
		h.t.Errorf("%s: kubelet.service drop-ins %q, want kubeadm's and kubestrap's", m.name, dropIns)
	}
	execLine := m.run("systemctl", "show", "--property=ExecStart", "--value", "kubelet.service")
	if !strings.Contains(execLine, "path="+binary+" ") || !strings.Contains(execLine, "--hostname-override="+n.Name) ||
		strings.Contains(execLine, "KUBELET_KUBECONFIG_ARGS") || strings.Count(execLine, "path=") != 1 {
		h.t.Errorf("%s: kubelet.service ExecStart %q, want kubestrap's command line only", m.name, execLine)
	}
	h.t.Logf("%s: systemd runs %s", m.name, strings.TrimSpace(execLine))
	nd := &node{name: n.Name, ip: n.IP, tokenID: tokenIDOf(h.t, m.path(bootstrapKubeconfigPath)), kubelet: m.nspawn}
	h.waitCSRIssued(nd)
	h.waitNodeReady(nd)
	node, err := h.client.CoreV1().Nodes().Get(h.ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	if v := node.Status.NodeInfo.KubeletVersion; v != h.bins.k8sVersion {
		h.t.Errorf("%s: kubelet %s, want %s", n.Name, v, h.bins.k8sVersion)
	}
	h.t.Logf("%s: Ready %s after boot; runtime %s", n.Name, time.Since(booted).Round(time.Second), node.Status.NodeInfo.ContainerRuntimeVersion)
}

// checkBadHashBoot asserts the wrong-hash boot failed safely: the install
// unit failed with the mismatch in the journal, nothing is at the kubelet's
// path, the kubelet never started, and no Node exists.
func (h *harness) checkBadHashBoot(n *stockNode, sum, wrong string) {
	h.t.Helper()
	m := n.machine
	inst := m.unitState("kubelet-install.service")
	if inst["ActiveState"] != "failed" {
		h.t.Errorf("%s: kubelet-install.service %v", m.name, inst)
	}
	journal := m.journal("kubelet-install.service")
	line := lastMatching(journal, "sha256 mismatch")
	if line == "" || !strings.Contains(line, "want "+wrong) || !strings.Contains(line, "got "+sum) {
		h.t.Errorf("%s: no mismatch in the journal:\n%s", m.name, journal)
	}
	h.t.Logf("%s: journal: %s", m.name, line)
	if _, err := os.Lstat(m.path("/usr/local/bin/kubelet")); !errors.Is(err, os.ErrNotExist) {
		h.t.Errorf("%s: /usr/local/bin/kubelet exists after a failed hash check: %v", m.name, err)
	}
	if entries, _ := os.ReadDir(m.path("/usr/local/bin")); len(entries) > 0 {
		h.t.Errorf("%s: /usr/local/bin holds %d entries (a partial download?)", m.name, len(entries))
	}
	k := m.unitState("kubelet.service")
	if k["ActiveState"] == "active" || k["ExecMainStatus"] != "0" && k["ExecMainStatus"] != "" {
		h.t.Errorf("%s: kubelet.service %v: it must never have run", m.name, k)
	}
	if strings.Contains(m.journal("kubelet.service"), "Started kubelet.service") {
		h.t.Errorf("%s: kubelet.service was started", m.name)
	}
	if _, err := h.client.CoreV1().Nodes().Get(h.ctx, n.Name, metav1.GetOptions{}); err == nil {
		h.t.Errorf("%s: a Node %s exists", m.name, n.Name)
	}
	h.t.Logf("%s: kubelet.service %s/%s, never started; cloud-init: %s", m.name, k["ActiveState"], k["SubState"], m.cloudInitStatus().Status)
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(s.Sum(nil))
}

func readFileT(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// lastMatching is the last line of s that holds substr, trimmed.
func lastMatching(s, substr string) string {
	var last string
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			last = strings.TrimSpace(line)
		}
	}
	return last
}
