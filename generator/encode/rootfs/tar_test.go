package rootfs_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/rootfs"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

func stockAssets() render.Assets {
	a := sample.Assets()
	a.Fetches = []render.Fetch{{
		Path: "/usr/local/bin/kubelet", Mode: 0o755, URL: "http://mirror/v1.37.2/kubelet",
		Hash: "sha256-" + strings.Repeat("ab", 32), RequiredBy: render.UnitName,
	}}
	return a
}

type item struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, data []byte) map[string]item {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	out := map[string]item{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(h.Name, "/")
		if _, dup := out[name]; dup {
			t.Errorf("%s twice", name)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "root" || h.Gname != "root" {
			t.Errorf("%s owned by %d:%d (%s:%s)", name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		out[name] = item{h, b}
	}
}

// TestTarIsWhatCloudInitWrites: the archive holds every file, directory and
// unit the cloud-init document writes, with its mode and contents, and the
// units enabled as systemctl enable would; nothing else but parents.
func TestTarIsWhatCloudInitWrites(t *testing.T) {
	a := stockAssets()
	data, err := rootfs.Tar(a)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := rootfs.Tar(a)
	if !bytes.Equal(data, again) {
		t.Error("two archives of the same assets differ")
	}
	got := readTar(t, data)
	ud, err := cloudinit.UserData(a)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := parseback.CloudInit(ud)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, e := range doc.Entries {
		want[e.Path] = true
		g, ok := got[e.Path]
		switch {
		case !ok:
			t.Errorf("missing %s", e.Path)
			continue
		case e.Kind == parseback.Dir && g.hdr.Typeflag != tar.TypeDir, e.Kind == parseback.File && g.hdr.Typeflag != tar.TypeReg:
			t.Errorf("%s: type %c, want a %s", e.Path, g.hdr.Typeflag, e.Kind)
		case uint32(g.hdr.Mode) != e.Mode:
			t.Errorf("%s: mode %04o, want %04o", e.Path, g.hdr.Mode, e.Mode)
		case !bytes.Equal(g.data, e.Contents):
			t.Errorf("%s: contents differ", e.Path)
		}
	}
	links := map[string]string{
		"/etc/systemd/system/multi-user.target.wants/kubelet.service":          "/etc/systemd/system/kubelet.service",
		"/etc/systemd/system/kubelet.service.requires/kubelet-install.service": "/etc/systemd/system/kubelet-install.service",
	}
	for l, target := range links {
		if g, ok := got[l]; !ok || g.hdr.Typeflag != tar.TypeSymlink || g.hdr.Linkname != target {
			t.Errorf("%s: %+v, want a symlink to %s", l, g.hdr, target)
		}
	}
	if slices := doc.Enabled; len(slices) != 2 {
		t.Errorf("the document enables %v", slices)
	}
	// Nothing else: not even /etc or /usr, whose modes and times an
	// extraction would reset.
	for p, g := range got {
		if !want[p] && links[p] == "" {
			t.Errorf("unexpected %s (%c %04o)", p, g.hdr.Typeflag, g.hdr.Mode)
		}
	}
	if _, ok := got["/usr/local/bin/kubelet"]; ok {
		t.Error("the archive holds the fetched file itself")
	}
}
