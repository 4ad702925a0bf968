//go:build unix

package output

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// sysStage holds a stage's descriptors. The staging directory is flock'ed
// through its descriptor until Commit or Abort, and so is the target being
// replaced: once moved aside under a staging name it must not look like an
// interrupted run's.
type sysStage struct {
	parent  int // the target's parent, opened once by path in Begin
	staging int
	target  int    // the existing target, -1 if there is none
	umask   uint32 // the process's, read once: a mode it does not narrow needs no fchmod
	euid    uint32
}

const (
	dirFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fileFlags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// Begin checks the target and creates the staging directory. Without force a
// non-empty target is ErrExists; with force an existing target is replaced
// at Commit only if it holds nothing but what its manifest lists (otherwise
// ErrNotOurs, naming what is not). A target that is a symlink or not a
// directory is refused (ErrNotOurs). Begin also removes the staging
// directories that interrupted runs left beside the target (Warnings).
func Begin(target string, force bool) (*Stage, error) {
	s, parent, err := newStage(target)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	// The one lookup by path: the user's path to the parent, as it is now.
	// Whatever later happens to that path, the run stays in this directory.
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: parent, Err: err}
	}
	s.sys = sysStage{parent: pfd, staging: -1, target: -1, umask: readUmask(), euid: uint32(unix.Geteuid())}
	if err := s.openTarget(force); err != nil {
		s.sys.closeAll()
		return nil, err
	}
	if err := s.checkNotWorkingDir(); err != nil {
		s.sys.closeAll()
		return nil, err
	}
	// Only once the run is going ahead: a refused run touches nothing.
	s.sweep()
	if err := s.makeStaging(); err != nil {
		s.sys.closeAll()
		return nil, err
	}
	return s, nil
}

// sweep removes the staging directories of interrupted runs: those nobody
// holds the lock of. A locked one is another run's, being written now.
func (s *Stage) sweep() {
	names, err := fdDir(s.sys.parent).names()
	if err != nil {
		s.warn("looking for interrupted runs beside %s: %v", s.name, err)
		return
	}
	slices.Sort(names)
	for _, n := range names {
		if !isStagingName(n, s.base) {
			continue
		}
		fd, err := unix.Openat(s.sys.parent, n, dirFlags, 0)
		if err != nil {
			s.warn("left %s, which looks like kubestrap's staging directory: %v", n, err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Uid != s.sys.euid {
			s.warn("left %s, which looks like kubestrap's staging directory but is not yours", n)
			unix.Close(fd)
			continue
		}
		switch err := flock(fd, unix.LOCK_EX|unix.LOCK_NB); {
		case errors.Is(err, unix.EWOULDBLOCK):
		case err != nil:
			s.warn("left %s, which may be the staging directory of an interrupted run: %v", n, err)
		default:
			s.clearStale(fd, n)
		}
		unix.Close(fd)
	}
}

// clearStale removes the unlocked staging directory n (open as fd).
func (s *Stage) clearStale(fd int, n string) {
	kept, err := clearStale(fdDir(fd))
	switch {
	case errors.Is(err, errNotStaging):
		s.warn("left %s: %v", n, err)
	case err != nil:
		s.warn("could not remove %s, the staging directory of an interrupted run: %v", n, err)
	case len(kept) == 0:
		if err := unix.Unlinkat(s.sys.parent, n, unix.AT_REMOVEDIR); err != nil {
			s.warn("could not remove %s, the staging directory of an interrupted run: %v", n, err)
			return
		}
		s.warn("removed %s, the staging directory of an interrupted run", n)
	default:
		keptName := randomName(stagingPrefix(s.base) + "kept-")
		if err := unix.Renameat(s.sys.parent, n, s.sys.parent, keptName); err != nil {
			s.warn("%s, the staging directory of an interrupted run, holds entries kubestrap did not write, left there: %s",
				n, listNames(kept))
			return
		}
		s.warn("%s, the staging directory of an interrupted run, held entries kubestrap did not write; they are kept in %s: %s",
			n, keptName, listNames(kept))
	}
}

// openTarget looks at the existing target, if any, and decides with
// checkOld whether it may be replaced.
func (s *Stage) openTarget(force bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(s.sys.parent, s.base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return &fs.PathError{Op: "lstat", Path: s.name, Err: err}
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return notOurs("%s: is a symlink; refusing to write through it", s.name)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return notOurs("%s: exists and is not a directory", s.name)
	}
	fd, err := unix.Openat(s.sys.parent, s.base, dirFlags, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: s.name, Err: err}
	}
	s.sys.target = fd
	// Locked before it is checked, so that two runs cannot both replace it.
	if err := flock(fd, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%s: another kubestrap run is replacing it", s.name)
	}
	s.old, err = s.checkOld(fdDir(fd), force)
	return err
}

// makeStaging creates the staging directory, private and locked.
func (s *Stage) makeStaging() error {
	for range 10 {
		name := randomName(stagingPrefix(s.base))
		err := unix.Mkdirat(s.sys.parent, name, uint32(DirMode))
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "mkdir", Path: name, Err: err}
		}
		fd, err := s.lockNew(name)
		if err != nil {
			return err
		}
		if fd < 0 {
			continue
		}
		s.staging, s.sys.staging = name, fd
		mark, err := unix.Openat(fd, stagingMark, fileFlags, 0o600)
		if err != nil {
			return &fs.PathError{Op: "create", Path: join(name, stagingMark), Err: err}
		}
		return unix.Close(mark)
	}
	return fmt.Errorf("%s: could not create a staging directory beside it", s.name)
}

// lockNew opens and locks the directory name just made. Until it is locked,
// another run's sweep may take it for an interrupted run's and remove it:
// then it returns -1, and the caller tries another name.
func (s *Stage) lockNew(name string) (int, error) {
	fd, err := unix.Openat(s.sys.parent, name, dirFlags, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	// Where flock is not supported the run goes on unlocked: other runs'
	// sweeps cannot lock it either, and leave it.
	err = flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	var st, now unix.Stat_t
	if errors.Is(err, unix.EWOULDBLOCK) ||
		unix.Fstat(fd, &st) != nil ||
		unix.Fstatat(s.sys.parent, name, &now, unix.AT_SYMLINK_NOFOLLOW) != nil || now.Ino != st.Ino || now.Dev != st.Dev {
		unix.Close(fd)
		return -1, nil
	}
	if err := s.sys.ownDir(fd, name, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ownDir checks that fd (stat st) is a directory of this user's and gives it
// DirMode if the umask narrowed it.
func (sys *sysStage) ownDir(fd int, rel string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != sys.euid {
		return fmt.Errorf("%s: not a directory of the current user's", rel)
	}
	if st.Mode&0o7777 != unix.S_IRWXU {
		if err := unix.Fchmod(fd, uint32(DirMode)); err != nil {
			return &fs.PathError{Op: "chmod", Path: rel, Err: err}
		}
	}
	return nil
}

// writeFiles makes dir ("" for the top of the output) and writes files into
// it; reuse accepts a dir that an earlier write made.
func (s *Stage) writeFiles(dir string, files []File, reuse bool) error {
	if err := checkFiles(dir, files); err != nil {
		return s.fail(err)
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.done {
		return s.fail(errDone)
	}
	dfd := s.sys.staging
	if dir != "" {
		var err error
		if dfd, err = s.openDir(dir, reuse); err != nil {
			return s.fail(err)
		}
		defer unix.Close(dfd)
	}
	for _, f := range files {
		if err := s.writeFile(dfd, dir, f.Name, f.Mode, f.Data); err != nil {
			return s.fail(err)
		}
	}
	if perFileSync && dir != "" {
		if err := unix.Fsync(dfd); err != nil {
			return s.fail(&fs.PathError{Op: "fsync", Path: dir, Err: err})
		}
	}
	s.record(dir, files)
	return nil
}

// openDir creates dir in the staging directory and opens it; without
// following a symlink, so nothing placed there can redirect the writes.
func (s *Stage) openDir(dir string, reuse bool) (int, error) {
	err := unix.Mkdirat(s.sys.staging, dir, uint32(DirMode))
	if err != nil && !(reuse && errors.Is(err, unix.EEXIST)) {
		return -1, &fs.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	fd, err := unix.Openat(s.sys.staging, dir, dirFlags, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := s.sys.ownDir(fd, dir, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// writeFile creates name in dfd (dir in the output) exclusively, with mode
// and data. On failure nothing of it is left.
func (s *Stage) writeFile(dfd int, dir, name string, mode fs.FileMode, data []byte) error {
	fd, err := s.create(dfd, dir, name, mode)
	if err != nil {
		return err
	}
	err = writeAll(fd, data)
	if err == nil && perFileSync {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dfd, name, 0)
		return &fs.PathError{Op: "write", Path: join(dir, name), Err: err}
	}
	return nil
}

// create creates name in dfd, which must not exist and is never a symlink,
// with exactly mode whatever the umask: created at most 0600, so its data is
// never readable under a wider mode than asked, and fchmodded only when the
// umask would leave it other than asked.
func (s *Stage) create(dfd int, dir, name string, mode fs.FileMode) (int, error) {
	perm := uint32(mode.Perm())
	for {
		fd, err := unix.Openat(dfd, name, fileFlags, perm&0o600)
		// Signals interrupt open on some systems, even with SA_RESTART.
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "create", Path: join(dir, name), Err: err}
		}
		if perm&^0o600 != 0 || perm&s.sys.umask != 0 {
			if err := unix.Fchmod(fd, perm); err != nil {
				unix.Close(fd)
				unix.Unlinkat(dfd, name, 0)
				return -1, &fs.PathError{Op: "chmod", Path: join(dir, name), Err: err}
			}
		}
		return fd, nil
	}
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		data = data[n:]
	}
	return nil
}

// Create creates rel ("name" or "dir/name") for streaming, like WriteFile
// but written by the caller; the file is complete once closed.
func (s *Stage) Create(rel string, mode fs.FileMode) (io.WriteCloser, error) {
	dir, name, err := splitRel(rel)
	if err == nil {
		err = checkFiles(dir, []File{{Name: name}})
	}
	if err != nil {
		return nil, s.fail(err)
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.done {
		return nil, s.fail(errDone)
	}
	dfd := s.sys.staging
	if dir != "" {
		if dfd, err = s.openDir(dir, true); err != nil {
			return nil, s.fail(err)
		}
		defer unix.Close(dfd)
	}
	fd, err := s.create(dfd, dir, name, mode)
	if err != nil {
		return nil, s.fail(err)
	}
	if perFileSync && dir != "" {
		if err := unix.Fsync(dfd); err != nil {
			unix.Close(fd)
			return nil, s.fail(&fs.PathError{Op: "fsync", Path: dir, Err: err})
		}
	}
	if dir != "" {
		s.mu.Lock()
		s.written[dir] = entry{dir: true}
		s.mu.Unlock()
	}
	return &stagedFile{s: s, fd: fd, rel: rel}, nil
}

// stagedFile is a file Create made. It writes with the system calls
// directly, as the rest does (os.File adds the runtime poller's).
type stagedFile struct {
	s    *Stage
	fd   int
	rel  string
	size int64
	sum  uint32
}

func (f *stagedFile) Write(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	if err := writeAll(f.fd, p); err != nil {
		return 0, f.s.fail(&fs.PathError{Op: "write", Path: f.rel, Err: err})
	}
	f.size += int64(len(p))
	f.sum = updateChecksum(f.sum, p)
	return len(p), nil
}

func (f *stagedFile) Close() error {
	if f.fd < 0 {
		return os.ErrClosed
	}
	var err error
	if perFileSync {
		err = unix.Fsync(f.fd)
	}
	if cerr := unix.Close(f.fd); err == nil {
		err = cerr
	}
	f.fd = -1
	if err != nil {
		return f.s.fail(&fs.PathError{Op: "close", Path: f.rel, Err: err})
	}
	f.s.recordFile(f.rel, f.size, f.sum)
	return nil
}

// Commit writes the manifest, flushes the staged tree and puts it in the
// target's place; then it removes the replaced target by its manifest,
// keeping anything else it holds. If it fails before the new output is in
// place it removes the staging directory, and the target is as it was.
// Errors after that are *CleanupError.
func (s *Stage) Commit() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.done {
		return errDone
	}
	s.done = true
	defer s.sys.closeAll()
	m, err := s.manifest()
	if err != nil {
		return s.discard(err)
	}
	if err := s.writeFile(s.sys.staging, "", manifestName, 0o600, m); err != nil {
		return s.discard(err)
	}
	// The output does not carry the mark; from here a crash leaves a
	// staging directory with the manifest, which lists everything in it.
	if err := unix.Unlinkat(s.sys.staging, stagingMark, 0); err != nil {
		return s.discard(&fs.PathError{Op: "remove", Path: join(s.staging, stagingMark), Err: err})
	}
	if err := syncTree(s.sys.staging); err != nil {
		return s.discard(&fs.PathError{Op: "sync", Path: s.staging, Err: err})
	}
	old, err := s.swap()
	if err != nil {
		return s.discard(err)
	}
	var errs []error
	if old != "" {
		errs = append(errs, s.removeOld(old))
	}
	if err := unix.Fsync(s.sys.parent); err != nil {
		errs = append(errs, fmt.Errorf("syncing the directory that holds %s: %w", s.name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return &CleanupError{err}
	}
	return nil
}

// swap renames the staging directory to the target and returns the name
// the replaced target has now, if there is one. A rename goes by name, so
// before and after it the names are checked against the descriptors the run
// wrote through: whoever can write the parent could otherwise swap the
// staging directory for a symlink of theirs just before the rename, and the
// target would be theirs while the run said it had written it.
func (s *Stage) swap() (string, error) {
	pfd := s.sys.parent
	if !sameDir(pfd, s.staging, s.sys.staging) {
		return "", fmt.Errorf("%s: the staging directory %s was replaced during the run; not putting it in place", s.name, s.staging)
	}
	if s.sys.target < 0 {
		// rename(2) would replace an empty directory made meanwhile: nothing is lost.
		if err := unix.Renameat(pfd, s.staging, pfd, s.base); errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("%s: was created during the run (by another kubestrap run?) and is left as it is; this run wrote nothing", s.name)
		} else if err != nil {
			return "", &fs.PathError{Op: "rename", Path: s.name, Err: err}
		}
		if !sameDir(pfd, s.base, s.sys.staging) {
			unix.Renameat(pfd, s.base, pfd, s.staging)
			return "", fmt.Errorf("%s: the staging directory %s was replaced while it was put in place; put back", s.name, s.staging)
		}
		return "", nil
	}
	// Replace only the directory Begin checked.
	if !sameDir(pfd, s.base, s.sys.target) {
		return "", notOurs("%s: was replaced during the run; not replacing it", s.name)
	}
	if !s.renameAside {
		err := exchange(pfd, s.staging, s.base)
		if err == nil {
			if !sameDir(pfd, s.base, s.sys.staging) {
				exchange(pfd, s.staging, s.base)
				return "", fmt.Errorf("%s: the staging directory %s was replaced while it was put in place; the previous output is back", s.name, s.staging)
			}
			return s.staging, nil // the staging name holds the old output now
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return "", &fs.PathError{Op: "rename", Path: s.name, Err: err}
		}
	}
	// Under a staging name, and still locked through s.sys.target.
	aside := randomName(stagingPrefix(s.base))
	if err := unix.Renameat(pfd, s.base, pfd, aside); err != nil {
		return "", &fs.PathError{Op: "rename", Path: s.name, Err: err}
	}
	putBack := func(err error) (string, error) {
		if berr := unix.Renameat(pfd, aside, pfd, s.base); berr != nil {
			return "", fmt.Errorf("%s: %w; and putting the previous output back from %s failed: %v", s.name, err, aside, berr)
		}
		return "", err
	}
	if err := unix.Renameat(pfd, s.staging, pfd, s.base); err != nil {
		return putBack(&fs.PathError{Op: "rename", Path: s.name, Err: err})
	}
	if !sameDir(pfd, s.base, s.sys.staging) {
		unix.Renameat(pfd, s.base, pfd, s.staging)
		return putBack(fmt.Errorf("the staging directory %s was replaced while it was put in place", s.staging))
	}
	return aside, nil
}

// sameDir reports whether name in the directory pfd is, without following
// a symlink, the directory open as fd.
func sameDir(pfd int, name string, fd int) bool {
	var want, got unix.Stat_t
	return unix.Fstat(fd, &want) == nil &&
		unix.Fstatat(pfd, name, &got, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		got.Dev == want.Dev && got.Ino == want.Ino && got.Mode&unix.S_IFMT == unix.S_IFDIR
}

// removeOld removes what the replaced target's manifest lists, through the
// descriptor Begin checked, and keeps anything else under a name of its own.
func (s *Stage) removeOld(old string) error {
	var kept []string
	removeListed(fdDir(s.sys.target), "", s.old, &kept)
	if len(kept) == 0 {
		err := unix.Unlinkat(s.sys.parent, old, unix.AT_REMOVEDIR)
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			kept = append(kept, "entries added while it was removed")
		} else {
			kept = append(kept, fmt.Sprintf(". (%v)", err))
		}
	}
	keptName := randomName(stagingPrefix(s.base) + "kept-")
	if err := unix.Renameat(s.sys.parent, old, s.sys.parent, keptName); err != nil {
		keptName = old
	}
	return errors.New(keptMessage(s.name, keptName, kept))
}

func (s *Stage) removeStaging() error {
	if err := removeAll(fdDir(s.sys.staging), ""); err != nil {
		return fmt.Errorf("removing %s: %w", s.staging, err)
	}
	if err := unix.Unlinkat(s.sys.parent, s.staging, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("removing %s: %w", s.staging, err)
	}
	return nil
}

func (sys *sysStage) closeAll() {
	for _, fd := range []*int{&sys.staging, &sys.target, &sys.parent} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// swapUmask reads the umask the one portable way, by setting it and back.
// Begin does it before any write of the run; a file something else in the
// process creates in between gets the umask 077.
func swapUmask() uint32 {
	m := unix.Umask(0o077)
	unix.Umask(m)
	return uint32(m)
}

// fdDir is a directory descriptor as a dirHandle.
type fdDir int

func (d fdDir) names() ([]string, error) {
	// A new open of ".", not a dup: a dup would share the offset, and the
	// os.File owns (and closes) the descriptor it is given.
	fd, err := unix.Openat(int(d), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return names, err
}

func (d fdDir) lstat(name string) (byte, int64, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(d), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, 0, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return kindFile, st.Size, nil
	case unix.S_IFDIR:
		return kindDir, 0, nil
	}
	return kindOther, 0, nil
}

func (d fdDir) openDir(name string) (dirHandle, error) {
	fd, err := unix.Openat(int(d), name, dirFlags, 0)
	if err != nil {
		return nil, err
	}
	return fdDir(fd), nil
}

func (d fdDir) readFile(name string) ([]byte, error) {
	fd, err := unix.Openat(int(d), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return io.ReadAll(f)
}

func (d fdDir) remove(name string, isDir bool) error {
	flags := 0
	if isDir {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(int(d), name, flags)
}

func (d fdDir) close() error { return unix.Close(int(d)) }
