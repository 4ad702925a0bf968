// Package rootfs encodes a node's render.Assets as a tar archive of the files
// its first boot would lay down, for baking them into an image
// (virt-customize --tar-in, Packer, mkosi): what the cloud-init document
// writes, with the same modes, owned by root, and the units enabled the way
// `systemctl enable` would (the symlinks its [Install] section asks for),
// since no runcmd runs on a baked image. A static network and SSH keys
// are not in it: an image builder configures those for the image.
package rootfs

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// Name is the archive's file name in a node's directory.
const Name = "rootfs.tar"

// modTime is every entry's: the archive depends on the assets only.
var modTime = time.Unix(0, 0).UTC()

type entry struct {
	hdr  tar.Header
	data []byte
}

// Tar returns a's files as a tar archive: parents before children, every
// entry owned by root (uid and gid 0, names root), so that extracting it as
// root (tar --same-owner, the default for root) gives the node's files.
// Making it needs no privileges.
func Tar(a render.Assets) ([]byte, error) {
	if err := layout.Check(a); err != nil {
		return nil, fmt.Errorf("root filesystem for node %q: %w", a.Node, err)
	}
	a, err := cloudinit.Lower(a)
	if err != nil {
		return nil, err
	}
	entries := map[string]*entry{}
	add := func(p string, e *entry) error {
		if _, ok := entries[p]; ok {
			return fmt.Errorf("root filesystem for node %q: %s written twice", a.Node, p)
		}
		entries[p] = e
		return nil
	}
	header := func(p string, typ byte, mode fs.FileMode) tar.Header {
		return tar.Header{
			Typeflag: typ, Name: strings.TrimPrefix(p, "/"), Mode: int64(mode.Perm()),
			Uid: 0, Gid: 0, Uname: "root", Gname: "root", ModTime: modTime, Format: tar.FormatPAX,
		}
	}
	for _, d := range a.Dirs {
		h := header(d.Path, tar.TypeDir, d.Mode)
		h.Name += "/"
		if err := add(d.Path, &entry{hdr: h}); err != nil {
			return nil, err
		}
	}
	file := func(p string, mode fs.FileMode, data []byte) error {
		h := header(p, tar.TypeReg, mode)
		h.Size = int64(len(data))
		return add(p, &entry{hdr: h, data: data})
	}
	for _, f := range a.Files {
		if err := file(f.Path, f.Mode, f.Contents); err != nil {
			return nil, err
		}
	}
	for _, u := range a.Units {
		p := layout.UnitPath(u.Name)
		if err := file(p, render.UnitMode, u.Contents); err != nil {
			return nil, err
		}
		links, err := enableLinks(u)
		if err != nil {
			return nil, fmt.Errorf("root filesystem for node %q: %w", a.Node, err)
		}
		for _, l := range links {
			h := header(l, tar.TypeSymlink, 0o777)
			h.Linkname = p
			if err := add(l, &entry{hdr: h}); err != nil {
				return nil, err
			}
		}
	}
	// Parents the assets do not name are left out: tar creates a missing
	// one itself, and an entry for /etc or /usr would reset the image's
	// own on extraction (GNU tar restores a directory's mode, owner and
	// time by default).
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Sorted by path, a parent sorts before what it holds.
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range entries {
			if !yield(p) {
				return
			}
		}
	}) {
		e := entries[p]
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("root filesystem for node %q: %s: %w", a.Node, p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("root filesystem for node %q: %s: %w", a.Node, p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("root filesystem for node %q: %w", a.Node, err)
	}
	return buf.Bytes(), nil
}

// enableLinks are the symlinks `systemctl enable` makes for u: one in
// <target>.wants/ or <target>.requires/ under /etc/systemd/system for each
// unit its [Install] section's WantedBy= and RequiredBy= name.
func enableLinks(u render.Unit) ([]string, error) {
	opts, err := unit.DeserializeOptions(bytes.NewReader(u.Contents))
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", u.Name, err)
	}
	var links []string
	for _, o := range opts {
		if o.Section != "Install" {
			continue
		}
		var suffix string
		switch o.Name {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		case "Alias", "Also", "DefaultInstance", "UpheldBy":
			return nil, fmt.Errorf("unit %s: [Install] %s= is not supported in an archive", u.Name, o.Name)
		default:
			continue
		}
		for _, target := range strings.Fields(o.Value) {
			if strings.ContainsAny(target, "/\x00") {
				return nil, fmt.Errorf("unit %s: %s=%s is not a unit name", u.Name, o.Name, target)
			}
			links = append(links, path.Join(render.UnitDir, target+suffix, u.Name))
		}
	}
	return links, nil
}
