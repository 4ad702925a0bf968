// Package output writes a run's documents to disk so that a reader sees all
// of them or none: everything goes into a private staging directory beside
// the target, and the staging directory takes the target's place only when
// every file is written.
package output

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrExists means the target directory holds files and --force was not given.
var ErrExists = errors.New("output directory exists and is not empty (use --force to replace it)")

// DirMode is the mode of every directory written: the documents hold tokens.
const DirMode fs.FileMode = 0o700

// Stage is an output directory being written.
type Stage struct {
	target  string
	staging string
	replace bool
}

// Begin checks the target and creates the staging directory. With force an
// existing target is replaced at Commit; without it, a non-empty target is
// ErrExists. A target that is a symlink or not a directory is refused, so
// the run never writes through a link someone else placed.
func Begin(target string, force bool) (*Stage, error) {
	target = filepath.Clean(target)
	s := &Stage{target: target}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("%s: is a symlink; refusing to write through it", target)
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: exists and is not a directory", target)
	default:
		entries, err := os.ReadDir(target)
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 && !force {
			return nil, fmt.Errorf("%s: %w", target, ErrExists)
		}
		s.replace = true
	}
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	// MkdirTemp creates the directory 0700 whatever the umask.
	s.staging, err = os.MkdirTemp(parent, "."+filepath.Base(target)+".kubestrap-*")
	if err != nil {
		return nil, err
	}
	return s, nil
}

// WriteFile writes rel (a slash-separated path inside the output) with mode,
// creating parent directories 0700. The file is written to a temporary name
// and renamed into place, so it is never seen half-written.
func (s *Stage) WriteFile(rel string, data []byte, mode fs.FileMode) error {
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("output path %q leaves the output directory", rel)
	}
	name := filepath.Join(s.staging, filepath.FromSlash(rel))
	dir := filepath.Dir(name)
	if err := mkdirAll(s.staging, dir); err != nil {
		return err
	}
	return writeAtomic(dir, name, data, mode)
}

// mkdirAll creates dir and its parents below root with DirMode, chmodding
// each so the umask cannot widen or narrow it.
func mkdirAll(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		err := os.Mkdir(cur, DirMode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Chmod(cur, DirMode); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(dir, name string, data []byte, mode fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Chmod on the open file: the mode is exact whatever the umask, and the
	// data is never readable under a wider mode than asked.
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	// No fsync per file: nothing is visible until Commit, which syncs the
	// whole filesystem once before the rename that publishes the output.
	if err = f.Close(); err != nil {
		return err
	}
	// rename(2) replaces a symlink at name rather than following it.
	return os.Rename(f.Name(), name)
}

// Commit puts the staged directory in the target's place. A replaced target
// is swapped out atomically where the kernel can (renameat2 RENAME_EXCHANGE)
// and then removed.
func (s *Stage) Commit() error {
	if err := syncFS(s.staging); err != nil {
		return fmt.Errorf("%s: %w", s.staging, err)
	}
	if !s.replace {
		if err := os.Rename(s.staging, s.target); err != nil {
			return fmt.Errorf("%s: %w", s.target, err)
		}
		return syncDir(filepath.Dir(s.target))
	}
	err := unix.Renameat2(unix.AT_FDCWD, s.staging, unix.AT_FDCWD, s.target, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		// No exchange on this kernel or filesystem: move the old one aside first.
		old := s.staging + ".old"
		if err := os.Rename(s.target, old); err != nil {
			return fmt.Errorf("%s: %w", s.target, err)
		}
		if err := os.Rename(s.staging, s.target); err != nil {
			os.Rename(old, s.target)
			return fmt.Errorf("%s: %w", s.target, err)
		}
		return os.RemoveAll(old)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.target, err)
	}
	// After the exchange the staging name holds the old output.
	if err := os.RemoveAll(s.staging); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.target))
}

// Abort removes everything staged; the target is untouched.
func (s *Stage) Abort() error {
	return os.RemoveAll(s.staging)
}

// syncFS flushes the filesystem that holds dir: one call for every file
// staged, instead of one fsync each.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
