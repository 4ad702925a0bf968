package output_test

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kubestrap/kubestrap/generator/output"
)

// nodeFiles are one node's documents, small enough to compare.
var nodeFiles = []output.File{
	{Name: "config.ign", Data: []byte("ignition"), Mode: 0o600},
	{Name: "user-data", Data: []byte("#cloud-config"), Mode: 0o600},
	{Name: "meta-data", Data: []byte("instance-id: x"), Mode: 0o644},
}

const tokens = "tokens"

// run writes a whole output into target, as generate does: each node's
// directory with WriteFiles, then tokens.yaml streamed through Create.
func run(target string, force bool, nodes ...string) error {
	s, err := output.Begin(target, force)
	if err != nil {
		return err
	}
	if err := fill(s, nodes...); err != nil {
		s.Abort()
		return err
	}
	return s.Commit()
}

func fill(s *output.Stage, nodes ...string) error {
	for _, n := range nodes {
		if err := s.WriteFiles(n, nodeFiles); err != nil {
			return err
		}
	}
	f, err := s.Create("tokens.yaml", 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(tokens)); err != nil {
		return err
	}
	return f.Close()
}

// wantOutput is the tree run writes, under prefix.
func wantOutput(prefix string, nodes ...string) map[string]string {
	m := map[string]string{prefix: "/", prefix + "/tokens.yaml": tokens}
	listed := map[string]string{"tokens.yaml": fmt.Sprintf("f %d %08x tokens.yaml", len(tokens), crc32c(tokens))}
	for _, n := range nodes {
		m[prefix+"/"+n] = "/"
		listed[n] = "d " + n
		for _, f := range nodeFiles {
			m[prefix+"/"+n+"/"+f.Name] = string(f.Data)
			listed[n+"/"+f.Name] = fmt.Sprintf("f %d %08x %s/%s", len(f.Data), crc32c(string(f.Data)), n, f.Name)
		}
	}
	man := "# kubestrap output: generate --force replaces a directory only when everything in it is listed here\n"
	for _, p := range slices.Sorted(maps.Keys(listed)) {
		man += listed[p] + "\n"
	}
	m[prefix+"/.kubestrap-output"] = man
	return m
}

func crc32c(s string) uint32 { return crc32.Checksum([]byte(s), crc32.MakeTable(crc32.Castagnoli)) }

// snapshot maps every path under root (slash-separated, relative) to "/"
// for a directory, "-> target" for a symlink, or a file's contents. It
// follows no symlink.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			m[rel] = "-> " + target
			return err
		case d.IsDir():
			m[rel] = "/"
		default:
			b, err := os.ReadFile(p)
			m[rel] = string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func diff(t *testing.T, got, want map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(merge(got, want))) {
		g, gok := got[p]
		w, wok := want[p]
		switch {
		case !gok:
			t.Errorf("%s: missing, want %q", p, w)
		case !wok:
			t.Errorf("%s: %q is there, want nothing", p, g)
		case g != w:
			t.Errorf("%s = %q, want %q", p, g, w)
		}
	}
}

func write(t *testing.T, files map[string]string) {
	t.Helper()
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
}

// previous writes an earlier run's output, node "old", to out.
func previous(t *testing.T) {
	t.Helper()
	if err := run("out", false, "old"); err != nil {
		t.Fatal(err)
	}
}

func TestBegin(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		force   bool
		wantErr string
		is      error
	}{
		{name: "new target"},
		{name: "empty existing target", setup: func(t *testing.T) { os.Mkdir("out", 0o755) }},
		{name: "non-empty target without force", setup: func(t *testing.T) { write(t, map[string]string{"out/old": "old"}) },
			wantErr: "out: output directory exists and is not empty (use --force to replace it)", is: output.ErrExists},
		{name: "kubestrap's output without force", setup: previous,
			wantErr: "out: output directory exists and is not empty (use --force to replace it)", is: output.ErrExists},
		{name: "symlink target", force: true, setup: func(t *testing.T) {
			os.Mkdir("real", 0o700)
			symlink(t, "real", "out")
		}, wantErr: "out: is a symlink; refusing to write through it", is: output.ErrNotOurs},
		{name: "file target", force: true, setup: func(t *testing.T) { write(t, map[string]string{"out": "mine"}) },
			wantErr: "out: exists and is not a directory", is: output.ErrNotOurs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if tt.setup != nil {
				tt.setup(t)
			}
			before := snapshot(t, ".")
			err := run("out", tt.force, "n1")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				diff(t, snapshot(t, "."), wantOutput("out", "n1"))
				return
			}
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %q (%v)", err, tt.wantErr, tt.is)
			}
			diff(t, snapshot(t, "."), before)
		})
	}
}

// --force replaces only what kubestrap wrote.
func TestForce(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		wantErr string // "" when out is replaced
	}{
		{
			name: "the user's files",
			setup: func(t *testing.T) {
				write(t, map[string]string{"out/cluster.yaml": "c", "out/ca.pem": "pem", "out/notes.txt": "n"})
				// An interrupted run's staging: a refused run does not touch it either.
				write(t, map[string]string{".out.kubestrap-1/n1/config.ign": "x"})
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: ca.pem, cluster.yaml, notes.txt",
		},
		{name: "an earlier output", setup: previous},
		{name: "an empty directory", setup: func(t *testing.T) { os.Mkdir("out", 0o700) }},
		{
			name: "an earlier output and a file in a node directory",
			setup: func(t *testing.T) {
				previous(t)
				write(t, map[string]string{"out/old/notes.txt": "mine"})
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old/notes.txt",
		},
		{
			name: "an earlier output and a directory of the user's",
			setup: func(t *testing.T) {
				previous(t)
				write(t, map[string]string{"out/keys/a": "a", "out/keys/b": "b"})
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: keys",
		},
		{
			name: "a file whose size changed",
			setup: func(t *testing.T) {
				previous(t)
				write(t, map[string]string{"out/old/config.ign": "edited by hand"})
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old/config.ign (changed)",
		},
		{
			// "ignition" was written: an edit that keeps the size is an
			// edit all the same (a digit of an address, true for false).
			name: "a file edited in place, same size",
			setup: func(t *testing.T) {
				previous(t)
				write(t, map[string]string{"out/old/config.ign": "IGNITION"})
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old/config.ign (changed)",
		},
		{
			name: "a directory where a file was",
			setup: func(t *testing.T) {
				previous(t)
				os.Remove("out/old/user-data")
				os.Mkdir("out/old/user-data", 0o700)
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old/user-data (changed)",
		},
		{
			name: "a symlink in place of a file",
			setup: func(t *testing.T) {
				previous(t)
				write(t, map[string]string{"secret": "the user's"})
				os.Remove("out/old/config.ign")
				symlink(t, "../../secret", "out/old/config.ign")
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old/config.ign (changed)",
		},
		{
			name: "an earlier output without its manifest",
			setup: func(t *testing.T) {
				previous(t)
				os.Remove("out/.kubestrap-output")
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: old, tokens.yaml",
		},
		{
			name: "many files",
			setup: func(t *testing.T) {
				for i := range 12 {
					write(t, map[string]string{fmt.Sprintf("out/f%02d", i): "x"})
				}
			},
			wantErr: "out: --force replaces only what kubestrap wrote, and out holds other entries: " +
				"f00, f01, f02, f03, f04, f05, f06, f07, f08, f09 and 2 more",
		},
		{
			name: "a manifest that is not one",
			setup: func(t *testing.T) {
				write(t, map[string]string{"out/.kubestrap-output": "d my files\n", "out/my": "x"})
			},
			wantErr: `out: .kubestrap-output: line 1: "d my files" is not an entry`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			tt.setup(t)
			before := snapshot(t, ".")
			err := run("out", true, "n1")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				want := wantOutput("out", "n1")
				for p, v := range before { // what the setup put outside out
					if p != "out" && !strings.HasPrefix(p, "out/") {
						want[p] = v
					}
				}
				diff(t, snapshot(t, "."), want)
				return
			}
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, output.ErrNotOurs) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			diff(t, snapshot(t, "."), before)
		})
	}
}

// A --force run from inside the directory, as in the issue.
func TestForceDot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	t.Chdir(filepath.Dir(dir))
	write(t, map[string]string{"cluster/cluster.yaml": "c", "cluster/ca.pem": "pem", "cluster/notes.txt": "n"})
	before := snapshot(t, ".")
	t.Chdir(dir)
	err := run(".", true, "n1")
	want := ".: --force replaces only what kubestrap wrote, and . holds other entries: ca.pem, cluster.yaml, notes.txt"
	if err == nil || err.Error() != want || !errors.Is(err, output.ErrNotOurs) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	t.Chdir("..")
	diff(t, snapshot(t, "."), before)
}

func TestManifest(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := run("out", false, "n2", "n1"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("out/.kubestrap-output")
	if err != nil {
		t.Fatal(err)
	}
	want := `# kubestrap output: generate --force replaces a directory only when everything in it is listed here
d n1
f 8 668937f1 n1/config.ign
f 14 865a1f63 n1/meta-data
f 13 d2d59ec2 n1/user-data
d n2
f 8 668937f1 n2/config.ign
f 14 865a1f63 n2/meta-data
f 13 d2d59ec2 n2/user-data
f 6 0c1f10e6 tokens.yaml
`
	if string(b) != want {
		t.Errorf("manifest:\n%s\nwant:\n%s", b, want)
	}
}

// What appears in the old output after Begin checked it is not deleted
// with it, whichever way Commit swaps the two.
func TestReplaceKeepsWhatAppeared(t *testing.T) {
	for _, aside := range []bool{false, true} {
		t.Run(fmt.Sprintf("rename aside %v", aside), func(t *testing.T) {
			t.Chdir(t.TempDir())
			previous(t)
			s, err := output.Begin("out", true)
			if err != nil {
				t.Fatal(err)
			}
			if aside {
				s.RenameAside()
			}
			write(t, map[string]string{"out/old/notes.txt": "mine", "out/extra.txt": "mine too", "out/old/user-data": "edited"})
			if err := fill(s, "n1"); err != nil {
				t.Fatal(err)
			}
			err = s.Commit()
			var cleanup *output.CleanupError
			if !errors.As(err, &cleanup) {
				t.Fatalf("err = %v, want a *CleanupError", err)
			}
			kept, _ := filepath.Glob(".out.kubestrap-kept-*")
			if len(kept) != 1 {
				t.Fatalf("kept = %v, want one directory", kept)
			}
			want := "after writing the output: out: the replaced output held entries kubestrap did not write; they are kept in " +
				kept[0] + ": extra.txt, old/notes.txt, old/user-data"
			if err.Error() != want {
				t.Errorf("err = %q, want %q", err, want)
			}
			diff(t, snapshot(t, "."), merge(wantOutput("out", "n1"), map[string]string{
				kept[0]:                    "/",
				kept[0] + "/extra.txt":     "mine too",
				kept[0] + "/old":           "/",
				kept[0] + "/old/notes.txt": "mine",
				kept[0] + "/old/user-data": "edited",
			}))
		})
	}
}

// A failed Commit leaves the target as it was and nothing staged.
func TestCommitFailures(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T) // before Begin
		during func(t *testing.T, s *output.Stage)
		force  bool
		is     error
	}{
		{
			name: "a write failed",
			during: func(t *testing.T, s *output.Stage) {
				if err := s.WriteFiles("n2", []output.File{{Name: "bad name"}}); err == nil {
					t.Fatal("wrote a name with a space")
				}
			},
		},
		{
			name:   "the target was created meanwhile",
			during: func(t *testing.T, s *output.Stage) { write(t, map[string]string{"out/mine": "mine"}) },
		},
		{
			name:  "the target was replaced meanwhile",
			setup: previous,
			force: true,
			during: func(t *testing.T, s *output.Stage) {
				if err := os.Rename("out", "moved"); err != nil {
					t.Fatal(err)
				}
				write(t, map[string]string{"out/mine": "mine"})
			},
			is: output.ErrNotOurs,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if tt.setup != nil {
				tt.setup(t)
			}
			s, err := output.Begin("out", tt.force)
			if err != nil {
				t.Fatal(err)
			}
			if err := fill(s, "n1"); err != nil {
				t.Fatal(err)
			}
			tt.during(t, s)
			want := snapshot(t, ".")
			delete(want, s.StagingName())
			for p := range want {
				if strings.HasPrefix(p, s.StagingName()+"/") {
					delete(want, p)
				}
			}
			err = s.Commit()
			if err == nil || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want a failure (%v)", err, tt.is)
			}
			if errors.As(err, new(*output.CleanupError)) {
				t.Fatalf("err = %v is a cleanup error", err)
			}
			diff(t, snapshot(t, "."), want)
			if err := s.Abort(); err != nil {
				t.Errorf("Abort after a failed Commit: %v", err)
			}
		})
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := output.Begin(filepath.Join(dir, "out"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := fill(s, "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile("n3/config.ign", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	diff(t, snapshot(t, dir), map[string]string{})
	if err := s.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	if err := s.WriteFiles("n4", nodeFiles); err == nil {
		t.Error("WriteFiles after Abort succeeded")
	}
}

// Names go one a line into the manifest, so the writes refuse any it could
// not list unambiguously, and any path that leaves the output.
func TestNames(t *testing.T) {
	good := []output.File{{Name: "config.ign", Data: []byte("x"), Mode: 0o600}}
	tests := []struct {
		name  string
		write func(s *output.Stage) error
	}{
		{"directory with a space", func(s *output.Stage) error { return s.WriteFiles("n 1", good) }},
		{"directory with a newline", func(s *output.Stage) error { return s.WriteFiles("n1\nf 1 x", good) }},
		{"directory ..", func(s *output.Stage) error { return s.WriteFiles("..", good) }},
		{"directory with a slash", func(s *output.Stage) error { return s.WriteFiles("a/b", good) }},
		{"empty directory", func(s *output.Stage) error { return s.WriteFiles("", good) }},
		{"the manifest's name", func(s *output.Stage) error { return s.WriteFiles(".kubestrap-output", good) }},
		{"file with a tab", func(s *output.Stage) error {
			return s.WriteFiles("n1", []output.File{{Name: "a\tb", Mode: 0o600}})
		}},
		{"file with a control character", func(s *output.Stage) error {
			return s.WriteFiles("n1", []output.File{{Name: "a\x7fb", Mode: 0o600}})
		}},
		{"file with a slash", func(s *output.Stage) error {
			return s.WriteFiles("n1", []output.File{{Name: "../x", Mode: 0o600}})
		}},
		{"WriteFile leaving the output", func(s *output.Stage) error { return s.WriteFile("../escape", nil, 0o600) }},
		{"WriteFile with a space", func(s *output.Stage) error { return s.WriteFile("n1/a b", nil, 0o600) }},
		{"WriteFile two deep", func(s *output.Stage) error { return s.WriteFile("n1/a/b", nil, 0o600) }},
		{"WriteFile of the manifest", func(s *output.Stage) error { return s.WriteFile(".kubestrap-output", nil, 0o600) }},
		{"WriteFile of the staging mark", func(s *output.Stage) error { return s.WriteFile(".kubestrap-staging", nil, 0o600) }},
		{"Create with a newline", func(s *output.Stage) error {
			_, err := s.Create("tokens\n.yaml", 0o600)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := output.Begin(filepath.Join(dir, "sub", "out"), false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Abort()
			if err := tt.write(s); err == nil {
				t.Fatal("accepted")
			}
			got := snapshot(t, dir)
			for p := range got {
				if strings.HasSuffix(p, "/.kubestrap-staging") {
					delete(got, p) // the run's mark (on unix), made by Begin
				}
			}
			if len(got) != 2 { // sub and the empty staging directory
				t.Errorf("left: %v", got)
			}
		})
	}
}

func TestConcurrentWriteFiles(t *testing.T) {
	t.Chdir(t.TempDir())
	s, err := output.Begin("out", false)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range errs {
		for i := range 25 {
			nodes = append(nodes, fmt.Sprintf("n%d-%d", w, i))
		}
		wg.Go(func() {
			for i := range 25 {
				if err := s.WriteFiles(fmt.Sprintf("n%d-%d", w, i), nodeFiles); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := fill(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	diff(t, snapshot(t, "."), wantOutput("out", nodes...))
}

// benchFiles are one node's documents at their usual sizes.
func benchFiles() []output.File {
	return []output.File{
		{Name: "config.ign", Data: []byte(strings.Repeat("i", 8<<10)), Mode: 0o600},
		{Name: "user-data", Data: []byte(strings.Repeat("u", 7<<10)), Mode: 0o600},
		{Name: "meta-data", Data: []byte(strings.Repeat("m", 60)), Mode: 0o600},
	}
}

// BenchmarkWriteFiles is one node's WriteFiles; compare with
// BenchmarkWriteFilesFloor, the bare system calls for the same files.
func BenchmarkWriteFiles(b *testing.B) {
	s, err := output.Begin(filepath.Join(b.TempDir(), "out"), false)
	if err != nil {
		b.Fatal(err)
	}
	files := benchFiles()
	for i := 0; b.Loop(); i++ {
		if err := s.WriteFiles("n"+strconv.Itoa(i), files); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := s.Abort(); err != nil {
		b.Fatal(err)
	}
}

// An earlier output that --force may replace is still not replaced while
// this process stands in it (or below it): the shell would be left in a
// deleted directory.
func TestWorkingDirNotReplaced(t *testing.T) {
	for _, tt := range []struct{ cd, target string }{{"out", "."}, {"out/old", ".."}} {
		t.Run(tt.cd, func(t *testing.T) {
			t.Chdir(t.TempDir())
			previous(t)
			before := snapshot(t, ".")
			t.Chdir(tt.cd)
			_, err := output.Begin(tt.target, true)
			if !errors.Is(err, output.ErrNotOurs) || !strings.Contains(err.Error(), "is the current directory or holds it") {
				t.Fatalf("err = %v", err)
			}
			t.Chdir(strings.Repeat("../", strings.Count(tt.cd, "/")+1))
			diff(t, snapshot(t, "."), before)
		})
	}
}
