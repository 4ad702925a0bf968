//go:build unix

package cloudinit_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// TestFetchScript runs the script the cloud-init document installs, with
// the system's sh, curl and sha256sum, against a local server: a verified
// file lands whole with its mode; a wrong hash, a truncated body or a server
// error leave nothing at the path (not even a temporary file), and say why.
func TestFetchScript(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "sha256sum", "sha512sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	body := bytes.Repeat([]byte("kubelet binary\x00\x01"), 4096)
	sum256 := sha256.Sum256(body)
	sum512 := sha512.Sum512(body)
	good256 := "sha256-" + hex.EncodeToString(sum256[:])
	good512 := "sha512-" + hex.EncodeToString(sum512[:])
	var flaky atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/kubelet":
			w.Write(body)
		case "/flaky":
			// Fails twice, then serves: the retries must carry it.
			if flaky.Add(1) <= 2 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Write(body)
		case "/glob[1]/kubelet{x}":
			w.Write(body)
		case "/truncated":
			w.Header().Set("Content-Length", "999999")
			w.Write(body[:100])
		default:
			http.Error(w, "gone", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	script := filepath.Join(t.TempDir(), "kubestrap-fetch")
	if err := os.WriteFile(script, cloudinit.FetchScript(), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, hash string
		ok               bool
		say              string
	}{
		{"verified", "/kubelet", good256, true, "sha256 verified"},
		{"sha512", "/kubelet", good512, true, "sha512 verified"},
		{"retried", "/flaky", good256, true, "verified"},
		{"wrong hash", "/kubelet", "sha256-" + strings.Repeat("0", 64), false, "sha256 mismatch: got " + hex.EncodeToString(sum256[:])},
		{"truncated", "/truncated", good256, false, "download failed; " + "DEST is not installed"},
		{"not found", "/nothing", good256, false, "404"},
		{"unknown hash", "/kubelet", "md5-abc", false, "unknown hash"},
		{"brackets and braces fetched as written", "/glob%5B1%5D/kubelet%7Bx%7D", good256, true, "sha256 verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dest := filepath.Join(dir, "opt/bin/kubelet")
			link := filepath.Join(dir, "etc/link")
			cmd := exec.Command("sh", script, srv.URL+tt.path, tt.hash, dest, "0755", link)
			out, err := cmd.CombinedOutput()
			if say := strings.ReplaceAll(tt.say, "DEST", dest); (err == nil) != tt.ok || !strings.Contains(string(out), say) {
				t.Fatalf("err = %v, want ok=%v; output %q should say %q", err, tt.ok, out, tt.say)
			}
			entries, _ := os.ReadDir(filepath.Dir(dest))
			if !tt.ok {
				if len(entries) != 0 {
					t.Fatalf("a failed fetch left %v in %s", entries, filepath.Dir(dest))
				}
				return
			}
			got, err := os.ReadFile(dest)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("installed file: %v (%d bytes, want %d)", err, len(got), len(body))
			}
			if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o755 || len(entries) != 1 {
				t.Errorf("mode %v, %d entries", fi.Mode(), len(entries))
			}
			if target, err := os.Readlink(link); err != nil || target != dest {
				t.Errorf("link: %q, %v", target, err)
			}
			// In place with the right hash: kept, nothing fetched (the URL
			// would fail).
			out, err = exec.Command("sh", script, srv.URL+"/nothing", tt.hash, dest, "0755").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "is in place") {
				t.Errorf("second run: %v %s", err, out)
			}
		})
	}
}

// TestFetchScriptReplacesAndCleansUp: a file at the path with another hash
// is replaced, and a run killed mid-download leaves a temporary file that
// the next run removes.
func TestFetchScriptReplacesAndCleansUp(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	body := []byte("the real kubelet")
	sum := sha256.Sum256(body)
	hash := "sha256-" + hex.EncodeToString(sum[:])
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			// More than curl buffers, then nothing until it is stopped.
			w.Header().Set("Content-Length", "10000000")
			w.Write(bytes.Repeat(body, 65536))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	script := filepath.Join(t.TempDir(), "kubestrap-fetch")
	if err := os.WriteFile(script, cloudinit.FetchScript(), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dest := filepath.Join(dir, "kubelet")

	cmd := exec.Command("sh", script, srv.URL+"/slow", hash, dest, "0755")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, _ := filepath.Glob(dest + ".kubestrap-fetch.*"); len(m) > 0 {
			if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no download in progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// systemd stops a unit with SIGTERM to all its processes.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	cmd.Wait()
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("a stopped download left %v", m)
	}
	// What a SIGKILL (or a power cut) leaves, the next run removes.
	if err := os.WriteFile(dest+".kubestrap-fetch.AbC123", []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(dest, []byte("an old kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", script, srv.URL+"/kubelet", hash, dest, "0755").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, body) {
		t.Errorf("%s holds %q, want the verified download", dest, got)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 1 {
		t.Errorf("left in the directory: %v", m)
	}
}

// TestFetchesLowered checks what the cloud-init document makes of Fetches:
// the script, a oneshot unit that runs it before the unit that needs the
// file and is required by it once enabled, enabled first; and nothing that
// writes the fetched path itself.
func TestFetchesLowered(t *testing.T) {
	a := sample.Assets()
	hash := "sha256-" + strings.Repeat("ab", 32)
	a.Fetches = []render.Fetch{{
		Path: "/usr/local/bin/kubelet", Mode: 0o755, URL: "http://mirror.example/k8s/v1.37.2/kubelet%2Bx",
		Hash: hash, RequiredBy: render.UnitName,
	}}
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	validateUserData(t, ud)
	doc, err := parseback.CloudInit(ud)
	if err != nil {
		t.Fatal(err)
	}
	install := cloudinit.InstallUnitName(render.UnitName)
	if install != "kubelet-install.service" {
		t.Fatalf("install unit %s", install)
	}
	if len(doc.Enabled) < 2 || doc.Enabled[0] != install {
		t.Fatalf("enabled %v: the install unit must be enabled (and so run) first", doc.Enabled)
	}
	if _, ok := doc.Lookup("/usr/local/bin/kubelet"); ok {
		t.Error("the document writes the fetched path itself")
	}
	script, ok := doc.Lookup(cloudinit.FetchScriptPath)
	if !ok || script.Mode != 0o755 || !bytes.Equal(script.Contents, cloudinit.FetchScript()) {
		t.Fatalf("fetch script %+v", script.Mode)
	}
	u, ok := doc.Lookup(filepath.Join(render.UnitDir, install))
	if !ok {
		t.Fatal("no install unit")
	}
	opts, err := unit.Deserialize(bytes.NewReader(u.Contents))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, o := range opts {
		got[o.Section+"."+o.Name] = append(got[o.Section+"."+o.Name], o.Value)
	}
	want := map[string]string{
		"Service.Type": "oneshot", "Unit.Before": render.UnitName, "Install.RequiredBy": render.UnitName,
		"Service.ExecStart": cloudinit.FetchScriptPath + " http://mirror.example/k8s/v1.37.2/kubelet%%2Bx " + hash + " /usr/local/bin/kubelet 0755",
	}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// validateUserData runs the real `cloud-init schema` on ud.
func validateUserData(t *testing.T, ud []byte) {
	t.Helper()
	tool := sample.Tool(t, "cloud-init", "")
	p := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(p, ud, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "schema", "-c", p).CombinedOutput(); err != nil || strings.Contains(strings.ToLower(string(out)), "deprecated") {
		t.Errorf("cloud-init schema: %v\n%s\n%s", err, out, ud)
	}
}

// TestStockUserData: keys, a restarted unit and a network, through the
// real schema and read back.
func TestStockUserData(t *testing.T) {
	a := sample.Assets()
	a.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKubestrapKubestrapKubestrapKubestrap0000 ops@example", "ssh-rsa AAAAB3Nza: #x"}
	a.Restart = []string{render.ContainerdUnit}
	a.Network = &render.Network{MAC: "52:54:00:12:34:56", Addresses: []string{"10.0.0.5/24"}, Gateway: "10.0.0.1", DNS: []string{"10.0.0.2"}}
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	validateUserData(t, ud)
	doc, err := parseback.CloudInit(ud)
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.SSHKeys[""]; len(got) != 2 || got[1] != a.SSHAuthorizedKeys[1] {
		t.Errorf("keys %q", got)
	}
	if len(doc.Restarted) != 1 || doc.Restarted[0] != render.ContainerdUnit {
		t.Errorf("restarted %q", doc.Restarted)
	}
	nc, err := cloudinit.NetworkConfig(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `network:
  version: 2
  ethernets:
    kubestrap0:
      match:
        macaddress: "52:54:00:12:34:56"
      dhcp4: false
      dhcp6: false
      addresses:
        - 10.0.0.5/24
      routes:
        - to: 0.0.0.0/0
          via: 10.0.0.1
      nameservers:
        addresses:
          - 10.0.0.2
`
	if string(nc) != want {
		t.Errorf("network-config:\n%s\nwant\n%s", nc, want)
	}
	// cloud-init's own network parser reads it and renders what the node
	// would run: with a MAC only, netplan's config (Ubuntu) matching by
	// MAC; with an interface name too, networkd's (Debian) for that name.
	rendered := netConvert(t, nc, "netplan", "etc/netplan/50-cloud-init.yaml")
	for _, line := range []string{"macaddress: '52:54:00:12:34:56'", "- 10.0.0.5/24", "to: 0.0.0.0/0", "via: 10.0.0.1", "- 10.0.0.2"} {
		if !strings.Contains(rendered, line) {
			t.Errorf("cloud-init rendered no %q:\n%s", line, rendered)
		}
	}
	a.Network.Interface = "eth0"
	if nc, err = cloudinit.NetworkConfig(a); err != nil {
		t.Fatal(err)
	}
	rendered = netConvert(t, nc, "networkd", "etc/systemd/network/10-cloud-init-eth0.network")
	for _, line := range []string{"MACAddress=52:54:00:12:34:56", "Name=eth0", "Address=10.0.0.5/24", "Gateway=10.0.0.1", "DNS=10.0.0.2"} {
		if !strings.Contains(rendered, line) {
			t.Errorf("cloud-init rendered no %s:\n%s", line, rendered)
		}
	}
}

// netConvert has the real cloud-init parse a network-config and render it
// for Debian with renderer, and returns the file it wrote at rel.
func netConvert(t *testing.T, nc []byte, renderer, rel string) string {
	t.Helper()
	tool := sample.Tool(t, "cloud-init", "")
	dir := t.TempDir()
	p := filepath.Join(dir, "network-config")
	if err := os.WriteFile(p, nc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "devel", "net-convert", "-p", p, "-k", "yaml", "-d", filepath.Join(dir, "out"), "-D", "debian", "-O", renderer).CombinedOutput()
	if err != nil {
		t.Fatalf("cloud-init devel net-convert: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "out", rel))
	if err != nil {
		t.Fatalf("cloud-init rendered no %s: %v", rel, err)
	}
	return string(data)
}
