package rootfs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/rootfs"
	"github.com/kubestrap/kubestrap/generator/render"
)

// TestTarExtracts extracts the archive with GNU tar, as root (as an image
// builder does), and asks systemd itself, offline, what is enabled.
func TestTarExtracts(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux: extraction keeps the archive's owners only for root")
	}
	for _, tool := range []string{"tar", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	data, err := rootfs.Tar(stockAssets())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, rootfs.Name)
	if err := os.WriteFile(archive, data, 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	if out, err := exec.Command("tar", "--extract", "--numeric-owner", "--preserve-permissions", "--file", archive, "--directory", root).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(root, "/etc/kubernetes/bootstrap.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig %v uid %d gid %d", fi.Mode(), st.Uid, st.Gid)
	}
	if fi, err := os.Stat(filepath.Join(root, render.KubeletDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v %v", render.KubeletDir, fi, err)
	}
	for _, u := range []string{"kubelet.service", "kubelet-install.service"} {
		out, err := exec.Command("systemctl", "--root", root, "is-enabled", u).CombinedOutput()
		if strings.TrimSpace(string(out)) != "enabled" {
			t.Errorf("systemctl --root is-enabled %s: %q %v", u, out, err)
		}
	}
}
