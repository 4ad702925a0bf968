// Package output writes a run's documents to disk so that a reader sees all
// of them or none: everything goes into a private staging directory beside
// the target, and the staging directory takes the target's place only when
// every file is written.
package output

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrExists means the target directory holds files and --force was not given.
var ErrExists = errors.New("output directory exists and is not empty (use --force to replace it)")

// DirMode is the mode of every directory written: the documents hold tokens.
const DirMode fs.FileMode = 0o700

// Stage is an output directory being written.
type Stage struct {
	name    string // the target as given, for messages
	target  string
	staging string
	replace bool
	dirs    sync.Map // directories created below staging
	// umask is the process's; a mode it does not narrow needs no chmod.
	umask uint32
}

// Begin checks the target and creates the staging directory. With force an
// existing target is replaced at Commit; without it, a non-empty target is
// ErrExists. A target that is a symlink or not a directory is refused, so
// the run never writes through a link someone else placed.
func Begin(target string, force bool) (*Stage, error) {
	name := filepath.Clean(target)
	// Absolute, so that "." or "sub/.." have a real parent for the stage.
	target, err := filepath.Abs(target)
	if err != nil {
		return nil, err
	}
	s := &Stage{name: name, target: target}
	if filepath.Dir(target) == target {
		return nil, fmt.Errorf("%s: cannot replace the root directory", name)
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("%s: is a symlink; refusing to write through it", name)
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: exists and is not a directory", name)
	default:
		entries, err := os.ReadDir(target)
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 && !force {
			return nil, fmt.Errorf("%s: %w", name, ErrExists)
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
	s.staging = filepath.Clean(s.staging)
	// Reading the umask means setting it; nothing else creates files now.
	s.umask = uint32(unix.Umask(0o077))
	unix.Umask(int(s.umask))
	return s, nil
}

// WriteFile writes rel (a slash-separated path inside the output) with mode,
// creating parent directories 0700. It is safe for concurrent use.
//
// Files are created O_EXCL|O_NOFOLLOW inside the private staging directory:
// no one else can see or pre-place anything there, so a file is never written
// through a symlink, and nothing is visible half-written because the whole
// directory is renamed into place by Commit. That rename is the temp-and-
// rename step, done once for the tree instead of once per file (a 10,000-node
// run writes 40,000 files, and every system call counts).
func (s *Stage) WriteFile(rel string, data []byte, mode fs.FileMode) (err error) {
	fd, name, err := s.create(rel, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			unix.Unlink(name)
			err = fmt.Errorf("%s: %w", rel, err)
		}
	}()
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// Create creates rel for streaming, like WriteFile but written by the caller;
// the file is complete once closed.
func (s *Stage) Create(rel string, mode fs.FileMode) (io.WriteCloser, error) {
	fd, name, err := s.create(rel, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// create makes rel's parent directories and creates rel, which must not
// exist, with exactly mode whatever the umask (an fchmod when the umask would
// narrow it; the file is created at most 0600, so its data is never readable
// under a wider mode than asked). It uses the system calls directly: os.File
// would add several more per file for the runtime's poller.
func (s *Stage) create(rel string, mode fs.FileMode) (int, string, error) {
	if !filepath.IsLocal(rel) {
		return -1, "", fmt.Errorf("output path %q leaves the output directory", rel)
	}
	name := filepath.Join(s.staging, filepath.FromSlash(rel))
	if err := s.mkdirAll(filepath.Dir(name)); err != nil {
		return -1, "", err
	}
	perm := uint32(mode.Perm())
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm&0o600)
	if err != nil {
		return -1, "", &fs.PathError{Op: "create", Path: rel, Err: err}
	}
	if perm&^0o600 != 0 || perm&s.umask != 0 {
		if err := unix.Fchmod(fd, perm); err != nil {
			unix.Close(fd)
			unix.Unlink(name)
			return -1, "", &fs.PathError{Op: "chmod", Path: rel, Err: err}
		}
	}
	return fd, name, nil
}

// mkdirAll creates dir and its parents below the staging root with DirMode,
// chmodding each so the umask cannot change it; each directory once.
func (s *Stage) mkdirAll(dir string) error {
	if len(dir) <= len(s.staging) {
		return nil // the staging root, which Begin made
	}
	if _, done := s.dirs.Load(dir); done {
		return nil
	}
	if err := s.mkdirAll(filepath.Dir(dir)); err != nil {
		return err
	}
	err := unix.Mkdir(dir, uint32(DirMode))
	switch {
	case errors.Is(err, unix.EEXIST):
	case err != nil:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
	case uint32(DirMode)&s.umask != 0:
		if err := unix.Chmod(dir, uint32(DirMode)); err != nil {
			return &fs.PathError{Op: "chmod", Path: dir, Err: err}
		}
	}
	s.dirs.Store(dir, true)
	return nil
}

// CleanupError is a failure after Commit put the new output in place (while
// removing the old one or syncing the parent directory): the output is
// complete, so the run succeeded and the caller should only warn.
type CleanupError struct{ Err error }

func (e *CleanupError) Error() string { return "after writing the output: " + e.Err.Error() }
func (e *CleanupError) Unwrap() error { return e.Err }

// Commit puts the staged directory in the target's place. A replaced target
// is swapped out atomically where the kernel can (renameat2 RENAME_EXCHANGE)
// and then removed. Errors after the new output is in place are
// *CleanupError.
func (s *Stage) Commit() error {
	if err := syncFS(s.staging); err != nil {
		return fmt.Errorf("%s: %w", s.staging, err)
	}
	var old string
	switch {
	case !s.replace:
		if err := os.Rename(s.staging, s.target); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	default:
		err := unix.Renameat2(unix.AT_FDCWD, s.staging, unix.AT_FDCWD, s.target, unix.RENAME_EXCHANGE)
		switch {
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL):
			// No exchange on this kernel or filesystem: move the old one aside first.
			old = s.staging + ".old"
			if err := os.Rename(s.target, old); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if err := os.Rename(s.staging, s.target); err != nil {
				os.Rename(old, s.target)
				return fmt.Errorf("%s: %w", s.name, err)
			}
		case err != nil:
			return fmt.Errorf("%s: %w", s.name, err)
		default:
			// After the exchange the staging name holds the old output.
			old = s.staging
		}
	}
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			return &CleanupError{fmt.Errorf("removing the replaced output: %w", err)}
		}
	}
	if err := syncDir(filepath.Dir(s.target)); err != nil {
		return &CleanupError{err}
	}
	return nil
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
