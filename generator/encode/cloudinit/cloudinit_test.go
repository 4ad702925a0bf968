package cloudinit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestUserDataSample(t *testing.T) {
	a := sample.Assets()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
		t.Errorf("user-data does not start with the #cloud-config line: %q", ud[:min(len(ud), 40)])
	}
	cc, err := parseback.ParseCloudConfig(ud)
	if err != nil {
		t.Fatal(err)
	}

	wantFiles := []parseback.WriteFile{
		{Path: "/etc/kubernetes/pki/ca.crt", Owner: "root:root", Permissions: "0644", Content: sample.CAPEM},
		{Path: "/etc/kubernetes/bootstrap.kubeconfig", Owner: "root:root", Permissions: "0600", Content: sample.Kubeconfig},
		{Path: "/etc/kubernetes/kubelet.config.json", Owner: "root:root", Permissions: "0644", Content: sample.KubeletConfig},
		{Path: "/etc/systemd/system/kubelet.service", Owner: "root:root", Permissions: "0644", Content: sample.KubeletUnit},
	}
	if !slices.Equal(cc.WriteFiles, wantFiles) {
		t.Errorf("write_files =\n%+v\nwant\n%+v", cc.WriteFiles, wantFiles)
	}
	wantCmds := [][]string{
		{"install", "-d", "-m", "00755", "-o", "root", "-g", "root", "/etc/kubernetes"},
		{"install", "-d", "-m", "00755", "-o", "root", "-g", "root", "/etc/kubernetes/pki"},
		{"install", "-d", "-m", "00700", "-o", "root", "-g", "root", "/var/lib/kubelet"},
		{"systemctl", "daemon-reload"},
		{"systemctl", "enable", "--now", "kubelet.service"},
	}
	if !slices.EqualFunc(cc.RunCmd, wantCmds, slices.Equal) {
		t.Errorf("runcmd =\n%q\nwant\n%q", cc.RunCmd, wantCmds)
	}

	// cloud-init reads permissions with int(x, 8) and its schema wants a
	// string; an unquoted 0600 would be the integer 384 to PyYAML.
	for _, p := range []string{`permissions: "0644"`, `permissions: "0600"`, `[install, -d, -m, "00700", -o, root, -g, root, /var/lib/kubelet]`} {
		if !bytes.Contains(ud, []byte(p)) {
			t.Errorf("user-data lacks %s", p)
		}
	}

	doc, err := parseback.CloudInit(ud)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range parseback.Diff(doc, a) {
		t.Error(d)
	}
}

func TestContentsRoundTrip(t *testing.T) {
	for _, c := range sample.TrickyContents() {
		t.Run(c.Name, func(t *testing.T) {
			a := sample.Assets()
			a.Files[0].Contents = []byte(c.Contents)
			ud, err := cloudinit.UserData(a)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := parseback.CloudInit(ud)
			if err != nil {
				t.Fatal(err)
			}
			if diffs := parseback.Diff(doc, a); len(diffs) > 0 {
				t.Errorf("%s\nuser-data:\n%s", strings.Join(diffs, "\n"), ud)
			}
		})
	}
}

func TestInvalidAssets(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*render.Assets)
		mention string
	}{
		{"relative path", func(a *render.Assets) { a.Dirs[0].Path = "var/lib/kubelet" }, "not absolute"},
		{"duplicate path", func(a *render.Assets) { a.Dirs[0].Path = a.Files[0].Path }, "already used"},
		{"unit without suffix", func(a *render.Assets) { a.Units[0].Name = "kubelet" }, "suffix"},
		{"type bits in mode", func(a *render.Assets) { a.Files[0].Mode = fs.ModeSymlink | 0o777 }, "type bits"},
		{"setgid", func(a *render.Assets) { a.Dirs[0].Mode = fs.ModeSetgid | 0o775 }, "setgid"},
		{"binary unit", func(a *render.Assets) { a.Units[0].Contents = []byte{0xff} }, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := sample.Assets()
			tt.modify(&a)
			ud, err := cloudinit.UserData(a)
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("UserData() = %v, want an error mentioning %q", err, tt.mention)
			}
			if _, err := cloudinit.MetaData(a, ud); err == nil {
				t.Errorf("MetaData() accepted the user-data of a failed UserData()")
			}
		})
	}
}

func TestMetaData(t *testing.T) {
	a := sample.Assets()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	md, err := cloudinit.MetaData(a, ud)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		InstanceID    string `yaml:"instance-id"`
		LocalHostname string `yaml:"local-hostname"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(md))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("meta-data does not parse: %v\n%s", err, md)
	}
	sum := sha256.Sum256(ud)
	if want := "kube-node1-" + hex.EncodeToString(sum[:])[:12]; got.InstanceID != want {
		t.Errorf("instance-id = %q, want %q", got.InstanceID, want)
	}
	if got.LocalHostname != "kube-node1" {
		t.Errorf("local-hostname = %q, want kube-node1", got.LocalHostname)
	}

	udAgain, err := cloudinit.UserData(sample.Assets())
	if err != nil {
		t.Fatal(err)
	}
	again, err := cloudinit.MetaData(sample.Assets(), udAgain)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, again) {
		t.Errorf("meta-data is not deterministic:\n%s\n%s", md, again)
	}

	// A changed document must be a new instance, or cloud-init on a node
	// that already ran the old one would skip write_files and runcmd.
	changed := sample.Assets()
	changed.Files[1].Contents = bytes.Replace(changed.Files[1].Contents, []byte(sample.Token), []byte("abcdef.0123456789abcdef"), 1)
	ud2, err := cloudinit.UserData(changed)
	if err != nil {
		t.Fatal(err)
	}
	md2, err := cloudinit.MetaData(changed, ud2)
	if err != nil {
		t.Fatal(err)
	}
	if id := instanceID(t, md2); id == got.InstanceID || !strings.HasPrefix(id, "kube-node1-") {
		t.Errorf("instance-id after a token change = %q (before %q)", id, got.InstanceID)
	}

	if _, err := cloudinit.MetaData(render.Assets{}, ud); err == nil {
		t.Error("MetaData accepted an empty node name")
	}
	for _, bad := range [][]byte{nil, []byte("instance-id: x\n")} {
		if _, err := cloudinit.MetaData(a, bad); err == nil {
			t.Errorf("MetaData accepted user-data %q", bad)
		}
	}
}

func instanceID(t *testing.T, md []byte) string {
	t.Helper()
	var m map[string]string
	if err := yaml.Unmarshal(md, &m); err != nil {
		t.Fatal(err)
	}
	return m["instance-id"]
}

// TestMetaDataQuoting makes sure node names YAML would read as something
// other than a string stay strings.
func TestMetaDataQuoting(t *testing.T) {
	for _, node := range []string{"yes", "off", "1234", "0x1f", "1e3", "null", "node-1"} {
		a := sample.Assets()
		a.Node = node
		ud, err := cloudinit.UserData(a)
		if err != nil {
			t.Fatal(err)
		}
		md, err := cloudinit.MetaData(a, ud)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(md, &m); err != nil {
			t.Fatal(err)
		}
		if m["local-hostname"] != node {
			t.Errorf("node %q: local-hostname reads back as %#v:\n%s", node, m["local-hostname"], md)
		}
	}
}

func TestGolden(t *testing.T) {
	a := sample.Assets()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	md, err := cloudinit.MetaData(a, ud)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "user-data", ud)
	golden(t, "meta-data", md)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; if the change is intended, run go test -update\ngot:\n%s", p, got)
	}
}

// TestCloudInitSchema runs the real `cloud-init schema` on the sample and on
// the tricky assets, and once on a broken document to show it can fail.
func TestCloudInitSchema(t *testing.T) {
	tool := sample.Tool(t, "cloud-init", "")
	dir := t.TempDir()
	schema := func(t *testing.T, ud []byte) (string, error) {
		t.Helper()
		p := filepath.Join(dir, "user-data")
		if err := os.WriteFile(p, ud, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tool, "schema", "-c", p).CombinedOutput()
		return string(out), err
	}

	a := sample.Assets()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	// cloud-init 22.4 prints "Valid cloud-config: FILE" and exits 0; errors
	// exit 1. Deprecated keys still pass, so look for them explicitly.
	if out, err := schema(t, ud); err != nil || strings.Contains(strings.ToLower(out), "deprecated") {
		t.Errorf("cloud-init schema on the sample: %v\n%s", err, out)
	}
	tricky, err := cloudinit.UserData(sample.TrickyAssets())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := schema(t, tricky); err != nil || strings.Contains(strings.ToLower(out), "deprecated") {
		t.Errorf("cloud-init schema on the tricky assets: %v\n%s", err, out)
	}
	generated, err := cloudinit.UserData(generatedAssets(t))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := schema(t, generated); err != nil || strings.Contains(strings.ToLower(out), "deprecated") {
		t.Errorf("cloud-init schema on the generated assets: %v\n%s", err, out)
	}
	broken := bytes.Replace(ud, []byte(`permissions: "0600"`), []byte(`permissions: 0600`), 1)
	if out, err := schema(t, broken); err == nil {
		t.Errorf("cloud-init schema accepted an integer permissions field:\n%s", out)
	}
}

// cloudInitPython finds the interpreter cloud-init itself runs under, which
// may not be the python3 first on PATH (pyenv and the like).
func cloudInitPython(t *testing.T) string { return sample.CloudInitPython(t) }

// generatedAssets returns seeded random assets made only of what UserData
// writes without yaml.v3 (see sample.RandomAssets), many files of them, so the
// real cloud-init runs check that path's output too.
func generatedAssets(t *testing.T) render.Assets {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	var a render.Assets
	for len(a.Files) < 40 || len(a.Dirs) == 0 || len(a.Units) == 0 {
		a = sample.RandomAssets(r.IntN, 80, true)
	}
	if !cloudinit.FastPath(a) {
		t.Fatal("the generated assets do not take UserData's fast path")
	}
	return a
}
