package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/pipeline"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
	"github.com/kubestrap/kubestrap/internal/parseback"
)

// testNow is after the fixture CA's notBefore.
var testNow = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

// clusterYAML has nodes in every notation serve matches: node-a by a
// hyphenated uppercase MAC, uuid, serial and hostname, without ip; node-b
// with an ip and a dotted MAC; node-c with a static network (its ip from
// it); node-d with only a serial holding "${", "/", "%" and "&".
const clusterYAML = `apiVersion: kubestrap.dev/v1alpha1
kind: Cluster
apiServer: https://172.27.129.80:6443
caFile: CAFILE
clusterDNS: [10.254.0.2]
serviceCIDR: 10.254.0.0/16
podCIDR: 172.30.0.0/16
kubernetesVersion: v1.37.2
token:
  ttl: 24h
kubelet:
  profile: hardened
  binary: /opt/k8s/bin/kubelet
nodes:
- name: node-a
  mac: "52-54-00-AA-00-01"
  uuid: 4C4C4544-0037-3010-8030-B7C04F4E4E32
  serial: SN-A-0001
  hostname: Rack1-A.example.com.
- name: node-b
  ip: 172.27.129.111
  mac: "5254.00aa.0002"
  uuid: 4c4c4544-0037-3010-8030-b7c04f4e4e33
  serial: SN-B-0002
  hostname: rack1-b
- name: node-c
  mac: "52:54:00:aa:00:03"
  network:
    addresses: [172.27.129.112/24]
    gateway: 172.27.129.1
    dns: [172.27.129.2]
- name: node-d
  serial: "D${x}/1%2&3"
`

func testCluster(t testing.TB) *model.Cluster {
	t.Helper()
	ca, err := filepath.Abs("../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(f, []byte(strings.Replace(clusterYAML, "CAFILE", ca, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := model.Load(context.Background(), model.Sources{ClusterFile: f}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeMinter records each Mint and mints "tkNNNN.s3cr3tvNNNNNNNNN", or
// fails with err, or (block) waits for the context to end.
type fakeMinter struct {
	mu      sync.Mutex
	calls   []string
	minted  []token.Token
	err     error
	block   bool
	timeout time.Duration // the last Mint's context deadline, from its start
}

func (f *fakeMinter) Mint(ctx context.Context, node string) (token.Minted, error) {
	f.mu.Lock()
	f.calls = append(f.calls, node)
	if d, ok := ctx.Deadline(); ok {
		f.timeout = time.Until(d)
	}
	err, block := f.err, f.block
	n := len(f.calls)
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return token.Minted{}, fmt.Errorf("node %s: %w", node, ctx.Err())
	}
	if err != nil {
		return token.Minted{}, err
	}
	tok, err := token.New(fmt.Sprintf("tk%04d.s3cr3tv%09d", n, n), node, testNow.Add(time.Hour), false)
	if err != nil {
		return token.Minted{}, err
	}
	f.mu.Lock()
	f.minted = append(f.minted, tok)
	f.mu.Unlock()
	return token.Minted{Token: tok, Deleted: []string{fmt.Sprintf("old%03d", n)}}, nil
}

func (f *fakeMinter) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeMinter) last() token.Token {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.minted[len(f.minted)-1]
}

// syncBuffer is a log sink safe for concurrent requests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	srv    *Server
	tokens *fakeMinter
	logs   *syncBuffer
	reg    *prometheus.Registry
	c      *model.Cluster
}

// validProfile boots Fedora CoreOS's live PXE image.
const validProfile = `kernel: https://builds.example.com/fcos/kernel-x86_64
initrd:
- https://builds.example.com/fcos/initramfs.x86_64.img
- https://builds.example.com/fcos/rootfs.x86_64.img
args:
- coreos.live.rootfs_url=https://builds.example.com/fcos/rootfs.x86_64.img
- ignition.firstboot
- ignition.platform.id=metal
- ignition.config.url={ignition_url}
- ds=nocloud;s={nocloud_url}
- kubestrap.node={node}
`

func testProfile(t testing.TB) *BootProfile {
	t.Helper()
	p, err := ParseBootProfile("profile.yaml", []byte(validProfile))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newEnv builds a server with both documents, a fake Minter, a JSON log
// and its own registry; edit may change the options first.
func newEnv(t *testing.T, edit func(*Options)) *env {
	t.Helper()
	c := testCluster(t)
	ign, err := pipeline.Ignition(ignition.Options{Variant: "fcos"}, false)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{tokens: &fakeMinter{}, logs: &syncBuffer{}, reg: prometheus.NewRegistry(), c: c}
	o := Options{
		Cluster: c, Ignition: ign, CloudInit: pipeline.CloudInit(pipeline.CloudInitOptions{}),
		Tokens: e.tokens, Registry: e.reg,
		Log: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&o)
	}
	if e.srv, err = New(o); err != nil {
		t.Fatal(err)
	}
	return e
}

// localAddr is where http.Server says a request arrived.
var localAddr = &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 8080}

// get serves one GET as http.Server would (with its local address in the
// context); edit may change the request first.
func (e *env) get(t *testing.T, target string, edit func(*http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(localAddr)))
	if edit != nil {
		edit(r)
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	return w
}

// logLines parses the JSON log.
func (e *env) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// kubeconfigToken reads the token of the bootstrap kubeconfig a document
// carries.
func kubeconfigToken(t *testing.T, doc parseback.Doc) string {
	t.Helper()
	f, ok := doc.Lookup(render.BootstrapKubeconfigPath)
	if !ok {
		t.Fatal("the document has no bootstrap kubeconfig")
	}
	cfg, err := clientcmd.Load(f.Contents)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.AuthInfos[render.KubeconfigUser].Token
}

func wantCalls(t *testing.T, e *env, want ...string) {
	t.Helper()
	if got := e.tokens.Calls(); !slices.Equal(got, want) {
		t.Errorf("Mint calls %q, want %q", got, want)
	}
}

func TestIgnition(t *testing.T) {
	for _, tt := range []struct {
		query, node string
	}{
		{"mac=52-54-00-aa-00-01", "node-a"},
		{"mac=52:54:00:aa:00:01", "node-a"},
		{"mac=525400aa0001", "node-a"},
		{"mac=52-54-00-AA-00-01", "node-a"},
		{"mac=52%3A54%3A00%3AAA%3A00%3A01", "node-a"},
		{"mac=5254.00aa.0002", "node-b"},
		{"mac=52-54-00-aa-00-03", "node-c"},
		{"uuid=4C4C4544-0037-3010-8030-B7C04F4E4E33", "node-b"},
		{"serial=SN-A-0001", "node-a"},
		{"serial=D%24%7Bx%7D%2F1%252%263", "node-d"},
		{"hostname=Rack1-A.Example.com", "node-a"},
		{"mac=52-54-00-aa-00-02&uuid=&serial=&hostname=", "node-b"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			e := newEnv(t, nil)
			w := e.get(t, "/ignition?"+tt.query, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			h := w.Header()
			if h.Get("Content-Type") != "application/vnd.coreos.ignition+json" || h.Get("Cache-Control") != "no-store" ||
				h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Length") != fmt.Sprint(w.Body.Len()) {
				t.Errorf("headers %v", h)
			}
			wantCalls(t, e, tt.node)
			doc, err := parseback.Ignition(w.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if doc.Spec != "3.5.0" {
				t.Errorf("Ignition spec %s", doc.Spec)
			}
			if got, want := kubeconfigToken(t, doc), e.tokens.last().Value(); got != want {
				t.Errorf("the config carries token %q, want the minted %q", got, want)
			}
			if !strings.Contains(w.Body.String(), tt.node) {
				t.Errorf("the config does not name %s", tt.node)
			}
		})
	}
}

// A query that names no node, or two, gets 404 and mints nothing.
func TestIgnitionNoMatch(t *testing.T) {
	for _, q := range []string{
		"mac=52:54:00:aa:00:01&uuid=4c4c4544-0037-3010-8030-b7c04f4e4e33", // A's mac, B's uuid
		"mac=52:54:00:aa:00:02&serial=SN-A-0001",
		"mac=52:54:00:ff:ff:ff",
		"mac=",
		"mac=garbage",
		"",
		"name=node-a",
	} {
		t.Run(q, func(t *testing.T) {
			e := newEnv(t, nil)
			w := e.get(t, "/ignition?"+q, nil)
			if w.Code != http.StatusNotFound || w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("status %d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
			}
			if w.Body.String() != "Not Found\n" {
				t.Errorf("body %q", w.Body)
			}
			wantCalls(t, e)
		})
	}
}

func TestNoCloud(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Rate = rate.Inf })
	for _, id := range []string{"52-54-00-aa-00-01", "52:54:00:AA:00:01", "525400aa0001", "SN-A-0001", "rack1-a.example.com", "4c4c4544-0037-3010-8030-b7c04f4e4e32"} {
		t.Run("user-data "+id, func(t *testing.T) {
			before := len(e.tokens.Calls())
			w := e.get(t, "/nocloud/"+id+"/user-data", nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if w.Header().Get("Cache-Control") != "no-store" || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
				t.Errorf("headers %v", w.Header())
			}
			if calls := e.tokens.Calls()[before:]; !slices.Equal(calls, []string{"node-a"}) {
				t.Errorf("Mint calls %v", calls)
			}
			doc, err := parseback.CloudInit(w.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := kubeconfigToken(t, doc), e.tokens.last().Value(); got != want {
				t.Errorf("user-data carries %q, want the minted %q", got, want)
			}
		})
	}
	// The serial with "${" path-escaped, as /ipxe hands it on.
	if w := e.get(t, "/nocloud/D$%7Bx%7D%2F1%252&3/user-data", nil); w.Code != http.StatusOK || e.tokens.last().Node != "node-d" {
		t.Errorf("node-d by serial: %d", w.Code)
	}

	// What carries no token mints none.
	t.Run("meta-data", func(t *testing.T) {
		before := len(e.tokens.Calls())
		var ids []string
		for range 2 {
			w := e.get(t, "/nocloud/52-54-00-aa-00-01/meta-data", nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			body := w.Body.String()
			assertNoToken(t, e, body)
			if !strings.Contains(body, "local-hostname: node-a\n") {
				t.Errorf("meta-data %q", body)
			}
			m := regexp.MustCompile(`(?m)^instance-id: (node-a-[0-9a-f]{12})$`).FindStringSubmatch(body)
			if m == nil {
				t.Fatalf("no instance-id in %q", body)
			}
			ids = append(ids, m[1])
		}
		if ids[0] != ids[1] {
			t.Errorf("instance-id changed between two requests: %v", ids)
		}
		if calls := e.tokens.Calls()[before:]; len(calls) != 0 {
			t.Errorf("meta-data minted for %v", calls)
		}
	})
	t.Run("network-config", func(t *testing.T) {
		before := len(e.tokens.Calls())
		w := e.get(t, "/nocloud/52:54:00:aa:00:03/network-config", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		assertNoToken(t, e, w.Body.String())
		if !strings.Contains(w.Body.String(), "172.27.129.112/24") {
			t.Errorf("network-config %q", w.Body)
		}
		// A node without a static network has none.
		if w := e.get(t, "/nocloud/52:54:00:aa:00:01/network-config", nil); w.Code != http.StatusNotFound {
			t.Errorf("node-a's network-config: %d %q", w.Code, w.Body)
		}
		if calls := e.tokens.Calls()[before:]; len(calls) != 0 {
			t.Errorf("network-config minted for %v", calls)
		}
	})
	t.Run("vendor-data", func(t *testing.T) {
		before := len(e.tokens.Calls())
		w := e.get(t, "/nocloud/52:54:00:aa:00:01/vendor-data", nil)
		if w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "0" {
			t.Errorf("vendor-data: %d %q", w.Code, w.Body)
		}
		if calls := e.tokens.Calls()[before:]; len(calls) != 0 {
			t.Errorf("vendor-data minted for %v", calls)
		}
	})
	for _, path := range []string{
		"/nocloud/52:54:00:aa:00:01/other",
		"/nocloud/52:54:00:aa:00:01/config.ign",
		"/nocloud/52:54:00:aa:00:01/",
		"/nocloud/52:54:00:aa:00:01/user-data/x",
		"/nocloud/52:54:00:ff:ff:ff/user-data",
		"/nocloud/node-a/user-data",
		"/nocloud//user-data",
	} {
		t.Run(path, func(t *testing.T) {
			before := len(e.tokens.Calls())
			// 404, or the mux's redirect to the clean path.
			if w := e.get(t, path, nil); w.Code != http.StatusNotFound && !strings.HasSuffix(path, "//user-data") {
				t.Errorf("status %d", w.Code)
			}
			if calls := e.tokens.Calls()[before:]; len(calls) != 0 {
				t.Errorf("minted for %v", calls)
			}
		})
	}
}

// assertNoToken checks a document served without a mint: neither a
// minted token nor the placeholder.
func assertNoToken(t *testing.T, e *env, body string) {
	t.Helper()
	if strings.Contains(body, placeholderToken) || strings.Contains(body, "s3cr3t") || strings.Contains(body, "token:") {
		t.Errorf("a document without a mint carries a token: %q", body)
	}
}

// Only the documents the cluster's os boots with are served.
func TestOneDocument(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Ignition = nil })
	if w := e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil); w.Code != http.StatusNotFound {
		t.Errorf("/ignition without Ignition: %d", w.Code)
	}
	wantCalls(t, e)
	e = newEnv(t, func(o *Options) { o.CloudInit = nil })
	for _, f := range []string{"user-data", "meta-data", "vendor-data"} {
		if w := e.get(t, "/nocloud/52:54:00:aa:00:01/"+f, nil); w.Code != http.StatusNotFound {
			t.Errorf("%s without cloud-init: %d", f, w.Code)
		}
	}
	wantCalls(t, e)
}

func TestMintFailure(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	for _, tt := range []struct {
		name           string
		err            error
		block          bool
		retryAfter     time.Duration
		wantStatus     int
		wantRetryAfter string
	}{
		{name: "connection refused", err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")},
			wantStatus: 503, wantRetryAfter: "10"},
		{name: "503", err: fmt.Errorf("node node-a: listing the node's tokens: %w", apierrors.NewServiceUnavailable("restarting")),
			wantStatus: 503, wantRetryAfter: "10"},
		{name: "503, Retry-After set", err: apierrors.NewServiceUnavailable("restarting"), retryAfter: 45 * time.Second,
			wantStatus: 503, wantRetryAfter: "45"},
		{name: "429 from the API server", err: apierrors.NewTooManyRequests("slow down", 1), wantStatus: 503, wantRetryAfter: "10"},
		{name: "mint timeout", block: true, wantStatus: 503, wantRetryAfter: "10"},
		{name: "403", err: fmt.Errorf("node node-a: creating Secret: %w", apierrors.NewForbidden(gr, "x", errors.New("RBAC says no"))),
			wantStatus: 500},
		{name: "contended", err: fmt.Errorf("node node-a: boot record moved by others 8 times in a row: %w", token.ErrContended),
			wantStatus: 503, wantRetryAfter: "10"},
		{name: "an error nobody can retry", err: errors.New("node node-a: rendering: broken"), wantStatus: 500},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				o.RetryAfter = tt.retryAfter
				o.MintTimeout = 50 * time.Millisecond
			})
			e.tokens.err, e.tokens.block = tt.err, tt.block
			for _, path := range []string{"/ignition?mac=52:54:00:aa:00:01", "/nocloud/52:54:00:aa:00:01/user-data"} {
				w := e.get(t, path, nil)
				if w.Code != tt.wantStatus || w.Header().Get("Retry-After") != tt.wantRetryAfter {
					t.Errorf("%s: status %d Retry-After %q, want %d %q", path, w.Code, w.Header().Get("Retry-After"), tt.wantStatus, tt.wantRetryAfter)
				}
				if want := http.StatusText(tt.wantStatus) + "\n"; w.Body.String() != want || w.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("%s: body %q, Cache-Control %q", path, w.Body, w.Header().Get("Cache-Control"))
				}
			}
			wantCalls(t, e, "node-a", "node-a")
			if tt.block && (e.tokens.timeout <= 0 || e.tokens.timeout > 50*time.Millisecond) {
				t.Errorf("Mint's deadline %v, want MintTimeout", e.tokens.timeout)
			}
			if got := metric(t, e, "kubestrap_serve_token_failures_total"); got != "2" {
				t.Errorf("failures %s", got)
			}
			if got := metric(t, e, "kubestrap_serve_tokens_minted_total"); got != "0" {
				t.Errorf("minted %s", got)
			}
			for _, l := range e.logLines(t) {
				if l["level"] != "WARN" || l["node"] != "node-a" || l["reason"] != "no token" || l["error"] == nil || l["token_id"] != nil {
					t.Errorf("log line %v", l)
				}
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Rate, o.Burst, o.RetryAfter = rate.Limit(0.001), 2, 30*time.Second })
	for i, want := range []int{200, 200, 429} {
		w := e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil)
		if w.Code != want {
			t.Fatalf("request %d: status %d, want %d", i+1, w.Code, want)
		}
		// When the node's next token is due (one per 1,000 s), not the
		// fixed RetryAfter of an API server outage.
		if want == 429 && (w.Header().Get("Retry-After") != "1000" || w.Body.String() != "Too Many Requests\n") {
			t.Errorf("429: Retry-After %q, body %q", w.Header().Get("Retry-After"), w.Body)
		}
	}
	// The node's documents share its limit; what mints nothing has none.
	if w := e.get(t, "/nocloud/52:54:00:aa:00:01/user-data", nil); w.Code != 429 {
		t.Errorf("user-data over the limit: %d", w.Code)
	}
	if w := e.get(t, "/nocloud/52:54:00:aa:00:01/meta-data", nil); w.Code != 200 {
		t.Errorf("meta-data: %d", w.Code)
	}
	wantCalls(t, e, "node-a", "node-a")
	// Another node has its own.
	for range 2 {
		if w := e.get(t, "/ignition?mac=52:54:00:aa:00:02", nil); w.Code != 200 {
			t.Errorf("node-b: %d", w.Code)
		}
	}
	wantCalls(t, e, "node-a", "node-a", "node-b", "node-b")

	// The default: a burst of five.
	e = newEnv(t, nil)
	codes := []int{}
	for range 6 {
		codes = append(codes, e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil).Code)
	}
	if !slices.Equal(codes, []int{200, 200, 200, 200, 200, 429}) {
		t.Errorf("default limit: %v", codes)
	}
}

func TestMatchSourceIP(t *testing.T) {
	for _, tt := range []struct {
		name, target, remote string
		off                  bool
		want                 int
	}{
		{"node-b from elsewhere", "/ignition?mac=52:54:00:aa:00:02", "10.9.9.9:1234", false, 404},
		{"node-b from its ip", "/ignition?mac=52:54:00:aa:00:02", "172.27.129.111:5555", false, 200},
		{"node-b from its ip, v4-mapped", "/ignition?mac=52:54:00:aa:00:02", "[::ffff:172.27.129.111]:5555", false, 200},
		{"node-b from node-c's ip", "/ignition?mac=52:54:00:aa:00:02", "172.27.129.112:5555", false, 404},
		{"node-b, no port", "/ignition?mac=52:54:00:aa:00:02", "172.27.129.111", false, 404},
		{"node-b, garbage", "/ignition?mac=52:54:00:aa:00:02", "garbage", false, 404},
		{"node-c from the static network's ip", "/ignition?mac=52:54:00:aa:00:03", "172.27.129.112:1", false, 200},
		{"node-a has no ip: from anywhere", "/ignition?mac=52:54:00:aa:00:01", "10.9.9.9:1234", false, 200},
		{"node-b from elsewhere, flag off", "/ignition?mac=52:54:00:aa:00:02", "10.9.9.9:1234", true, 200},
		{"node-b user-data from elsewhere", "/nocloud/52:54:00:aa:00:02/user-data", "10.9.9.9:1234", false, 404},
		{"node-b meta-data from elsewhere", "/nocloud/52:54:00:aa:00:02/meta-data", "10.9.9.9:1234", false, 404},
		{"node-b ipxe from elsewhere", "/ipxe?mac=52:54:00:aa:00:02", "10.9.9.9:1234", false, 404},
		{"node-b ipxe from its ip", "/ipxe?mac=52:54:00:aa:00:02", "172.27.129.111:68", false, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.MatchSourceIP = !tt.off; o.Profile = testProfile(t) })
			w := e.get(t, tt.target, func(r *http.Request) { r.RemoteAddr = tt.remote })
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			mints := strings.HasPrefix(tt.target, "/ignition") || strings.HasSuffix(tt.target, "/user-data")
			if n := len(e.tokens.Calls()); (tt.want == 200 && mints) != (n == 1) || n > 1 {
				t.Errorf("Mint calls %v", e.tokens.Calls())
			}
			if tt.want == 404 {
				// As for an unknown machine; the log says why.
				if w.Body.String() != "Not Found\n" {
					t.Errorf("body %q", w.Body)
				}
				l := e.logLines(t)
				if len(l) != 1 || l[0]["reason"] == nil || l[0]["remote"] != tt.remote {
					t.Errorf("log %v", l)
				}
			}
		})
	}
}

func TestBootIPXE(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Profile = testProfile(t) })
	w := e.get(t, "/boot.ipxe", nil)
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, headers %v", w.Code, w.Header())
	}
	want := "#!ipxe\nchain ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&hostname=${hostname:uristring}\n"
	if w.Body.String() != want {
		t.Errorf("boot.ipxe:\n%s", w.Body)
	}
	wantCalls(t, e)

	e = newEnv(t, nil)
	for _, path := range []string{"/boot.ipxe", "/ipxe?mac=52:54:00:aa:00:01"} {
		if w := e.get(t, path, nil); w.Code != http.StatusNotFound {
			t.Errorf("%s without a profile: %d", path, w.Code)
		}
	}
	wantCalls(t, e)
}

// kernelArg returns the value of the kernel line's argument key=.
func kernelArg(t *testing.T, script, key string) string {
	t.Helper()
	lines := strings.Split(script, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "kernel ") {
		t.Fatalf("no kernel line in %q", script)
	}
	for _, f := range strings.Fields(lines[1]) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	t.Fatalf("no %s= on %q", key, lines[1])
	return ""
}

func TestIPXE(t *testing.T) {
	for _, tt := range []struct {
		name, query string
		url         string // Options.URL
		host        string // the Host header
		tls         bool
		// wantIgn and wantSeed are ignition.config.url and the seed's URL.
		wantIgn, wantSeed, wantNode string
	}{
		{name: "by mac, base from Host", query: "mac=52-54-00-AA-00-01", host: "boot.example.com:8080",
			wantIgn:  "http://boot.example.com:8080/ignition?mac=52:54:00:aa:00:01",
			wantSeed: "http://boot.example.com:8080/nocloud/52:54:00:aa:00:01/", wantNode: "node-a"},
		{name: "boot.ipxe's chain", query: "mac=52-54-00-aa-00-02&uuid=&serial=&hostname=", host: "10.0.0.2:8080",
			wantIgn:  "http://10.0.0.2:8080/ignition?mac=52:54:00:aa:00:02",
			wantSeed: "http://10.0.0.2:8080/nocloud/52:54:00:aa:00:02/", wantNode: "node-b"},
		{name: "Options.URL wins", query: "mac=525400aa0001", url: "https://boot.example.net/kubestrap/", host: "other.example.com",
			wantIgn:  "https://boot.example.net/kubestrap/ignition?mac=52:54:00:aa:00:01",
			wantSeed: "https://boot.example.net/kubestrap/nocloud/52:54:00:aa:00:01/", wantNode: "node-a"},
		{name: "over TLS", query: "mac=525400aa0001", host: "boot.example.com", tls: true,
			wantIgn:  "https://boot.example.com/ignition?mac=52:54:00:aa:00:01",
			wantSeed: "https://boot.example.com/nocloud/52:54:00:aa:00:01/", wantNode: "node-a"},
		{name: "IPv6 Host", query: "mac=525400aa0001", host: "[2001:db8::2]:8080",
			wantIgn:  "http://[2001:db8::2]:8080/ignition?mac=52:54:00:aa:00:01",
			wantSeed: "http://[2001:db8::2]:8080/nocloud/52:54:00:aa:00:01/", wantNode: "node-a"},
		{name: "by uuid: the seed by mac", query: "uuid=4C4C4544-0037-3010-8030-B7C04F4E4E33", host: "b",
			wantIgn: "http://b/ignition?uuid=4c4c4544-0037-3010-8030-b7c04f4e4e33", wantSeed: "http://b/nocloud/52:54:00:aa:00:02/", wantNode: "node-b"},
		{name: "no mac: the serial, escaped", query: "serial=D%24%7Bx%7D%2F1%252%263", host: "b",
			wantIgn: "http://b/ignition?serial=D%24%7Bx%7D%2F1%252%263", wantSeed: "http://b/nocloud/D$%7Bx%7D%2F1%252&3/", wantNode: "node-d"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Profile, o.URL = testProfile(t), tt.url })
			w := e.get(t, "/ipxe?"+tt.query, func(r *http.Request) {
				r.Host = tt.host
				if tt.tls {
					r.TLS = &tls.ConnectionState{}
				}
			})
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			script := w.Body.String()
			lines := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
			want := []string{
				"#!ipxe",
				"kernel https://builds.example.com/fcos/kernel-x86_64 coreos.live.rootfs_url=https://builds.example.com/fcos/rootfs.x86_64.img" +
					" ignition.firstboot ignition.platform.id=metal ignition.config.url=" + tt.wantIgn + " ds=nocloud;s=" + tt.wantSeed +
					" kubestrap.node=" + tt.wantNode,
				"initrd https://builds.example.com/fcos/initramfs.x86_64.img",
				"initrd https://builds.example.com/fcos/rootfs.x86_64.img",
				"boot",
			}
			if !slices.Equal(lines, want) {
				t.Errorf("script\n%s\nwant\n%s", script, strings.Join(want, "\n"))
			}
			if strings.Contains(script, "${") {
				t.Errorf("the script holds an iPXE expansion: %s", script)
			}
			// /ipxe mints nothing; its URLs lead back to the node.
			wantCalls(t, e)
			for _, u := range []string{kernelArg(t, script, "ignition.config.url"), strings.TrimPrefix(kernelArg(t, script, "ds"), "nocloud;s=") + "user-data"} {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				base := strings.TrimSuffix(tt.url, "/")
				if base == "" {
					base = pu.Scheme + "://" + pu.Host
				}
				path := strings.TrimPrefix(u, base)
				if w := e.get(t, path, nil); w.Code != 200 || e.tokens.last().Node != tt.wantNode {
					t.Errorf("%s: status %d, minted for %s", path, w.Code, e.tokens.last().Node)
				}
			}
		})
	}
}

// Whatever the machine puts in its Host header, only a plain host[:port]
// reaches the script; anything else is replaced by the address the request
// came in on.
func TestIPXEHostileHost(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Profile = testProfile(t) })
	for _, host := range []string{
		"evil host",
		`evil"host`,
		"evil\nhost",
		"evil\r\nkernel http://evil/",
		"${net0/ip}",
		"a${b}",
		"x'y",
		"h;o",
		"a&&b",
		"a||shell",
		"a/b",
		"a?b#c",
		"a\x00b",
		"",
		strings.Repeat("a", 256),
	} {
		t.Run(fmt.Sprintf("%q", host), func(t *testing.T) {
			w := e.get(t, "/ipxe?mac=52:54:00:aa:00:01", func(r *http.Request) { r.Host = host })
			if w.Code != 200 {
				t.Fatalf("status %d", w.Code)
			}
			script := w.Body.String()
			if host != "" && strings.Contains(script, host) {
				t.Errorf("the Host header reached the script:\n%s", script)
			}
			for _, bad := range []string{"${", `"`, "'", "\r", "\x00", "evil", "&&", "||"} {
				if strings.Contains(script, bad) {
					t.Errorf("script holds %q:\n%s", bad, script)
				}
			}
			if n := strings.Count(script, "\n"); n != 5 {
				t.Errorf("%d lines:\n%s", n, script)
			}
			if got := kernelArg(t, script, "ignition.config.url"); got != "http://10.0.0.2:8080/ignition?mac=52:54:00:aa:00:01" {
				t.Errorf("ignition.config.url=%s", got)
			}
		})
	}
}

// Through a real http.Server: a Host header Go lets through but that is
// no plain host gives way to the listener's address.
func TestIPXEHostileHostOverTheWire(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Profile = testProfile(t) })
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ipxe?mac=52:54:00:aa:00:01 HTTP/1.1\r\nHost: a$b'(c);d\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	want := "ignition.config.url=" + ts.URL + "/ignition?mac=52:54:00:aa:00:01 "
	if !strings.Contains(string(body), want) || strings.ContainsAny(string(body), "'()") {
		t.Errorf("script\n%s\nwant it to hold %s", body, want)
	}
}

// metric returns the value of the sample whose line starts with series
// ("name" or `name{labels}`) on /metrics, or "" if there is none.
func metric(t *testing.T, e *env, series string) string {
	t.Helper()
	w := e.get(t, "/metrics", nil)
	if w.Code != 200 {
		t.Fatalf("/metrics: %d", w.Code)
	}
	for _, l := range strings.Split(w.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

func TestMetricsAndLogs(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Profile = testProfile(t) })
	requests := []struct {
		target string
		want   int
	}{
		{"/ignition?mac=52:54:00:aa:00:01", 200},
		{"/ignition?mac=52:54:00:aa:00:02", 200},
		{"/ignition?mac=52:54:00:ff:ff:ff", 404},
		{"/nocloud/52:54:00:aa:00:01/user-data", 200},
		{"/nocloud/52:54:00:aa:00:01/meta-data", 200},
		{"/boot.ipxe", 200},
		{"/ipxe?mac=52:54:00:aa:00:01", 200},
		{"/healthz", 200},
		{"/readyz", 200},
		{"/nowhere", 404},
	}
	for _, r := range requests {
		if w := e.get(t, r.target, nil); w.Code != r.want {
			t.Fatalf("%s: %d, want %d", r.target, w.Code, r.want)
		}
	}
	for series, want := range map[string]string{
		`kubestrap_serve_requests_total{code="200",endpoint="ignition"}`:                 "2",
		`kubestrap_serve_requests_total{code="404",endpoint="ignition"}`:                 "1",
		`kubestrap_serve_requests_total{code="200",endpoint="nocloud"}`:                  "2",
		`kubestrap_serve_requests_total{code="200",endpoint="boot.ipxe"}`:                "1",
		`kubestrap_serve_requests_total{code="200",endpoint="ipxe"}`:                     "1",
		`kubestrap_serve_requests_total{code="200",endpoint="healthz"}`:                  "1",
		`kubestrap_serve_requests_total{code="200",endpoint="readyz"}`:                   "1",
		`kubestrap_serve_requests_total{code="404",endpoint="other"}`:                    "1",
		`kubestrap_serve_tokens_minted_total`:                                            "3",
		`kubestrap_serve_tokens_deleted_total`:                                           "3",
		`kubestrap_serve_token_failures_total`:                                           "0",
		`kubestrap_serve_request_duration_seconds_count{endpoint="ignition"}`:            "3",
		`kubestrap_serve_request_duration_seconds_bucket{endpoint="ignition",le="+Inf"}`: "3",
		`kubestrap_serve_request_duration_seconds_count{endpoint="nocloud"}`:             "2",
	} {
		if got := metric(t, e, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}

	// One line per request routed, /healthz and a ready /readyz aside
	// (and /nowhere, which only the metrics count).
	lines := e.logLines(t)
	if len(lines) != len(requests)-3 {
		t.Fatalf("%d log lines for %d requests:\n%s", len(lines), len(requests)-3, e.logs)
	}
	type row struct{ endpoint, node, tokenID string }
	var got []row
	for _, l := range lines {
		if l["msg"] != "request" || l["status"] == nil || l["remote"] != "192.0.2.1:1234" || l["took"] == nil {
			t.Errorf("log line %v", l)
		}
		node, _ := l["node"].(string)
		id, _ := l["token_id"].(string)
		got = append(got, row{l["endpoint"].(string), node, id})
		if id != "" {
			if d, _ := l["deleted_token_ids"].([]any); len(d) != 1 {
				t.Errorf("deleted_token_ids %v", l["deleted_token_ids"])
			}
		}
		if s, _ := l["status"].(float64); s == 404 && l["reason"] == nil {
			t.Errorf("a 404 without a reason: %v", l)
		}
	}
	want := []row{
		{"ignition", "node-a", "tk0001"},
		{"ignition", "node-b", "tk0002"},
		{"ignition", "", ""},
		{"nocloud", "node-a", "tk0003"},
		{"nocloud", "node-a", ""},
		{"boot.ipxe", "", ""},
		{"ipxe", "node-a", ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("log rows\n got %v\nwant %v", got, want)
	}
	logs := e.logs.String()
	for _, tok := range e.tokens.minted {
		secret := strings.TrimPrefix(tok.Value(), tok.ID+".")
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds token %s's secret", tok.ID)
		}
	}
	if strings.Contains(logs, "s3cr3t") {
		t.Error("the log holds a token secret")
	}
}

func TestReadyz(t *testing.T) {
	for _, tt := range []struct {
		name  string
		ready func(context.Context) error
		want  int
		logs  int
	}{
		{"no check", nil, 200, 0},
		{"ready", func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}, 200, 0},
		{"not ready", func(context.Context) error { return errors.New("the CSR informer has not synced") }, 503, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Ready = tt.ready })
			w := e.get(t, "/readyz", nil)
			if w.Code != tt.want {
				t.Errorf("status %d, want %d", w.Code, tt.want)
			}
			if tt.want == 503 && w.Header().Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			if tt.want == 200 && w.Body.String() != "ok\n" {
				t.Errorf("body %q", w.Body)
			}
			if l := e.logLines(t); len(l) != tt.logs || tt.logs == 1 && l[0]["error"] != "the CSR informer has not synced" {
				t.Errorf("log %v", l)
			}
			if w := e.get(t, "/healthz", nil); w.Code != 200 || w.Body.String() != "ok\n" {
				t.Errorf("/healthz: %d %q", w.Code, w.Body)
			}
			wantCalls(t, e)
		})
	}
}

// Only GET mints: a HEAD of a document that holds a token is refused
// (405, Allow: GET), other methods reach the catch-all.
func TestMethods(t *testing.T) {
	e := newEnv(t, nil)
	for _, tt := range []struct {
		method, target string
		want           int
	}{
		{http.MethodHead, "/ignition?mac=52:54:00:aa:00:01", http.StatusMethodNotAllowed},
		{http.MethodHead, "/nocloud/52:54:00:aa:00:01/user-data", http.StatusMethodNotAllowed},
		{http.MethodHead, "/nocloud/52:54:00:aa:00:01/meta-data", http.StatusOK},
		{http.MethodPost, "/ignition?mac=52:54:00:aa:00:01", http.StatusNotFound},
		{http.MethodPut, "/nocloud/52:54:00:aa:00:01/user-data", http.StatusNotFound},
		{http.MethodDelete, "/ignition?mac=52:54:00:aa:00:01", http.StatusNotFound},
	} {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.target, w.Code, tt.want)
		}
		if tt.want == http.StatusMethodNotAllowed && w.Header().Get("Allow") != http.MethodGet {
			t.Errorf("%s %s: Allow %q", tt.method, tt.target, w.Header().Get("Allow"))
		}
	}
	wantCalls(t, e)
}

func TestNewOptions(t *testing.T) {
	c := testCluster(t)
	ign, err := pipeline.Ignition(ignition.Options{Variant: "fcos"}, false)
	if err != nil {
		t.Fatal(err)
	}
	valid := func() Options {
		return Options{Cluster: c, Ignition: ign, Tokens: &fakeMinter{}, Registry: prometheus.NewRegistry(),
			Log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	}
	for _, tt := range []struct {
		name string
		edit func(*Options)
		want string // "" for no error
	}{
		{"valid", func(*Options) {}, ""},
		{"url", func(o *Options) { o.URL = "http://10.0.0.2:8080/" }, ""},
		{"https url with a path", func(o *Options) { o.URL = "https://boot.example.com/kubestrap" }, ""},
		{"no cluster", func(o *Options) { o.Cluster = nil }, "required"},
		{"no tokens", func(o *Options) { o.Tokens = nil }, "required"},
		{"no log", func(o *Options) { o.Log = nil }, "required"},
		{"no registry", func(o *Options) { o.Registry = nil }, "required"},
		{"no document", func(o *Options) { o.Ignition = nil }, "no document"},
		{"ftp url", func(o *Options) { o.URL = "ftp://10.0.0.2/" }, "not an http or https base URL"},
		{"url without host", func(o *Options) { o.URL = "http:///x" }, "not an http or https base URL"},
		{"relative url", func(o *Options) { o.URL = "10.0.0.2:8080" }, "not an http or https base URL"},
		{"url with a query", func(o *Options) { o.URL = "http://10.0.0.2/?x=1" }, "not an http or https base URL"},
		{"url with a fragment", func(o *Options) { o.URL = "http://10.0.0.2/#x" }, "not an http or https base URL"},
		// It would split the script's kernel line.
		{"url with a space", func(o *Options) { o.URL = "http://10.0.0.2/boot dir" }, "not an http or https base URL"},
		{"url with a newline", func(o *Options) { o.URL = "http://10.0.0.2/\nboot" }, "not an http or https base URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.edit(&o)
			_, err := New(o)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("New = %v, want %q", err, tt.want)
			}
		})
	}
	// One registry takes one server's metrics.
	o := valid()
	if _, err := New(o); err != nil {
		t.Fatal(err)
	}
	if _, err := New(o); err == nil {
		t.Error("a second server registered on the same registry")
	}
}

// Concurrent boots of one node: each request gets a document with its own
// token, mints are one at a time per node.
func TestConcurrentMints(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Rate, o.Burst = rate.Inf, 0 })
	var inFlight, peak int
	var mu sync.Mutex
	e.srv.o.Tokens = minterFunc(func(ctx context.Context, node string) (token.Minted, error) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return e.tokens.Mint(ctx, node)
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if w := e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil); w.Code != 200 {
				t.Errorf("status %d", w.Code)
			}
		})
	}
	wg.Wait()
	if peak != 1 || len(e.tokens.Calls()) != 8 {
		t.Errorf("peak %d over %d mints, want 1 over 8", peak, len(e.tokens.Calls()))
	}
}

type minterFunc func(context.Context, string) (token.Minted, error)

func (f minterFunc) Mint(ctx context.Context, node string) (token.Minted, error) { return f(ctx, node) }

// MaxInFlight bounds the mints under way across nodes; a request that
// gets no turn within MintTimeout is told to come back (503), and mints
// nothing.
func TestMaxInFlight(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxInFlight, o.MintTimeout = 1, 100*time.Millisecond })
	started, release := make(chan struct{}), make(chan struct{})
	var calls []string
	var mu sync.Mutex
	e.srv.o.Tokens = minterFunc(func(ctx context.Context, node string) (token.Minted, error) {
		mu.Lock()
		calls = append(calls, node)
		mu.Unlock()
		if node == "node-a" {
			close(started)
			<-release
		}
		return e.tokens.Mint(ctx, node)
	})
	done := make(chan int)
	go func() { done <- e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil).Code }()
	<-started
	w := e.get(t, "/ignition?mac=52:54:00:aa:00:02", nil)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "10" {
		t.Errorf("node-b while node-a mints: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("node-a: %d", code)
	}
	if w := e.get(t, "/ignition?mac=52:54:00:aa:00:02", nil); w.Code != 200 {
		t.Errorf("node-b once node-a is done: %d", w.Code)
	}
	mu.Lock()
	if !slices.Equal(calls, []string{"node-a", "node-b"}) {
		t.Errorf("Mint calls %v: node-b minted without a turn", calls)
	}
	mu.Unlock()
	if got := metric(t, e, "kubestrap_serve_token_failures_total"); got != "1" {
		t.Errorf("failures %s", got)
	}
	var turnless int
	for _, l := range e.logLines(t) {
		if l["reason"] == "no turn to mint within the timeout" && l["node"] == "node-b" {
			turnless++
		}
	}
	if turnless != 1 {
		t.Errorf("log:\n%s", e.logs)
	}

	// Four nodes at once, two turns: never more than two mints.
	e = newEnv(t, func(o *Options) { o.MaxInFlight = 2 })
	var inFlight, peak int
	e.srv.o.Tokens = minterFunc(func(ctx context.Context, node string) (token.Minted, error) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return e.tokens.Mint(ctx, node)
	})
	var wg sync.WaitGroup
	for _, q := range []string{"mac=52:54:00:aa:00:01", "mac=52:54:00:aa:00:02", "mac=52:54:00:aa:00:03", "serial=D%24%7Bx%7D%2F1%252%263"} {
		wg.Go(func() {
			if w := e.get(t, "/ignition?"+q, nil); w.Code != 200 {
				t.Errorf("%s: %d", q, w.Code)
			}
		})
	}
	wg.Wait()
	if peak > 2 || len(e.tokens.Calls()) != 4 {
		t.Errorf("peak %d over %d mints, want at most 2 over 4", peak, len(e.tokens.Calls()))
	}
}

// TestNodeLockBounded: a request waiting behind its node's earlier one
// gives up at the mint timeout, as the earlier one does.
func TestNodeLockBounded(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MintTimeout = 100 * time.Millisecond })
	e.tokens.block = true
	start := time.Now()
	codes := make(chan int, 2)
	for range 2 {
		go func() { codes <- e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil).Code }()
	}
	for range 2 {
		if c := <-codes; c != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", c)
		}
	}
	// The second waited for the lock, not for the first's whole mint.
	if took := time.Since(start); took > 150*time.Millisecond {
		t.Errorf("both answered after %v: the wait for the node's lock outlived the mint timeout", took)
	}
}
