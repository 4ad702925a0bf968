package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test runs in a network namespace of its own: a kubelet refuses a
// loopback address as its node IP (and kubestrap refuses it as a node's
// ip), so the nodes need addresses of their own on a local interface, which
// the namespace gives them without touching the host's network. Everything
// (etcd, apiserver, controller-manager, kubelets) listens inside it; the
// namespace, and every address in it, vanish with the test.
const (
	// envInner marks the re-executed test binary inside the namespace.
	envInner = "KUBESTRAP_E2E_INNER"
	// envKubestrap is the kubestrap binary the outer run built (building
	// may need the module proxy, which the namespace cannot reach).
	envKubestrap = "KUBESTRAP_E2E_KUBESTRAP"
)

// Addresses inside the namespace, all on its lo. None is a loopback
// address, so the kubelets take them as node IPs.
const (
	apiserverIP = "10.200.0.1"
	nodeAIP     = "10.200.0.11"
	nodeBIP     = "10.200.0.12"
)

// runIsolated runs this test binary again in a new network namespace, for
// the top-level test named test only, with env (KEY=value) added to its
// environment, its output indented under this test's.
func runIsolated(t *testing.T, test string, env ...string) {
	args := []string{"--net", "--", os.Args[0], "-test.run=^" + test + "$", "-test.v=true", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		// Leave the outer run time to report.
		args = append(args, "-test.timeout="+(time.Until(d)-30*time.Second).Round(time.Second).String())
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(append(os.Environ(), envInner+"=1"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	var copied sync.WaitGroup
	copied.Go(func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			fmt.Fprintf(os.Stdout, "    | %s\n", sc.Text())
		}
		io.Copy(io.Discard, r)
	})
	t.Logf("running in a new network namespace: unshare %s", strings.Join(args, " "))
	err := cmd.Run()
	w.Close()
	copied.Wait()
	if err != nil {
		t.Fatalf("the run in its network namespace failed (its output is above): %v", err)
	}
}

// buildKubestrap builds the CLI under test from this checkout into dir.
func buildKubestrap(t *testing.T, dir string) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kubestrap")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/kubestrap")
	cmd.Dir = repo
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kubestrap in %s: %v\n%s", repo, err, out)
	}
	t.Logf("built kubestrap from %s (%s)", repo, time.Since(start).Round(100*time.Millisecond))
	return path
}

// setupNetwork brings up the namespace's lo with the cluster's addresses,
// after checking it is a fresh namespace (only lo, down): never the host's.
func (h *harness) setupNetwork() {
	h.t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		h.t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp != 0 {
		h.t.Fatalf("%s is set but this is not a fresh network namespace (interfaces: %v): refusing to add addresses", envInner, ifs)
	}
	h.run("ip-lo-up", exec.Command("ip", "link", "set", "lo", "up"))
	for _, ip := range []string{apiserverIP, nodeAIP, nodeBIP} {
		h.run("ip-addr-"+ip, exec.Command("ip", "address", "add", ip+"/32", "dev", "lo"))
	}
}
