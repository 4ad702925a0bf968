package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// TestServe boots stock machines from `kubestrap serve` over HTTP, the way
// a PXE fleet boots: one whose Ignition fetches its whole config from
// /ignition (config.replace, as ignition.config.url does on a PXE boot),
// one whose cloud-init fetches its NoCloud seed from /nocloud/<mac>/
// (seedfrom). Both must join. Before that, an unknown MAC gets 404 and
// nothing is minted, and asking twice deletes the first, unused token;
// after, asking for a joined node keeps the token its kubelet used. Last,
// the API server dies in the middle of a storm of requests: machines get
// 503 with Retry-After, and every document that was served holds a token
// that exists.
func TestServe(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		serveE2E(t)
		return
	}
	requireE2E(t)
	ks := buildKubestrap(t, t.TempDir())
	runIsolated(t, "TestServe", envKubestrap+"="+ks, envRootfs+"="+buildRootfs(t))
}

const (
	serveCloudInitMAC = "52:54:00:5e:00:11"
	serveIgnitionMAC  = "52:54:00:5e:00:12"
	unknownMAC        = "52:54:00:5e:00:99"
)

func serveE2E(t *testing.T) {
	h := newHarness(t)
	start := time.Now()
	h.setupNetwork()
	cp := h.startControlPlane()
	h.diagnostics = append(h.diagnostics, h.clusterDiagnostics)
	ks := h.kubestrapFromOuter()
	ks.run("rbac-apply", "rbac", "apply", "--kubeconfig", cp.adminKubeconfig)
	srv := h.serveKubelet()

	ci := &stockNode{Name: "net-cloud-init", IP: nodeAIP, MAC: serveCloudInitMAC, Port: 10250, HealthzPort: 10248}
	ign := &stockNode{Name: "net-ignition", IP: nodeBIP, MAC: serveIgnitionMAC, Port: 10260, HealthzPort: 10258}
	// Two servers, one per os, as two replicas of different fleets would
	// run: all their state is in the API server.
	debian := h.writeStockCluster("serve-debian.yaml", "debian", cp, srv, ci)
	generic := h.writeStockCluster("serve-ignition.yaml", "", cp, srv, ign)
	ciURL := h.startServe(ks, cp, "serve-debian", debian)
	ignURL := h.startServe(ks, cp, "serve-ignition", generic)

	// Unknown machine: 404, nothing minted. A debian cluster serves no
	// Ignition.
	before := h.serveTokens("")
	for _, u := range []string{
		ignURL + "/ignition?mac=" + unknownMAC,
		ciURL + "/nocloud/" + unknownMAC + "/user-data",
		ciURL + "/ignition?mac=" + serveCloudInitMAC,
	} {
		if code, _, _ := httpGet(h, u); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", u, code)
		}
	}
	if after := h.serveTokens(""); len(after) != len(before) {
		t.Errorf("404s minted tokens: %d before, %d after", len(before), len(after))
	}
	t.Logf("unknown MAC %s: 404, no token minted", unknownMAC)

	// Asking twice: the first token, never used, is deleted.
	first := h.fetchToken(ignURL + "/ignition?mac=" + strings.ReplaceAll(serveIgnitionMAC, ":", "-"))
	second := h.fetchToken(ignURL + "/ignition?mac=" + strings.ToUpper(serveIgnitionMAC))
	if ids := h.serveTokens(ign.Name); !slices.Equal(ids, []string{second}) {
		t.Errorf("after two requests, %s has tokens %v, want only the second's %s (the first was %s)", ign.Name, ids, second, first)
	}
	t.Logf("refetch: token %s deleted, %s the only one of %s", first, second, ign.Name)

	// The machines. Ignition fetches its config from the server itself:
	// the config ignition-apply is given only points there.
	ign.machine = h.newMachine("vm-net-ignition")
	ign.machine.vendorKubelet()
	ign.machine.ignitionOS()
	pointer := fmt.Sprintf(`{"ignition":{"version":"3.4.0","config":{"replace":{"source":%q}}}}`, ignURL+"/ignition?mac="+serveIgnitionMAC)
	writeFile(t, h.path("pointer.ign"), []byte(pointer), 0o644)
	h.ignitionApply(ign.machine, h.path("pointer.ign"))

	ci.machine = h.newMachine("vm-net-cloud-init")
	ci.machine.vendorKubelet()
	ci.machine.seedNoCloudNet(ciURL + "/nocloud/" + serveCloudInitMAC + "/")

	booted := time.Now()
	for _, n := range []*stockNode{ci, ign} {
		h.boot(n.machine)
	}
	for _, n := range []*stockNode{ci, ign} {
		h.checkStockJoin(n, srv.sha256, booted)
	}
	// The tokens the kubelets used are the last ones served.
	for _, n := range []*stockNode{ci, ign} {
		used := tokenIDOf(t, n.machine.path(bootstrapKubeconfigPath))
		if ids := h.serveTokens(n.Name); !slices.Equal(ids, []string{used}) {
			t.Errorf("%s: tokens %v after the boot, want only the used %s", n.Name, ids, used)
		}
		// Asking again for a joined node mints another and keeps the used one.
		again := h.fetchToken(map[*stockNode]string{ci: ciURL + "/nocloud/" + n.MAC + "/user-data", ign: ignURL + "/ignition?mac=" + n.MAC}[n])
		if ids := h.serveTokens(n.Name); !slices.Equal(ids, sorted(used, again)) {
			t.Errorf("%s: tokens %v after a refetch, want the used %s and the new %s", n.Name, ids, used, again)
		}
		t.Logf("%s: joined with token %s (served over HTTP); a refetch minted %s and kept the used one", n.Name, used, again)
	}
	for _, n := range []*stockNode{ci, ign} {
		t.Logf("%s: powered off in %s", n.machine.name, n.machine.poweroff().Round(10*time.Millisecond))
	}
	h.serveStormOutage(ks, cp)
	t.Logf("serve: both machines joined from documents fetched over HTTP; %s in all", time.Since(start).Round(time.Second))
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// startServe runs `kubestrap serve` on a free port of the test's address
// and waits until it is ready.
func (h *harness) startServe(ks *kubestrap, cp *controlPlane, name, clusterFile string, args ...string) string {
	h.t.Helper()
	addr := fmt.Sprintf("%s:%d", apiserverIP, freePort(h, apiserverIP))
	argv := append([]string{"serve", "-f", clusterFile, "--listen", addr}, args...)
	if !slices.Contains(args, "--kubeconfig") {
		argv = append(argv, "--kubeconfig", cp.adminKubeconfig)
	}
	p := h.start(name, exec.Command(ks.path, argv...))
	url := "http://" + addr
	h.waitFor(name+" ready (/readyz)", time.Minute, []*proc{p, cp.apiserver}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, http.DefaultClient, url+"/readyz")
	})
	h.t.Logf("%s: kubestrap %s", name, strings.Join(argv, " "))
	return url
}

func httpGet(h *harness, url string) (int, http.Header, []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// fetchToken GETs a document and returns the id of the token it holds.
func (h *harness) fetchToken(url string) string {
	h.t.Helper()
	code, hdr, body := httpGet(h, url)
	if code != http.StatusOK {
		h.t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if cc := hdr.Get("Cache-Control"); cc != "no-store" {
		h.t.Errorf("GET %s: Cache-Control %q, want no-store: the document holds a token", url, cc)
	}
	id, ok := tokenIn(body)
	if !ok {
		h.t.Fatalf("GET %s: no bootstrap kubeconfig in the document:\n%s", url, body)
	}
	return id
}

// tokenIn finds the bootstrap kubeconfig's token id in an Ignition config
// or a #cloud-config, by the kubeconfig's own text: both carry it, as a
// data URL or a write_files entry.
func tokenIn(doc []byte) (string, bool) {
	kc, ok := ignitionFile(doc, bootstrapKubeconfigPath)
	if !ok {
		if kc, ok = cloudConfigFile(doc, bootstrapKubeconfigPath); !ok {
			return "", false
		}
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		return "", false
	}
	return bootstrapTokenID(cfg)
}

// bootstrapTokenID is the id of the bootstrap token a kubeconfig's current
// context authenticates with.
func bootstrapTokenID(cfg *clientcmdapi.Config) (string, bool) {
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return "", false
	}
	id, _, ok := strings.Cut(cfg.AuthInfos[ctx.AuthInfo].Token, ".")
	return id, ok
}

// tokenIDOf reads a node's bootstrap kubeconfig's token id.
func tokenIDOf(t *testing.T, path string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := bootstrapTokenID(cfg)
	if !ok {
		t.Fatalf("%s: no bootstrap token in the current context", path)
	}
	return id
}

// serveTokens lists the ids of the tokens serve minted for node ("": for
// any node), sorted.
func (h *harness) serveTokens(node string) []string {
	h.t.Helper()
	sel := "app.kubernetes.io/managed-by=kubestrap,kubestrap.dev/source=serve"
	if node != "" {
		sel += ",kubestrap.dev/node=" + node
	}
	list, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).List(h.ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, s := range list.Items {
		ids = append(ids, string(s.Data["token-id"]))
	}
	slices.Sort(ids)
	return ids
}

// serveStormOutage starts a server for a fleet of machines that never
// boot, has them all ask at once, and kills the API server part-way.
func (h *harness) serveStormOutage(ks *kubestrap, cp *controlPlane) {
	h.t.Helper()
	const machines, parallel, killAfter = 240, 24, 60
	var nodes strings.Builder
	for i := range machines {
		fmt.Fprintf(&nodes, "- name: storm-%03d\n  mac: \"52:54:00:6e:%02x:%02x\"\n", i, i/256, i%256)
	}
	writeFile(h.t, h.path("storm-nodes.yaml"), []byte(nodes.String()), 0o644)
	// As the account deploy/serve/ gives it, with exactly its rights.
	kubeconfig := h.serveAccountKubeconfig(cp)
	h.checkServeAccountConfined(kubeconfig)
	url := h.startServe(ks, cp, "serve-storm", h.path("serve-ignition.yaml"), "--nodes", h.path("storm-nodes.yaml"),
		"--kubeconfig", kubeconfig, "--namespace", "kubestrap")

	type result struct {
		code       int
		retryAfter string
		id         string
	}
	results := make([]result, machines)
	var (
		mu     sync.Mutex
		done   int
		killed = make(chan struct{})
		once   sync.Once
		wg     sync.WaitGroup
		next   = make(chan int)
	)
	for range parallel {
		wg.Go(func() {
			for i := range next {
				u := fmt.Sprintf("%s/ignition?mac=52:54:00:6e:%02x:%02x", url, i/256, i%256)
				r := result{}
				resp, err := http.Get(u)
				if err != nil {
					r.code = -1
				} else {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					r.code, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
					if r.code == http.StatusOK {
						r.id, _ = tokenIn(body)
					}
				}
				mu.Lock()
				results[i] = r
				done++
				if done == killAfter {
					once.Do(func() { close(killed) })
				}
				mu.Unlock()
			}
		})
	}
	for i := range machines {
		if i == killAfter+parallel {
			// The rest ask once the API server is gone; those in flight
			// meet its death at any point of their mint.
			<-killed
			h.killAPIServer(cp)
		}
		next <- i
	}
	close(next)
	wg.Wait()
	h.restartAPIServer(cp)

	counts := map[int]int{}
	var served []string
	for i, r := range results {
		counts[r.code]++
		switch r.code {
		case http.StatusOK:
			if r.id == "" {
				h.t.Errorf("storm-%03d: 200 without a token in the document", i)
			}
			served = append(served, r.id)
		case http.StatusServiceUnavailable:
			if r.retryAfter == "" {
				h.t.Errorf("storm-%03d: 503 without Retry-After", i)
			}
		default:
			h.t.Errorf("storm-%03d: status %d, want 200 or 503", i, r.code)
		}
	}
	if counts[http.StatusOK] < killAfter || counts[http.StatusServiceUnavailable] == 0 {
		h.t.Errorf("storm: %v by status: want at least %d documents before the outage and 503s after", counts, killAfter)
	}
	// Every document served holds a live token.
	for _, id := range served {
		if _, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(h.ctx, "bootstrap-token-"+id, metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				h.t.Errorf("a served document holds token %s, which does not exist", id)
			} else {
				h.t.Fatal(err)
			}
		}
	}
	h.t.Logf("storm of %d machines, API server killed after %d answers: %d documents (each token exists), %d × 503 with Retry-After",
		machines, killAfter, counts[http.StatusOK], counts[http.StatusServiceUnavailable])
	// A machine served in the storm asks again, under the account's
	// rights: its storm token is deleted, by name, through the policy.
	again := h.fetchToken(url + "/ignition?mac=52:54:00:6e:00:00")
	if ids := h.serveTokens("storm-000"); !slices.Equal(ids, []string{again}) {
		h.t.Errorf("storm-000 has tokens %v after asking again, want only %s (its storm token was %s)", ids, again, results[0].id)
	}
	h.t.Logf("storm-000 asked again as serve's account: token %s deleted, %s the only one", results[0].id, again)
	metrics := lastMatching(string(func() []byte { _, _, b := httpGet(h, url+"/metrics"); return b }()), `kubestrap_serve_tokens_minted_total`)
	h.t.Logf("serve-storm /metrics: %s", metrics)
}

// ignitionFile returns the contents of the file at path in an Ignition
// config, decoded from its data URL.
func ignitionFile(doc []byte, path string) ([]byte, bool) {
	var cfg struct {
		Storage struct {
			Files []struct {
				Path     string `json:"path"`
				Contents struct {
					Source      string `json:"source"`
					Compression string `json:"compression"`
				} `json:"contents"`
			} `json:"files"`
		} `json:"storage"`
	}
	if json.Unmarshal(doc, &cfg) != nil {
		return nil, false
	}
	for _, f := range cfg.Storage.Files {
		if f.Path == path {
			data, err := decodeDataURL(f.Contents.Source)
			if err == nil && f.Contents.Compression == "gzip" {
				var zr *gzip.Reader
				if zr, err = gzip.NewReader(bytes.NewReader(data)); err == nil {
					data, err = io.ReadAll(zr)
				}
			}
			return data, err == nil
		}
	}
	return nil, false
}

// cloudConfigFile returns the content of write_files' entry for path.
func cloudConfigFile(doc []byte, path string) ([]byte, bool) {
	var cfg struct {
		WriteFiles []struct {
			Path     string `json:"path"`
			Content  string `json:"content"`
			Encoding string `json:"encoding"`
		} `json:"write_files"`
	}
	if !bytes.HasPrefix(doc, []byte("#cloud-config\n")) || yaml.Unmarshal(doc, &cfg) != nil {
		return nil, false
	}
	for _, f := range cfg.WriteFiles {
		if f.Path != path {
			continue
		}
		switch f.Encoding {
		case "":
			return []byte(f.Content), true
		case "b64", "base64":
			data, err := base64.StdEncoding.DecodeString(f.Content)
			return data, err == nil
		}
	}
	return nil, false
}

// decodeDataURL decodes an RFC 2397 data URL, as Ignition writes them.
func decodeDataURL(u string) ([]byte, error) {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return nil, fmt.Errorf("not a data URL: %.40q", u)
	}
	header, data, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, fmt.Errorf("data URL without a comma")
	}
	if strings.HasSuffix(header, ";base64") {
		return base64.StdEncoding.DecodeString(data)
	}
	s, err := neturl.PathUnescape(data)
	return []byte(s), err
}
