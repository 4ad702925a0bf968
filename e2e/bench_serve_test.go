package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestBenchServe is serve's half of bench/run.sh, on the e2e control plane:
//
//   - the storm: 1,000 machines ask /ignition at the same instant, each on
//     its own connection, against the floor: bench/floor creating as many
//     token Secrets with as many in flight as serve lets mint at once
//     (--parallel). Each machine's latency is kept for the percentiles;
//   - the iPXE endpoints, which mint nothing: requests per second on
//     loopback over keep-alive connections, against bench/floor -http, a
//     bare net/http server answering the same script, under the same load.
//
// It prints "BENCH key=value" lines; it only runs when KUBESTRAP_BENCH=1.
func TestBenchServe(t *testing.T) {
	if os.Getenv(envBench) != "1" {
		t.Skipf("benchmark: bench/run.sh runs it (%s=1)", envBench)
	}
	if os.Getenv(envBenchInner) == "1" {
		benchServe(t)
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run=^TestBenchServe$", "-test.v=true", "-test.count=1", "-test.timeout=20m")
	cmd.Env = append(os.Environ(), envBenchInner+"=1", envKubestrap+"="+ks)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		t.Fatalf("the benchmark in its network namespace failed: %v", err)
	}
}

// serveParallel is serve's --parallel in the storm, and the floor's.
const serveParallel = 64

func benchServe(t *testing.T) {
	h := newHarness(t)
	h.setupNetwork()
	cp := h.startControlPlane()
	ks := h.kubestrapFromOuter()
	machines := envInt(t, envBenchNodes, 1000)
	floorBin := os.Getenv(envBenchFloor)
	if floorBin == "" {
		t.Fatalf("%s is not set (bench/run.sh builds bench/floor)", envBenchFloor)
	}
	ks.run("rbac-apply", "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)
	clusterFile := h.path("bench-cluster.yaml")
	writeFile(t, clusterFile, []byte(fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: %s
caFile: %s
clusterDNS: [%s]
serviceCIDR: %s
podCIDR: %s
`, cp.url, cp.pki.path("ca.crt"), clusterDNS, serviceCIDR, podCIDR)), 0o644)
	var nodes strings.Builder
	for i := range machines {
		fmt.Fprintf(&nodes, "- {name: storm-%05d, mac: \"%s\"}\n", i, benchMAC(i))
	}
	writeFile(t, h.path("bench-nodes.yaml"), []byte(nodes.String()), 0o644)
	writeFile(t, h.path("boot-profile.yaml"), []byte(`kernel: http://`+apiserverIP+`/flatcar_production_pxe.vmlinuz
initrd: [http://`+apiserverIP+`/flatcar_production_pxe_image.cpio.gz]
args: [initrd=flatcar_production_pxe_image.cpio.gz, flatcar.first_boot=yes, "ignition.config.url={ignition_url}"]
`), 0o644)

	out := h.run("floor", exec.Command(floorBin, "--kubeconfig", cp.adminKubeconfig, "--count", fmt.Sprint(machines), "--parallel", fmt.Sprint(serveParallel)))
	var created, inFlight int
	var floor float64
	if _, err := fmt.Sscanf(lastLines(out, 1), "floor: created %d Secrets with %d in flight in %f s", &created, &inFlight, &floor); err != nil || created != machines {
		t.Fatalf("floor said %q: %v", out, err)
	}
	t.Logf("floor: %s", out)
	time.Sleep(5 * time.Second)

	url := h.startServe(ks, cp, "serve-bench", clusterFile, "--nodes", h.path("bench-nodes.yaml"),
		"--boot-profile", h.path("boot-profile.yaml"), "--parallel", fmt.Sprint(serveParallel))

	// The storm: every machine on its own connection, all released at once.
	lat := make([]time.Duration, machines)
	codes := make([]int, machines)
	ids := make([]string, machines)
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}, Timeout: 2 * time.Minute}
	for i := range machines {
		wg.Go(func() {
			<-startLine
			t0 := time.Now()
			resp, err := client.Get(fmt.Sprintf("%s/ignition?mac=%s", url, benchMAC(i)))
			if err != nil {
				codes[i] = -1
				lat[i] = time.Since(t0)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			lat[i], codes[i] = time.Since(t0), resp.StatusCode
			ids[i], _ = tokenIn(body)
		})
	}
	// Let every goroutine reach the line.
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	close(startLine)
	wg.Wait()
	storm := time.Since(t0)
	for i, c := range codes {
		if c != http.StatusOK || ids[i] == "" {
			t.Fatalf("storm-%05d: status %d, token %q", i, c, ids[i])
		}
	}
	if got := len(h.serveTokens("")); got != machines {
		t.Fatalf("after the storm %d serve tokens exist, want %d", got, machines)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))].Seconds() * 1000 }
	t.Logf("storm: %d machines in %.3f s (p50 %.0f ms, p99 %.0f ms, max %.0f ms); floor %.3f s: %.2fx",
		machines, storm.Seconds(), pct(.5), pct(.99), lat[len(lat)-1].Seconds()*1000, floor, storm.Seconds()/floor)
	fmt.Printf("BENCH storm_machines=%d\nBENCH storm_parallel=%d\nBENCH storm_floor_seconds=%.3f\nBENCH storm_seconds=%.3f\nBENCH storm_p50_ms=%.0f\nBENCH storm_p99_ms=%.0f\n",
		machines, serveParallel, floor, storm.Seconds(), pct(.5), pct(.99))

	// The iPXE endpoints against the bare server, the same load each.
	floorAddr := fmt.Sprintf("%s:%d", apiserverIP, freePort(h, apiserverIP))
	fp := h.start("floor-http", exec.Command(floorBin, "-http", floorAddr))
	h.waitFor("floor -http answers", 30*time.Second, []*proc{fp}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, http.DefaultClient, "http://"+floorAddr+"/")
	})
	bare := loadRPS(t, "http://"+floorAddr+"/boot.ipxe")
	boot := loadRPS(t, url+"/boot.ipxe")
	ipxe := loadRPS(t, url+"/ipxe?mac="+benchMAC(7))
	t.Logf("requests/s on loopback: /boot.ipxe %.0f, /ipxe %.0f, bare net/http %.0f", boot, ipxe, bare)
	fmt.Printf("BENCH http_floor_rps=%.0f\nBENCH bootipxe_rps=%.0f\nBENCH ipxe_rps=%.0f\n", bare, boot, ipxe)
}

func benchMAC(i int) string { return fmt.Sprintf("52:54:00:7e:%02x:%02x", i/256, i%256) }

// loadRPS is the requests per second 32 keep-alive clients get from url
// over 3 s, after a 0.5 s warm-up; every answer must be a 200.
func loadRPS(t *testing.T, url string) float64 {
	t.Helper()
	const clients = 32
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		count, bad atomic.Int64
		counting   atomic.Bool
		stop       atomic.Bool
		wg         sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := c.Get(url)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad.Add(1)
				} else if counting.Load() {
					count.Add(1)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(3 * time.Second)
	counting.Store(false)
	elapsed := time.Since(t0)
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%s: %d failed requests under load", url, bad.Load())
	}
	return float64(count.Load()) / elapsed.Seconds()
}
