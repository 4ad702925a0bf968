package output

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens.yaml")
	if err := CreateFile(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "secret" {
		t.Fatalf("%q %v", got, err)
	}
	if fi, _ := os.Stat(p); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// Never replaced: the user's file stays as it was.
	if err := CreateFile(p, []byte("other"), 0o600); !errors.Is(err, ErrFileExists) {
		t.Errorf("second create: %v, want ErrFileExists", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "secret" {
		t.Errorf("replaced: %q", got)
	}
	// Nor is a symlink followed out of the directory.
	if runtime.GOOS != "windows" {
		outside := filepath.Join(t.TempDir(), "target")
		link := filepath.Join(dir, "link.yaml")
		if err := os.Symlink(outside, link); err != nil {
			t.Fatal(err)
		}
		if err := CreateFile(link, []byte("x"), 0o600); !errors.Is(err, ErrFileExists) {
			t.Errorf("through a symlink: %v", err)
		}
		if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("wrote through the symlink: %v", err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if n := len(entries); n != 1 && n != 2 {
		t.Errorf("left behind: %v", entries)
	}
	for _, e := range entries {
		if e.Name()[0] == '.' {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	if err := CreateFile(filepath.Join(dir, "missing", "t.yaml"), nil, 0o600); err == nil {
		t.Error("created in a directory that does not exist")
	}
}
