package e2e

import (
	"cmp"
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
// It prints "BENCH key=value" lines; it only runs when KUBESTRAP_BENCH=1
// (runBench).
func TestBenchServe(t *testing.T) { runBench(t, "TestBenchServe", benchServe) }

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
	// Every round's machines are new: a storm is of first boots.
	rounds := envInt(t, "KUBESTRAP_BENCH_ROUNDS", 3)
	var nodes strings.Builder
	for i := range machines * rounds {
		fmt.Fprintf(&nodes, "- {name: storm-%05d, mac: \"%s\"}\n", i, benchMAC(i))
	}
	writeFile(t, h.path("bench-nodes.yaml"), []byte(nodes.String()), 0o644)
	writeFile(t, h.path("boot-profile.yaml"), []byte(`kernel: http://`+apiserverIP+`/flatcar_production_pxe.vmlinuz
initrd: [http://`+apiserverIP+`/flatcar_production_pxe_image.cpio.gz]
args: [initrd=flatcar_production_pxe_image.cpio.gz, flatcar.first_boot=yes, "ignition.config.url={ignition_url}"]
`), 0o644)
	url := h.startServe(ks, cp, "serve-bench", clusterFile, "--nodes", h.path("bench-nodes.yaml"),
		"--boot-profile", h.path("boot-profile.yaml"), "--parallel", fmt.Sprint(serveParallel))

	// This machine's speed swings by half from one second to the next:
	// floor and storm alternate, round by round, and the round with the
	// median ratio is the figure.
	type round struct {
		floor, storm, p50, p99 float64
	}
	var results []round
	for r := range rounds {
		time.Sleep(3 * time.Second)
		floor := benchFloor(h, cp, floorBin, machines)
		time.Sleep(3 * time.Second)
		storm, lat := benchStorm(h, cp, url, r*machines, machines)
		pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))].Seconds() * 1000 }
		results = append(results, round{floor, storm.Seconds(), pct(.5), pct(.99)})
		t.Logf("round %d: storm of %d machines in %.3f s (p50 %.0f ms, p99 %.0f ms); floor %.3f s: %.2fx",
			r+1, machines, storm.Seconds(), pct(.5), pct(.99), floor, storm.Seconds()/floor)
	}
	if got := len(h.serveTokens("")); got != machines*rounds {
		t.Fatalf("after the storms %d serve tokens exist, want %d", got, machines*rounds)
	}
	slices.SortFunc(results, func(a, b round) int { return cmp.Compare(a.storm/a.floor, b.storm/b.floor) })
	m := results[len(results)/2]
	t.Logf("median round: storm %.3f s, floor %.3f s: %.2fx", m.storm, m.floor, m.storm/m.floor)
	fmt.Printf("BENCH storm_machines=%d\nBENCH storm_parallel=%d\nBENCH storm_rounds=%d\nBENCH storm_floor_seconds=%.3f\nBENCH storm_seconds=%.3f\nBENCH storm_p50_ms=%.0f\nBENCH storm_p99_ms=%.0f\n",
		machines, serveParallel, rounds, m.floor, m.storm, m.p50, m.p99)

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

// proc is the process the harness started as name.
func (h *harness) proc(name string) *proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.procs {
		if p.name == name {
			return p
		}
	}
	h.t.Fatalf("no process %s", name)
	return nil
}

// cpuTime is the user and system CPU time p has used so far.
func cpuTime(t *testing.T, p *proc) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * time.Second / 100
}

// benchFloor runs bench/floor: the creates of machines token Secrets with
// serve's concurrency (then it deletes them, untimed).
func benchFloor(h *harness, cp *controlPlane, floorBin string, machines int) float64 {
	h.t.Helper()
	out := h.run("floor", exec.Command(floorBin, "--kubeconfig", cp.adminKubeconfig, "--count", fmt.Sprint(machines), "--parallel", fmt.Sprint(serveParallel)))
	var created, inFlight int
	var floor float64
	if _, err := fmt.Sscanf(lastLines(out, 1), "floor: created %d Secrets with %d in flight in %f s", &created, &inFlight, &floor); err != nil || created != machines {
		h.t.Fatalf("floor said %q: %v", out, err)
	}
	return floor
}

// benchStorm has machines first..first+machines-1 GET their Ignition at
// one instant, each on its own connection; it returns the time until the
// last answer and each machine's latency, sorted.
func benchStorm(h *harness, cp *controlPlane, url string, first, machines int) (time.Duration, []time.Duration) {
	h.t.Helper()
	lat := make([]time.Duration, machines)
	codes := make([]int, machines)
	ids := make([]string, machines)
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Minute}
	for i := range machines {
		wg.Go(func() {
			<-startLine
			t0 := time.Now()
			resp, err := client.Get(fmt.Sprintf("%s/ignition?mac=%s", url, benchMAC(first+i)))
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
	procs := map[string]*proc{"serve": h.proc("serve-bench"), "kube-apiserver": cp.apiserver, "etcd": cp.etcd}
	cpu0 := map[string]time.Duration{}
	for name, p := range procs {
		cpu0[name] = cpuTime(h.t, p)
	}
	t0 := time.Now()
	close(startLine)
	wg.Wait()
	storm := time.Since(t0)
	var spent []string
	for _, name := range []string{"serve", "kube-apiserver", "etcd"} {
		spent = append(spent, fmt.Sprintf("%s %.2f s", name, (cpuTime(h.t, procs[name])-cpu0[name]).Seconds()))
	}
	h.t.Logf("storm: CPU spent: %s", strings.Join(spent, ", "))
	for i, c := range codes {
		if c != http.StatusOK || ids[i] == "" {
			h.t.Fatalf("storm-%05d: status %d, token %q", first+i, c, ids[i])
		}
	}
	slices.Sort(lat)
	return storm, lat
}
