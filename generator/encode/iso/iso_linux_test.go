package iso

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMount has the Linux kernel, which reads the seed on a node, mount the
// image: with Rock Ridge (the default), then with Joliet only (norock). It
// needs root and a kernel with loop devices and iso9660; it is skipped
// otherwise, CI included (some CI kernels have no iso9660).
func TestMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	for _, tool := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	files := edgeSeed()
	img := writeImage(t, mustNoCloud(t, files))
	for _, tc := range []struct {
		opts      string
		rockRidge bool
	}{
		{"loop,ro", true},
		{"loop,ro,norock", false},
	} {
		t.Run(tc.opts, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mount", "-t", "iso9660", "-o", tc.opts, img, dir).CombinedOutput(); err != nil {
				t.Skipf("cannot mount here (no loop device or no iso9660 in this kernel?): %v\n%s", err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
					t.Errorf("umount: %v\n%s", err, out)
				}
			})
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(files) {
				t.Errorf("mounted root holds %d entries, want %d", len(entries), len(files))
			}
			for _, f := range files {
				p := filepath.Join(dir, f.Name)
				got, err := os.ReadFile(p)
				if err != nil {
					t.Errorf("%s: %v", f.Name, err)
					continue
				}
				if !bytes.Equal(got, f.Data) {
					t.Errorf("%s: read %d bytes that differ from the %d written", f.Name, len(got), len(f.Data))
				}
				if !tc.rockRidge {
					continue
				}
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode() != 0o400 || st.Uid != 0 || st.Gid != 0 || fi.ModTime().Unix() != 0 {
					t.Errorf("%s: %v %d:%d %v; want -r-------- 0:0 at the epoch", f.Name, fi.Mode(), st.Uid, st.Gid, fi.ModTime())
				}
			}
		})
	}
}
