package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIPXEBoot is the iPXE path with a real iPXE: QEMU (software
// emulation, no disk, user-mode network) boots Debian's iPXE ROM, whose
// DHCP answer names serve's /boot.ipxe; iPXE chains to /ipxe with what it
// knows of itself, and fetches the kernel and initrd the boot profile
// names. The test then fetches every URL the script names itself: the
// kernel, the initrd and the ignition.config.url, which must be the node's
// Ignition config with a live token.
func TestIPXEBoot(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		ipxeBoot(t)
		return
	}
	requireE2E(t)
	for _, tool := range []string{"qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install qemu-system-x86 ipxe-qemu)", tool)
		}
	}
	ks := buildKubestrap(t, t.TempDir())
	runIsolated(t, "TestIPXEBoot", envKubestrap+"="+ks)
}

// ipxeMAC is the emulated NIC's address, and the node's.
const ipxeMAC = "52:54:00:5e:00:21"

func ipxeBoot(t *testing.T) {
	h := newHarness(t)
	h.setupNetwork()
	cp := h.startControlPlane()
	ks := h.kubestrapFromOuter()
	ks.run("rbac-apply", "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)

	// QEMU's user-mode network reaches the host as 10.0.2.2, which it
	// connects to on this namespace's loopback.
	images := h.serveImages()
	profile := h.path("boot-profile.yaml")
	writeFile(t, profile, []byte(fmt.Sprintf(`kernel: http://10.0.2.2:%d/flatcar_production_pxe.vmlinuz
initrd: [http://10.0.2.2:%d/flatcar_production_pxe_image.cpio.gz]
args: [initrd=flatcar_production_pxe_image.cpio.gz, flatcar.first_boot=yes, "ignition.config.url={ignition_url}", console=ttyS0]
`, images.port, images.port)), 0o644)
	cluster := h.path("ipxe.yaml")
	writeFile(t, cluster, []byte(fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
os: flatcar
apiServer: %s
caFile: %s
clusterDNS: [%s]
serviceCIDR: %s
podCIDR: %s
nodes:
- name: pxe-node
  mac: "%s"
`, cp.url, cp.pki.path("ca.crt"), clusterDNS, serviceCIDR, podCIDR, ipxeMAC)), 0o644)
	port := freePort(h, "127.0.0.1")
	serveURL := fmt.Sprintf("http://10.0.2.2:%d", port)
	p := h.start("serve-ipxe", exec.Command(ks.path, "serve", "--kubeconfig", cp.adminKubeconfig, "-f", cluster,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--url", serveURL, "--boot-profile", profile))
	local := fmt.Sprintf("http://127.0.0.1:%d", port)
	h.waitFor("serve ready (/readyz)", time.Minute, []*proc{p}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, http.DefaultClient, local+"/readyz")
	})

	start := time.Now()
	serial := h.path("logs", "qemu-serial.log")
	q := h.start("qemu-ipxe", exec.Command("qemu-system-x86_64", "-machine", "accel=tcg", "-m", "256", "-smp", "1",
		"-nographic", "-display", "none", "-monitor", "none", "-no-reboot", "-boot", "order=n",
		"-netdev", "user,id=n0,bootfile="+serveURL+"/boot.ipxe",
		"-device", "virtio-net-pci,netdev=n0,mac="+ipxeMAC,
		"-serial", "file:"+serial))
	h.waitFor("iPXE fetched the kernel and the initrd", 5*time.Minute, []*proc{q, p}, func(ctx context.Context) (bool, string) {
		got := images.fetched()
		return len(got) == 2, fmt.Sprintf("images fetched: %v; console: %s", got, lastLine(serial, "http"))
	})
	q.stop()
	t.Logf("iPXE fetched %v in %s; its console:\n%s", images.fetched(), time.Since(start).Round(time.Second), consoleLines(serial, "http://", "Filename", "net0: "))
	for _, want := range []string{`"endpoint":"boot.ipxe","status":200`, `"endpoint":"ipxe","status":200`} {
		if line := lastLine(p.log, want); line == "" {
			t.Errorf("serve's log has no %s: iPXE did not come through it", want)
		} else if want != `"endpoint":"boot.ipxe","status":200` && !strings.Contains(line, `"node":"pxe-node"`) {
			t.Errorf("serve matched iPXE to no node: %s", line)
		}
	}

	// Every URL the script names, fetched as iPXE and the kernel would.
	code, _, body := httpGet(h, local+"/ipxe?mac="+strings.ReplaceAll(ipxeMAC, ":", "-")+"&uuid=00000000-0000-0000-0000-000000000000&serial=&hostname=")
	if code != http.StatusOK {
		t.Fatalf("/ipxe: %d %s", code, body)
	}
	t.Logf("/ipxe:\n%s", body)
	var ignURL string
	var urls []string
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "kernel" && f[0] != "initrd") {
			continue
		}
		urls = append(urls, f[1])
		for _, arg := range f[2:] {
			if v, ok := strings.CutPrefix(arg, "ignition.config.url="); ok {
				ignURL = v
			}
		}
	}
	if len(urls) != 2 || ignURL != serveURL+"/ignition?mac="+ipxeMAC {
		t.Fatalf("/ipxe names %v and ignition.config.url %q, want the kernel, the initrd and %s/ignition?mac=%s", urls, ignURL, serveURL, ipxeMAC)
	}
	for _, u := range urls {
		if code, _, _ := httpGet(h, strings.Replace(u, "10.0.2.2", "127.0.0.1", 1)); code != http.StatusOK {
			t.Errorf("GET %s: %d", u, code)
		}
	}
	id := h.fetchToken(strings.Replace(ignURL, serveURL, local, 1))
	if ids := h.serveTokens("pxe-node"); len(ids) != 1 || ids[0] != id {
		t.Errorf("pxe-node's tokens %v, want the served %s", ids, id)
	}
	t.Logf("the script's ignition.config.url is pxe-node's Ignition config, with live token %s", id)
}

// imageServer serves stand-ins for the PXE kernel and initrd on loopback,
// and records what was fetched.
type imageServer struct {
	port int
	mu   sync.Mutex
	got  []string
}

func (s *imageServer) fetched() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func (h *harness) serveImages() *imageServer {
	h.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	s := &imageServer{port: l.Addr().(*net.TCPAddr).Port}
	blob := []byte(strings.Repeat("not a kernel\n", 1000))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/flatcar_production_pxe.vmlinuz", "/flatcar_production_pxe_image.cpio.gz":
		default:
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, r.URL.Path)
		s.mu.Unlock()
		w.Write(blob)
	})}
	go srv.Serve(l)
	h.t.Cleanup(func() { srv.Close() })
	return s
}

// consoleLines are the lines of the console log holding any of substrs,
// without terminal escapes.
func consoleLines(path string, substrs ...string) string {
	data, _ := os.ReadFile(path)
	var out []string
	for _, line := range strings.Split(strings.ReplaceAll(string(data), "\r", "\n"), "\n") {
		line = strings.Map(func(r rune) rune {
			if r == 0x1b {
				return -1
			}
			return r
		}, line)
		for _, s := range substrs {
			if strings.Contains(line, s) {
				out = append(out, "  "+strings.TrimSpace(line))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
