//go:build unix

package cloudinit_test

// What real cloud-init writes, owners included, is a question for a unix
// host (and a root one): cloud-init runs on nothing else.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// cloudInitScript loads user-data with cloud-init's own YAML loader, moves
// every path under a scratch root, hands write_files to cloud-init's module,
// and prints the runcmd script cloud-init would run (its shellify), with
// systemctl commands dropped and install targets moved under the root too.
// What lands on disk is then what a node would get.
const cloudInitScript = `
import sys
from cloudinit import util
from cloudinit.config import cc_write_files
root = sys.argv[2]
with open(sys.argv[1]) as f:
    cfg = util.load_yaml(f.read())
files = cfg["write_files"]
for f in files:
    f["path"] = root + f["path"]
cc_write_files.write_files("write_files", files, "root:root")
cmds = []
for c in cfg["runcmd"]:
    if c[0] == "systemctl":
        continue
    if c[0] != "install":
        raise SystemExit("unexpected runcmd %r" % (c,))
    cmds.append(c[:-1] + [root + c[-1]])
sys.stdout.write(util.shellify(cmds))
`

// TestCloudInitWritesFiles runs cloud-init's write_files module and then its
// runcmd script (minus systemctl) under a scratch root, and checks the
// resulting tree. Among other things it verifies the claim the encoder relies on: that
// install -d, running after write_files, fixes the mode of a directory that
// write_files already created as a parent with 0755.
func TestCloudInitWritesFiles(t *testing.T) {
	python := cloudInitPython(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: write_files chowns to root:root")
	}
	tightened := sample.Assets()
	// /etc/kubernetes/pki already exists (0755, made by write_files as the
	// parent of ca.crt) when install -d runs.
	tightened.Dirs[1].Mode = 0o750
	cases := []struct {
		name   string
		assets render.Assets
	}{
		{"sample", sample.Assets()},
		{"parent dir tightened", tightened},
		{"tricky", sample.TrickyAssets()},
		{"generated", generatedAssets(t)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.assets
			ud, err := cloudinit.UserData(a)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			udPath := filepath.Join(dir, "user-data")
			if err := os.WriteFile(udPath, ud, 0o600); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(dir, "root")
			var stderr bytes.Buffer
			cmd := exec.Command(python, "-c", cloudInitScript, udPath, root)
			cmd.Stderr = &stderr
			script, err := cmd.Output()
			if err != nil {
				t.Fatalf("cloud-init write_files: %v\n%s", err, stderr.String())
			}
			// cloud-init's runcmd script has no `set -e`; -e here makes a
			// failing command visible instead of skipped.
			if out, err := exec.Command("sh", "-e", "-c", string(script)).CombinedOutput(); err != nil {
				t.Fatalf("runcmd script: %v\n%s\nscript:\n%s", err, out, script)
			}
			for _, d := range onDisk(t, root, a) {
				t.Error(d)
			}
		})
	}
}

// onDisk compares the tree under root with a.
func onDisk(t *testing.T, root string, a render.Assets) []string {
	t.Helper()
	var diffs []string
	check := func(p string, wantMode fs.FileMode, wantDir bool, wantContents []byte) {
		fi, err := os.Lstat(root + p)
		if err != nil {
			diffs = append(diffs, err.Error())
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.IsDir() != wantDir || fi.Mode().Perm() != wantMode.Perm() || st.Uid != 0 || st.Gid != 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %v uid=%d gid=%d, want %v root:root dir=%v", p, fi.Mode(), st.Uid, st.Gid, wantMode, wantDir))
		}
		if !wantDir {
			got, err := os.ReadFile(root + p)
			if err != nil {
				diffs = append(diffs, err.Error())
			} else if !bytes.Equal(got, wantContents) {
				diffs = append(diffs, fmt.Sprintf("%s: contents\n got  %q\n want %q", p, got, wantContents))
			}
		}
	}
	for _, d := range a.Dirs {
		check(d.Path, d.Mode, true, nil)
	}
	for _, f := range a.Files {
		check(f.Path, f.Mode, false, f.Contents)
	}
	for _, u := range a.Units {
		check(render.UnitDir+"/"+u.Name, render.UnitMode, false, u.Contents)
	}
	return diffs
}
