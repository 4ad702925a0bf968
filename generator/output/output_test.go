package output

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func stage(t *testing.T, target string, force bool, files map[string]string) error {
	t.Helper()
	s, err := Begin(target, force)
	if err != nil {
		return err
	}
	for rel, data := range files {
		if err := s.WriteFile(rel, []byte(data), 0o600); err != nil {
			s.Abort()
			return err
		}
	}
	return s.Commit()
}

func TestBeginAndCommit(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, target string)
		force   bool
		wantErr string
		// wantOld is a file that must still hold "old" afterwards.
		wantOld bool
	}{
		{name: "new target"},
		{name: "empty existing target", setup: func(t *testing.T, target string) { os.Mkdir(target, 0o755) }},
		{name: "non-empty target without force", setup: writeOld, wantErr: "out: output directory exists and is not empty (use --force to replace it)", wantOld: true},
		{name: "non-empty target with force", setup: writeOld, force: true},
		{name: "symlink target", setup: func(t *testing.T, target string) {
			os.Mkdir(target+"-real", 0o700)
			os.Symlink(target+"-real", target)
		}, force: true, wantErr: "out: is a symlink; refusing to write through it"},
		{name: "file target", setup: func(t *testing.T, target string) { os.WriteFile(target, nil, 0o600) }, force: true, wantErr: "out: exists and is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			if tt.setup != nil {
				tt.setup(t, "out")
			}
			err := stage(t, "out", tt.force, map[string]string{"n1/config.ign": "new", "tokens.yaml": "secret"})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tt.wantOld {
				if b, _ := os.ReadFile("out/old"); string(b) != "old" {
					t.Errorf("old file = %q, want it untouched", b)
				}
				if _, err := os.Stat("out/n1"); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("new output leaked into the refused target: %v", err)
				}
			}
			if tt.wantErr == "" {
				if b, _ := os.ReadFile("out/n1/config.ign"); string(b) != "new" {
					t.Errorf("config.ign = %q", b)
				}
				if _, err := os.Stat("out/old"); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("old file survived a forced replace: %v", err)
				}
			}
			// Nothing staged may be left beside the target, whatever happened.
			left, _ := filepath.Glob(".out.kubestrap-*")
			if len(left) > 0 {
				t.Errorf("staging left behind: %v", left)
			}
		})
	}
}

func writeOld(t *testing.T, target string) {
	os.Mkdir(target, 0o755)
	os.WriteFile(filepath.Join(target, "old"), []byte("old"), 0o644)
}

// Modes are exact whatever the umask: secrets must not end up group-readable
// under umask 0, and 0644 files must not end up 0600 under umask 077.
func TestModesIgnoreUmask(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o077} {
		old := syscall.Umask(umask)
		dir := t.TempDir()
		s, err := Begin(filepath.Join(dir, "out"), false)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteFile("n1/user-data", []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteFile("n1/public", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(); err != nil {
			t.Fatal(err)
		}
		syscall.Umask(old)
		for name, want := range map[string]fs.FileMode{
			"out":              fs.ModeDir | 0o700,
			"out/n1":           fs.ModeDir | 0o700,
			"out/n1/user-data": 0o600,
			"out/n1/public":    0o644,
		} {
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("umask %#o: %s mode = %v, want %v", umask, name, fi.Mode(), want)
			}
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Begin(filepath.Join(dir, "out"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile("n1/config.ign", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestWriteFileStaysInside(t *testing.T) {
	s, err := Begin(filepath.Join(t.TempDir(), "out"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	if err := s.WriteFile("../escape", []byte("x"), 0o600); err == nil {
		t.Fatal("wrote outside the output directory")
	}
}
