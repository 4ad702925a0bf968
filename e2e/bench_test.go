package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The live half of bench/run.sh: on the e2e control plane, it times the
// guide's per-node procedure, a bare client-go loop that only creates the
// token Secrets (the floor), and `kubestrap generate` on the same node count,
// each as a whole process. It prints one "BENCH key=value" line per figure
// for bench/run.sh to read. It only runs when KUBESTRAP_BENCH=1.
const (
	envBench        = "KUBESTRAP_BENCH"
	envBenchInner   = "KUBESTRAP_BENCH_INNER"
	envBenchNodes   = "KUBESTRAP_BENCH_NODES" // default 1000
	envBenchGuide   = "KUBESTRAP_BENCH_GUIDE" // guide loop nodes, default 20
	envBenchFloor   = "KUBESTRAP_BENCH_FLOOR" // the floor binary (bench/floor)
	envBenchKubeadm = "KUBESTRAP_BENCH_KUBEADM"
	envBenchKubectl = "KUBESTRAP_BENCH_KUBECTL"
)

func TestBenchLive(t *testing.T) { runBench(t, "TestBenchLive", benchLive) }

// runBench runs the benchmark test named test: inside its own network
// namespace, with this checkout's kubestrap, bench in the inner run; only
// when KUBESTRAP_BENCH=1. Its output goes straight to stdout, where
// bench/run.sh reads the BENCH lines.
func runBench(t *testing.T, test string, bench func(*testing.T)) {
	if os.Getenv(envBench) != "1" {
		t.Skipf("benchmark: bench/run.sh runs it (%s=1)", envBench)
	}
	if os.Getenv(envBenchInner) == "1" {
		bench(t)
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run=^"+test+"$", "-test.v=true", "-test.count=1", "-test.timeout=20m")
	cmd.Env = append(os.Environ(), envBenchInner+"=1", envKubestrap+"="+ks)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		t.Fatalf("the benchmark in its network namespace failed: %v", err)
	}
}

func benchLive(t *testing.T) {
	h := newHarness(t)
	h.setupNetwork()
	cp := h.startControlPlane()
	ks := h.kubestrapFromOuter()
	nodes := envInt(t, envBenchNodes, 1000)
	guideNodes := envInt(t, envBenchGuide, 20)

	ks.run("rbac-apply", "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)
	clusterFile := h.path("bench-cluster.yaml")
	writeFile(t, clusterFile, []byte(fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: %s
caFile: %s
clusterDNS: [%s]
serviceCIDR: %s
podCIDR: %s
token: {ttl: 24h}
`, cp.url, cp.pki.path("ca.crt"), clusterDNS, serviceCIDR, podCIDR)), 0o644)
	var csv strings.Builder
	for i := range nodes {
		fmt.Fprintf(&csv, "bench-node-%05d,10.201.%d.%d\n", i, i/250, i%250+1)
	}
	nodesFile := h.path("bench-nodes.csv")
	writeFile(t, nodesFile, []byte(csv.String()), 0o644)

	timeIt := func(name string, cmd *exec.Cmd) time.Duration {
		start := time.Now()
		out := h.run(name, cmd)
		d := time.Since(start)
		t.Logf("%s: %.3f s\n%s", name, d.Seconds(), lastLines(out, 3))
		return d
	}

	// The guide: kubeadm token create + 4 kubectl config + sed, per node.
	if kubeadm, kubectl := os.Getenv(envBenchKubeadm), os.Getenv(envBenchKubectl); kubeadm != "" && kubectl != "" {
		guide := timeIt("guide-loop", exec.Command("../bench/guide-loop.sh", fmt.Sprint(guideNodes), cp.adminKubeconfig,
			cp.pki.path("ca.crt"), cp.url, kubeadm, kubectl, h.path("guide")))
		fmt.Printf("BENCH guide_nodes=%d\nBENCH guide_seconds=%.3f\n", guideNodes, guide.Seconds())
	} else {
		t.Logf("%s/%s not set: the guide's loop is not timed", envBenchKubeadm, envBenchKubectl)
	}

	// The floor: only the creates, same concurrency and client limits.
	// Its figure is its create phase alone, as it reports it (the process
	// also deletes what it made, untimed).
	out := h.run("floor", exec.Command(os.Getenv(envBenchFloor), "--kubeconfig", cp.adminKubeconfig, "--count", fmt.Sprint(nodes), "--parallel", "16"))
	var created, inFlight int
	var floor float64
	if _, err := fmt.Sscanf(lastLines(out, 1), "floor: created %d Secrets with %d in flight in %f s", &created, &inFlight, &floor); err != nil || created != nodes {
		t.Fatalf("floor said %q: %v", out, err)
	}
	t.Logf("floor: %s", out)
	fmt.Printf("BENCH floor_nodes=%d\nBENCH floor_seconds=%.3f\n", nodes, floor)

	// Let the apiserver and etcd settle after the floor's deletes.
	time.Sleep(5 * time.Second)

	// kubestrap: tokens from the cluster and every document on disk.
	// Its documents go to tmpfs: this is a comparison of API work, and on
	// this disk (ext4 mounted with discard) the deletes of earlier runs make
	// file creation swing by seconds. The offline figures are on disk.
	liveOut, err := os.MkdirTemp("/dev/shm", "kubestrap-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(liveOut) })
	args := []string{"generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--nodes", nodesFile, "--parallel", "16", "--out", filepath.Join(liveOut, "out")}
	args = append(args, strings.Fields(os.Getenv("KUBESTRAP_BENCH_ARGS"))...)
	live := timeIt("kubestrap-live", exec.Command("/usr/bin/time", append([]string{"-f", "kubestrap cpu: %U user %S sys %M KB"}, append([]string{ks.path}, args...)...)...))
	fmt.Printf("BENCH live_nodes=%d\nBENCH live_seconds=%.3f\n", nodes, live.Seconds())
	docs, _ := filepath.Glob(filepath.Join(liveOut, "out", "*", "config.ign"))
	if len(docs) != nodes {
		t.Fatalf("kubestrap wrote %d Ignition configs, want %d", len(docs), nodes)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		t.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
