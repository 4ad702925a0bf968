package cloudinit

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// checkFast compares appendUserData with marshalUserData, the yaml.v3 path it
// stands in for, on a (which must have passed layout.Check). Where the fast
// path writes a document, it must be byte for byte the one yaml.v3 writes,
// and read back (independently of both) as a. It reports whether the fast path
// was taken.
func checkFast(t *testing.T, a render.Assets) bool {
	t.Helper()
	fast, ok := appendUserData(nil, a)
	slow, err := marshalUserData(a)
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("the fast path wrote a document for assets yaml.v3 rejects (%v):\n%s", err, fast)
	}
	if !bytes.Equal(fast, slow) {
		t.Fatalf("the fast path differs from yaml.v3 for %+v\nfast:\n%s\nyaml.v3:\n%s", a, fast, slow)
	}
	doc, err := parseback.CloudInit(fast)
	if err != nil {
		t.Fatalf("%v\n%s", err, fast)
	}
	if diffs := parseback.Diff(doc, a); len(diffs) > 0 {
		t.Fatalf("%s\nuser-data:\n%s", strings.Join(diffs, "\n"), fast)
	}
	return true
}

func TestFastPathSample(t *testing.T) {
	a := sample.Assets()
	if !checkFast(t, a) {
		t.Fatal("the sample assets do not take the fast path")
	}
	variants := map[string]func(*render.Assets){
		"no units":    func(a *render.Assets) { a.Units = nil },
		"no dirs":     func(a *render.Assets) { a.Dirs = nil },
		"no files":    func(a *render.Assets) { a.Files = nil },
		"only dirs":   func(a *render.Assets) { a.Files, a.Units = nil, nil },
		"only files":  func(a *render.Assets) { a.Dirs, a.Units = nil, nil },
		"only units":  func(a *render.Assets) { a.Dirs, a.Files = nil, nil },
		"binary file": func(a *render.Assets) { a.Files[0].Contents = []byte("\xff\x00\x01binary") },
		"unit with @": func(a *render.Assets) { a.Units[0].Name = "getty@tty1.service" },
		"two units": func(a *render.Assets) {
			a.Units = append(a.Units, render.Unit{Name: "b.socket", Contents: []byte("[Socket]\n")})
		},
		"long path":     func(a *render.Assets) { a.Dirs[0].Path = "/" + strings.Repeat("very-long-directory-name/", 20) + "x" },
		"non-ASCII":     func(a *render.Assets) { a.Files[0].Contents = []byte("ключ: значение ✓\n") },
		"empty lines":   func(a *render.Assets) { a.Files[0].Contents = []byte("a\n\n\n\nb\n") },
		"one-line file": func(a *render.Assets) { a.Files[0].Contents = []byte(sample.Token + "\n") },
	}
	for name, modify := range variants {
		t.Run(name, func(t *testing.T) {
			a := sample.Assets()
			modify(&a)
			if err := layout.Check(a); err != nil {
				t.Fatal(err)
			}
			if !checkFast(t, a) {
				t.Error("the fast path was not taken")
			}
		})
	}
}

// TestSlowPathCases lists assets the fast path must leave to yaml.v3.
func TestSlowPathCases(t *testing.T) {
	variants := map[string]func(*render.Assets){
		"nothing":              func(a *render.Assets) { *a = render.Assets{Node: a.Node} },
		"path with a space":    func(a *render.Assets) { a.Files[0].Path = "/etc/a b" },
		"dir with a comma":     func(a *render.Assets) { a.Dirs[0].Path = "/etc/a,b" },
		"path with a colon":    func(a *render.Assets) { a.Files[0].Path = "/etc/a:b" },
		"unit starting with 0": func(a *render.Assets) { a.Units[0].Name = "0kubelet.service" },
		"short binary":         func(a *render.Assets) { a.Files[0].Contents = []byte{0xff} },
		"binary base64 digit":  func(a *render.Assets) { a.Files[0].Contents = []byte("\xd7m\xf8\xd7m\xf8") },
		"no trailing newline":  func(a *render.Assets) { a.Files[0].Contents = []byte("a\nb") },
		"one line, no newline": func(a *render.Assets) { a.Files[0].Contents = []byte("yes") },
		"empty file":           func(a *render.Assets) { a.Files[0].Contents = nil },
		"tab in a unit":        func(a *render.Assets) { a.Units[0].Contents = []byte("[Unit]\n\tx\n") },
		"binary unit":          func(a *render.Assets) { a.Units[0].Contents = []byte("\xff\n") },
	}
	for name, modify := range variants {
		t.Run(name, func(t *testing.T) {
			a := sample.Assets()
			modify(&a)
			if err := layout.Check(a); err != nil {
				t.Fatal(err)
			}
			if checkFast(t, a) {
				t.Error("the fast path was taken")
			}
		})
	}
	for _, c := range sample.TrickyContents() {
		a := sample.Assets()
		a.Files[0].Contents = []byte(c.Contents)
		checkFast(t, a)
	}
}

// TestFastModes checks every mode a file and a directory can have.
func TestFastModes(t *testing.T) {
	var a render.Assets
	for m := range fs.FileMode(0o1000) {
		a.Dirs = append(a.Dirs, render.Dir{Path: fmt.Sprintf("/d/%04o", m), Mode: m})
		a.Files = append(a.Files, render.File{Path: fmt.Sprintf("/f/%04o", m), Mode: m, Contents: []byte("x\n")})
	}
	if !checkFast(t, a) {
		t.Fatal("the fast path was not taken")
	}
}

// TestFastMatchesSlow runs checkFast on seeded random assets: plain ones,
// which must all take the fast path, and arbitrary ones.
func TestFastMatchesSlow(t *testing.T) {
	n := 600
	if testing.Short() {
		n = 60
	}
	r := rand.New(rand.NewPCG(3, 4))
	fast, invalid := 0, 0
	for i := range n {
		plain := i%2 == 0
		a := sample.RandomAssets(r.IntN, 8, plain)
		if err := layout.Check(a); err != nil {
			if plain {
				t.Fatalf("generated plain assets are invalid: %v", err)
			}
			invalid++
			continue
		}
		if checkFast(t, a) {
			fast++
		} else if plain {
			t.Fatalf("generated plain assets do not take the fast path: %+v", a)
		}
	}
	t.Logf("%d of %d random assets took the fast path, %d were invalid", fast, n, invalid)
	if fast <= n/2 {
		t.Errorf("only %d of %d random assets took the fast path", fast, n)
	}
}

// TestFastMetaData compares MetaData's direct writing with yaml.v3.
func TestFastMetaData(t *testing.T) {
	ud := []byte(Header + "runcmd:\n  - [systemctl, daemon-reload]\n")
	nodes := []string{
		"kube-node1", "worker-7.example.com", "n", "a", "A", "x.y", "a_b", "a-", "ab1",
		"true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL",
		"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO",
		"off", "Off", "OFF", "nan", "inf", "NaN", "Infinity", "e3", "o0", "tilde",
		"~", "1234", "0x1f", "1e3", ".inf", "-a", "_a", "a b", "a:b", "a: b", "a#b",
		"a #b", "é", "a,b", "[a]", "a\tb", "yes.no", "y-1",
	}
	r := rand.New(rand.NewPCG(5, 6))
	const alphabet = "yYnNtTfFoOeEaz019.-_:# ~+é"
	for range 2000 {
		var b strings.Builder
		for range 1 + r.IntN(6) {
			b.WriteRune([]rune(alphabet)[r.IntN(len([]rune(alphabet)))])
		}
		nodes = append(nodes, b.String())
	}
	fast := 0
	for _, node := range nodes {
		want, err := yaml.Marshal(metaData{InstanceID: layout.Text(InstanceID(node, ud)), LocalHostname: layout.Text(node)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := MetaData(render.Assets{Node: node}, ud)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("node %q: MetaData() =\n%s, %v\nyaml.v3 writes\n%s", node, got, err, want)
		}
		if plainName(node) {
			fast++
		}
	}
	if !plainName("kube-node1") || !plainName("worker-7.example.com") {
		t.Error("ordinary node names do not take the fast path")
	}
	t.Logf("%d of %d node names took the fast path", fast, len(nodes))
}

// TestFixturesFastPath rebuilds the assets of every user-data under
// fixtures/golden (which the kubestrap command's tests compare with what it
// generates) and checks that UserData writes them back byte for byte, by way
// of the fast path: real clusters' documents must not fall back to yaml.v3.
func TestFixturesFastPath(t *testing.T) {
	paths, err := filepath.Glob("../../../fixtures/golden/*/*/user-data")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures found: %v", err)
	}
	for _, p := range paths {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := parseback.CloudInit(want)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(doc.Other) > 0 || len(doc.Commands) > 0 {
			// A user's cloud-config merged in: MergeUserData's output, which
			// its own tests cover.
			t.Logf("%s: merged with a user's cloud-config, skipped", p)
			continue
		}
		a := render.Assets{Node: filepath.Base(filepath.Dir(p)), Restart: doc.Restarted, SSHAuthorizedKeys: doc.SSHKeys[""]}
		units := map[string][]byte{}
		for _, e := range doc.Entries {
			switch {
			case e.Kind == parseback.Dir:
				a.Dirs = append(a.Dirs, render.Dir{Path: e.Path, Mode: fs.FileMode(e.Mode)})
			case path.Dir(e.Path) == render.UnitDir && slices.Contains(doc.Enabled, path.Base(e.Path)):
				units[path.Base(e.Path)] = e.Contents
			default:
				a.Files = append(a.Files, render.File{Path: e.Path, Mode: fs.FileMode(e.Mode), Contents: e.Contents})
			}
		}
		for _, name := range doc.Enabled {
			a.Units = append(a.Units, render.Unit{Name: name, Contents: units[name]})
		}
		got, err := UserData(a)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: UserData of its assets differs:\n%s", p, got)
		}
		// SSH keys are quoted as yaml.v3 sees fit: yaml.v3 writes them.
		if fast := checkFast(t, a); fast != (len(a.SSHAuthorizedKeys) == 0) {
			t.Errorf("%s: fast path = %v", p, fast)
		}
	}
}
