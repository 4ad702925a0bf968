package cloudinit

import (
	"bytes"
	"io/fs"
	"path"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// fuzzSeeds are strings where a hand-written YAML emitter goes wrong:
// escapes, NUL, line breaks YAML knows and JSON does not, a lone newline, a
// leading tab, CRLF, invalid UTF-8, indicators, reserved words.
var fuzzSeeds = []string{
	"\b", "\f", "\x00", "\u2028", "\u0085", "\n", "\tleading tab\n", "crlf\r\n", "\xff\xfe", "\xff\x00\x01binary",
	"a\n", "a\nb\n", "a\nb", " lead\n", "trail \n", "---\n", "# c\n", "- x\n", "é ✓\n", "\ufeffbom\n", "yes", "0644", "",
}

// fuzzAssets is the sample with one more directory, file and unit, made
// from the fuzzed values: the directory at p with dirMode, a file in it
// with fileMode and contents, and a unit named after p's last element; the
// kubelet unit gets unit as its contents.
func fuzzAssets(node, p string, dirMode, fileMode uint16, contents, unit []byte) render.Assets {
	a := sample.Assets()
	a.Node = node
	a.Dirs = append(a.Dirs, render.Dir{Path: p, Mode: fs.FileMode(dirMode) & fs.ModePerm})
	a.Files = append(a.Files, render.File{Path: path.Join(p, "file"), Mode: fs.FileMode(fileMode) & fs.ModePerm, Contents: contents})
	a.Units[0].Contents = unit
	a.Units = append(a.Units, render.Unit{Name: path.Base(p) + ".service", Contents: []byte("[Unit]\n")})
	return a
}

// FuzzUserDataFastMatchesYAML requires appendUserData, wherever it writes a
// document, to write marshalUserData's bytes, and UserData's document,
// whichever path wrote it, to read back as exactly the assets' directories,
// files and units; and MetaData to be what yaml.v3 writes for it.
//
//	go test -run '^$' -fuzz '^FuzzUserDataFastMatchesYAML$' -fuzztime 30s ./generator/encode/cloudinit
func FuzzUserDataFastMatchesYAML(f *testing.F) {
	f.Add("kube-node1", "/var/lib/extra", uint16(0o755), uint16(0o644), []byte(sample.KubeletConfig), []byte(sample.KubeletUnit))
	for _, s := range fuzzSeeds {
		f.Add("kube-node1", "/etc/x", uint16(0o700), uint16(0o600), []byte(s), []byte("[Unit]\nDescription="+s+"\n"))
		f.Add(s, "/etc/"+s, uint16(0o1777), uint16(0o4755), []byte(s+"x\n"), []byte(s))
	}
	for _, p := range []string{"/\xff", "/a\xc3", "/a b", "/a,b", "/a:b", "/a: b", "/[x]", "/{x}", "/#x", "/a #x", "/'q'", `/"q"`, "/~", "/null", "/0x1f", "/-", "/é"} {
		f.Add("yes", p, uint16(0o750), uint16(0o640), []byte("a\n"), []byte("[Unit]\n"))
	}
	f.Fuzz(func(t *testing.T, node, p string, dirMode, fileMode uint16, contents, unit []byte) {
		a := fuzzAssets(node, p, dirMode, fileMode, contents, unit)
		if err := layout.Check(a); err != nil {
			if _, err := UserData(a); err == nil {
				t.Fatalf("UserData accepts assets layout.Check rejects")
			}
			return
		}
		fast, ok := appendUserData(nil, a)
		slow, slowErr := marshalUserData(a)
		if ok {
			if slowErr != nil {
				t.Fatalf("the fast path wrote a document for assets yaml.v3 rejects (%v):\n%s", slowErr, fast)
			}
			if !bytes.Equal(fast, slow) {
				t.Fatalf("the fast path differs from yaml.v3:\nfast:\n%s\nyaml.v3:\n%s", fast, slow)
			}
		}
		ud, err := UserData(a)
		if err != nil {
			if layout.IsText(unit) {
				t.Fatalf("UserData: %v", err)
			}
			return
		}
		if ok && !bytes.Equal(ud, fast) {
			t.Fatalf("UserData is not the fast path's document")
		}
		doc, err := parseback.CloudInit(ud)
		if err != nil {
			t.Fatalf("%v\nuser-data:\n%s", err, ud)
		}
		if diffs := parseback.Diff(doc, a); len(diffs) > 0 {
			t.Fatalf("%s\nuser-data:\n%s", strings.Join(diffs, "\n"), ud)
		}
		// yaml.v3 reads a !!binary scalar back into a string, so Diff
		// does not see one, but cloud-init's schema wants strings.
		if tag := binaryTag(t, ud); tag != "" {
			t.Fatalf("user-data has a %s:\n%s", tag, ud)
		}
		checkMetaData(t, node, ud)
	})
}

// binaryTag returns the tag of the first scalar of doc that is not a string,
// a boolean or null (the only types in cloud-config that kubestrap writes),
// or "".
func binaryTag(t *testing.T, doc []byte) string {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node) string
	walk = func(n *yaml.Node) string {
		if n.Kind == yaml.ScalarNode {
			switch n.ShortTag() {
			case "!!str", "!!bool", "!!null":
			default:
				return n.ShortTag() + " " + n.Value
			}
		}
		for _, c := range n.Content {
			if tag := walk(c); tag != "" {
				return tag
			}
		}
		return ""
	}
	return walk(&root)
}

// FuzzMetaDataFastMatchesYAML requires MetaData to write what yaml.v3
// writes for any node name, and that to read back as the name and its
// instance-id.
//
//	go test -run '^$' -fuzz '^FuzzMetaDataFastMatchesYAML$' -fuzztime 30s ./generator/encode/cloudinit
func FuzzMetaDataFastMatchesYAML(f *testing.F) {
	for _, s := range append(fuzzSeeds, "kube-node1", "worker-7.example.com", "n", "y", "Y", "on", "No", "NULL", "~", "a-", "x.y", "1e3", ".inf", "a: b", "a #b") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, node string) {
		checkMetaData(t, node, []byte(Header+"runcmd:\n  - [systemctl, daemon-reload]\n"))
	})
}

// checkMetaData compares MetaData(node, ud) with yaml.v3's document and
// reads it back.
func checkMetaData(t *testing.T, node string, ud []byte) {
	t.Helper()
	got, err := MetaData(render.Assets{Node: node}, ud)
	switch {
	case node == "":
		if err == nil {
			t.Fatal("MetaData accepts an empty node name")
		}
		return
	case !layout.IsText([]byte(node)):
		// YAML cannot carry it as a string.
		if err == nil {
			t.Fatalf("node %q: MetaData accepts a name that is not UTF-8:\n%s", node, got)
		}
		return
	case err != nil:
		t.Fatalf("node %q: MetaData: %v", node, err)
	}
	want, err := yaml.Marshal(metaData{InstanceID: layout.Text(InstanceID(node, ud)), LocalHostname: layout.Text(node)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("node %q: MetaData() =\n%s\nyaml.v3 writes\n%s", node, got, want)
	}
	var back struct {
		InstanceID    string `yaml:"instance-id"`
		LocalHostname string `yaml:"local-hostname"`
	}
	if err := yaml.Unmarshal(got, &back); err != nil {
		t.Fatalf("node %q: %v\n%s", node, err, got)
	}
	if back.LocalHostname != node || back.InstanceID != InstanceID(node, ud) {
		t.Fatalf("node %q: meta-data reads back as %+v:\n%s", node, back, got)
	}
}
