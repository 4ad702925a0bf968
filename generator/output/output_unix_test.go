//go:build unix

package output_test

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubestrap/kubestrap/generator/output"
)

// Modes are exact whatever the umask: secrets must not end up group-readable
// under umask 0, and 0644 files must not end up 0600 under umask 077. The
// umask is the process's, so this test must not run in parallel.
func TestModesIgnoreUmask(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o077, 0o277} {
		t.Run(fmt.Sprintf("umask %#o", umask), func(t *testing.T) {
			old := syscall.Umask(umask)
			defer syscall.Umask(old)
			dir := t.TempDir()
			s, err := output.Begin(filepath.Join(dir, "out"), false)
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(filepath.Join(dir, s.StagingName())); err != nil || fi.Mode() != fs.ModeDir|0o700 {
				t.Errorf("staging directory: %v, %v; want drwx------", fi.Mode(), err)
			}
			if err := s.WriteFiles("n1", []output.File{
				{Name: "user-data", Data: []byte("x"), Mode: 0o600},
				{Name: "meta-data", Data: []byte("x"), Mode: 0o644},
			}); err != nil {
				t.Fatal(err)
			}
			if err := fill(s); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]fs.FileMode{
				"out":                   fs.ModeDir | 0o700,
				"out/n1":                fs.ModeDir | 0o700,
				"out/n1/user-data":      0o600,
				"out/n1/meta-data":      0o644,
				"out/tokens.yaml":       0o600,
				"out/.kubestrap-output": 0o600,
			} {
				fi, err := os.Lstat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != want {
					t.Errorf("%s mode = %v, want %v", name, fi.Mode(), want)
				}
			}
		})
	}
}

// Once Begin has opened the parent, swapping the parent's path for a
// symlink does not move the run: nothing lands in the symlink's target.
func TestParentSwappedForSymlink(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("parent", 0o755)
	os.Mkdir("elsewhere", 0o755)
	s, err := output.Begin("parent/out", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFiles("n1", nodeFiles); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename("parent", "moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("elsewhere", "parent"); err != nil {
		t.Fatal(err)
	}
	// What a path-based run would then write into.
	os.Mkdir(filepath.Join("elsewhere", s.StagingName()), 0o700)
	if err := fill(s, "n2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	diff(t, snapshot(t, "elsewhere"), map[string]string{s.StagingName(): "/"})
	diff(t, snapshot(t, "moved"), wantOutput("out", "n1", "n2"))
}

// Symlinks placed inside the staging directory are never written through,
// and Abort removes them without following them.
func TestStagedSymlinks(t *testing.T) {
	tests := []struct {
		name  string
		link  string // in the staging directory
		write func(s *output.Stage) error
	}{
		{"node directory, WriteFiles", "n1", func(s *output.Stage) error { return s.WriteFiles("n1", nodeFiles) }},
		{"node directory, WriteFile", "n1", func(s *output.Stage) error { return s.WriteFile("n1/config.ign", []byte("x"), 0o600) }},
		{"node directory, Create", "n1", func(s *output.Stage) error {
			_, err := s.Create("n1/config.ign", 0o600)
			return err
		}},
		{"top-level file", "tokens.yaml", func(s *output.Stage) error { return fill(s) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			write(t, map[string]string{"victim/tokens.yaml": "the user's"})
			s, err := output.Begin("parent/out", false)
			if err != nil {
				t.Fatal(err)
			}
			target, _ := filepath.Abs("victim")
			if tt.link == "tokens.yaml" {
				target = filepath.Join(target, "tokens.yaml")
			}
			if err := os.Symlink(target, filepath.Join("parent", s.StagingName(), tt.link)); err != nil {
				t.Fatal(err)
			}
			if err := tt.write(s); err == nil {
				t.Error("wrote through a symlink")
			}
			if err := s.Abort(); err != nil {
				t.Fatal(err)
			}
			diff(t, snapshot(t, "."), map[string]string{"parent": "/", "victim": "/", "victim/tokens.yaml": "the user's"})
		})
	}
}

const helperEnv = "KUBESTRAP_OUTPUT_TEST_STAGE"

// TestStaleStaging: the next run removes the staging directory of a run
// that was killed, and leaves alone those of runs in progress.
func TestStaleStaging(t *testing.T) {
	if target := os.Getenv(helperEnv); target != "" {
		// The run to be killed: stage a node, say where, and wait.
		s, err := output.Begin(target, false)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if err := s.WriteFiles("n1", nodeFiles); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("staging:", s.StagingName())
		time.Sleep(time.Minute)
		os.Exit(1)
	}

	t.Run("killed run", func(t *testing.T) {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestStaleStaging$")
		cmd.Env = append(os.Environ(), helperEnv+"="+filepath.Join(dir, "out"))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		cmd.Process.Kill() // SIGKILL: no chance to clean up
		cmd.Wait()
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "staging: ")
		if err != nil || !ok {
			t.Fatalf("helper said %q (%v)", line, err)
		}
		if _, err := os.Stat(filepath.Join(dir, name, "n1", "config.ign")); err != nil {
			t.Fatalf("the killed run left no staging directory: %v", err)
		}
		s, err := output.Begin(filepath.Join(dir, "out"), false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Abort()
		want := "removed " + name + ", the staging directory of an interrupted run"
		if w := s.Warnings(); len(w) != 1 || w[0] != want {
			t.Errorf("warnings = %q, want %q", w, want)
		}
		diff(t, snapshot(t, dir), map[string]string{s.StagingName(): "/", s.StagingName() + "/.kubestrap-staging": ""})
	})

	t.Run("unlocked, with a symlink out", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		write(t, map[string]string{
			".out.kubestrap-12345/.kubestrap-staging": "",
			".out.kubestrap-12345/n1/config.ign":      "x",
			".out.kubestrap-12345/tokens.yaml":        "x",
			"victim/file":                             "the user's",
		})
		os.Symlink("../../victim", ".out.kubestrap-12345/n1/link")
		os.Symlink("victim", ".out.kubestrap-67890") // a staging name, but a symlink
		s, err := output.Begin("out", false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Abort()
		w := s.Warnings()
		if len(w) != 2 || w[0] != "removed .out.kubestrap-12345, the staging directory of an interrupted run" ||
			!strings.HasPrefix(w[1], "left .out.kubestrap-67890, which looks like kubestrap's staging directory: ") {
			t.Errorf("warnings = %q", w)
		}
		diff(t, snapshot(t, "."), map[string]string{
			s.StagingName(): "/", s.StagingName() + "/.kubestrap-staging": "",
			"victim": "/", "victim/file": "the user's", ".out.kubestrap-67890": "-> victim",
		})
	})

	t.Run("a directory of the user's with a staging name", func(t *testing.T) {
		// No run's mark and no manifest: not kubestrap's, never removed.
		t.Chdir(t.TempDir())
		write(t, map[string]string{".out.kubestrap-backup/important.txt": "the user's"})
		s, err := output.Begin("out", false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Abort()
		want := "left .out.kubestrap-backup: it has a kubestrap staging name, but kubestrap did not make it"
		if w := s.Warnings(); len(w) != 1 || w[0] != want {
			t.Errorf("warnings = %q, want %q", w, want)
		}
		if b, _ := os.ReadFile(".out.kubestrap-backup/important.txt"); string(b) != "the user's" {
			t.Errorf("important.txt = %q", b)
		}
	})

	t.Run("an old output moved aside", func(t *testing.T) {
		// Killed between moving the old output aside and removing it:
		// it goes by its manifest, and what was added to it stays.
		dir := t.TempDir()
		t.Chdir(dir)
		previous(t)
		write(t, map[string]string{"out/old/notes.txt": "mine"})
		os.Rename("out", ".out.kubestrap-abc")
		s, err := output.Begin("out", false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Abort()
		w := s.Warnings()
		if len(w) != 1 || !strings.HasPrefix(w[0], ".out.kubestrap-abc, the staging directory of an interrupted run, held entries kubestrap did not write; they are kept in .out.kubestrap-kept-") ||
			!strings.HasSuffix(w[0], ": old/notes.txt") {
			t.Errorf("warnings = %q", w)
		}
		got := snapshot(t, ".")
		var kept string
		for p := range got {
			if strings.HasPrefix(p, ".out.kubestrap-kept-") && !strings.Contains(p, "/") {
				kept = p
			}
		}
		diff(t, got, map[string]string{s.StagingName(): "/", s.StagingName() + "/.kubestrap-staging": "", kept: "/", kept + "/old": "/", kept + "/old/notes.txt": "mine"})
	})

	t.Run("in progress, and names not ours", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		for _, d := range []string{".out.kubestrap-kept-abc", ".out.kubestrap-x.kubestrap-abc", ".other.kubestrap-abc", ".out.kubestrap-ABC"} {
			write(t, map[string]string{d + "/f": "x"})
		}
		first, err := output.Begin("out", false)
		if err != nil {
			t.Fatal(err)
		}
		if err := first.WriteFiles("n1", nodeFiles); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, ".")
		second, err := output.Begin("out", false)
		if err != nil {
			t.Fatal(err)
		}
		if w := second.Warnings(); len(w) != 0 {
			t.Errorf("warnings = %q, want none", w)
		}
		if err := second.Abort(); err != nil {
			t.Fatal(err)
		}
		diff(t, snapshot(t, "."), before)
		if err := fill(first); err != nil {
			t.Fatal(err)
		}
		if err := first.Commit(); err != nil {
			t.Fatal(err)
		}
	})
}

// The bare system calls that BenchmarkWriteFiles makes for one node, with
// none of its checks, by path as cp does.
func BenchmarkWriteFilesFloor(b *testing.B) {
	dir := b.TempDir()
	files := benchFiles()
	for i := 0; b.Loop(); i++ {
		d := filepath.Join(dir, "n"+strconv.Itoa(i))
		if err := os.Mkdir(d, 0o700); err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			fd, err := unix.Open(d+"/"+f.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := unix.Write(fd, f.Data); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	}
}

// Whoever can write the parent can swap the staging directory for a
// symlink of theirs just before Commit renames it into place: the target
// must not become their symlink while the run says it wrote it.
func TestStagingSwappedBeforeCommit(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("over an earlier output %v", force), func(t *testing.T) {
			t.Chdir(t.TempDir())
			write(t, map[string]string{"victim/keep": "the attacker's choice"})
			if force {
				if err := run("parent/out", false, "old"); err != nil {
					t.Fatal(err)
				}
			}
			s, err := output.Begin("parent/out", force)
			if err != nil {
				t.Fatal(err)
			}
			if err := fill(s, "n1"); err != nil {
				t.Fatal(err)
			}
			staging := filepath.Join("parent", s.StagingName())
			if err := os.Rename(staging, "moved"); err != nil {
				t.Fatal(err)
			}
			victim, _ := filepath.Abs("victim")
			if err := os.Symlink(victim, staging); err != nil {
				t.Fatal(err)
			}
			err = s.Commit()
			if err == nil || !strings.Contains(err.Error(), "was replaced during the run") {
				t.Fatalf("Commit = %v, want the swap refused", err)
			}
			fi, err := os.Lstat("parent/out")
			switch {
			case !force && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("parent/out is there (%v, %v): the swapped-in symlink took the target's place", fi, err)
			case force && (err != nil || !fi.IsDir()):
				t.Errorf("parent/out is no longer the earlier output: %v, %v", fi, err)
			}
			if b, _ := os.ReadFile("victim/keep"); string(b) != "the attacker's choice" {
				t.Errorf("victim/keep = %q", b)
			}
		})
	}
}
