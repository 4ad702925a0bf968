//go:build !unix

package output

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
)

// sysStage holds a stage's roots. os.Root resolves every name inside its
// directory and refuses one that leads out of it, through a symlink or
// otherwise: the stand-in, here, for unix's descriptors and O_NOFOLLOW.
type sysStage struct {
	parent  *os.Root // the target's parent, opened once by path in Begin
	staging *os.Root
	target  bool // the target existed at Begin
}

// Begin checks the target and creates the staging directory. Without force a
// non-empty target is ErrExists; with force an existing target is replaced
// at Commit only if it holds nothing but what its manifest lists (otherwise
// ErrNotOurs, naming what is not). A target that is a symlink or not a
// directory is refused (ErrNotOurs). Staging directories found beside the
// target are reported in Warnings: without flock, an interrupted run's cannot
// be told from one being written.
func Begin(target string, force bool) (*Stage, error) {
	s, parent, err := newStage(target)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(parent)
	if err != nil {
		return nil, err
	}
	s.sys.parent = root
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

func (s *Stage) sweep() {
	names, err := rootDir{s.sys.parent}.names()
	if err != nil {
		s.warn("looking for interrupted runs beside %s: %v", s.name, err)
		return
	}
	slices.Sort(names)
	for _, n := range names {
		if isStagingName(n, s.base) {
			s.warn("found %s beside %s: the staging directory of another kubestrap run, or of an interrupted one; remove it once no run is writing %s",
				n, s.name, s.name)
		}
	}
}

func (s *Stage) openTarget(force bool) error {
	fi, err := s.sys.parent.Lstat(s.base)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return notOurs("%s: is a symlink; refusing to write through it", s.name)
	case fi.Mode().Type() != fs.ModeDir:
		return notOurs("%s: exists and is not a directory", s.name)
	}
	t, err := s.sys.parent.OpenRoot(s.base)
	if err != nil {
		return err
	}
	defer t.Close()
	s.sys.target = true
	s.old, err = s.checkOld(rootDir{t}, force)
	return err
}

func (s *Stage) makeStaging() error {
	for range 10 {
		name := randomName(stagingPrefix(s.base))
		err := s.sys.parent.Mkdir(name, DirMode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		r, err := s.sys.parent.OpenRoot(name)
		if err != nil {
			s.sys.parent.Remove(name)
			return err
		}
		s.staging, s.sys.staging = name, r
		return nil
	}
	return fmt.Errorf("%s: could not create a staging directory beside it", s.name)
}

func (s *Stage) writeFiles(dir string, files []File, reuse bool) error {
	if err := checkFiles(dir, files); err != nil {
		return s.fail(err)
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.done {
		return s.fail(errDone)
	}
	d := s.sys.staging
	if dir != "" {
		var err error
		if d, err = s.openDir(dir, reuse); err != nil {
			return s.fail(err)
		}
		defer d.Close()
	}
	for _, f := range files {
		if err := writeFile(d, join(dir, f.Name), f.Name, f.Mode, f.Data); err != nil {
			return s.fail(err)
		}
	}
	s.record(dir, files)
	return nil
}

func (s *Stage) openDir(dir string, reuse bool) (*os.Root, error) {
	err := s.sys.staging.Mkdir(dir, DirMode)
	if err != nil && !(reuse && errors.Is(err, fs.ErrExist)) {
		return nil, err
	}
	if fi, err := s.sys.staging.Lstat(dir); err != nil || fi.Mode().Type() != fs.ModeDir {
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	return s.sys.staging.OpenRoot(dir)
}

func writeFile(d *os.Root, rel, name string, mode fs.FileMode, data []byte) error {
	f, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.Remove(name)
		return fmt.Errorf("%s: %w", rel, err)
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
	d := s.sys.staging
	if dir != "" {
		if d, err = s.openDir(dir, true); err != nil {
			return nil, s.fail(err)
		}
		defer d.Close()
		s.mu.Lock()
		s.written[dir] = entry{dir: true}
		s.mu.Unlock()
	}
	f, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return nil, s.fail(fmt.Errorf("%s: %w", rel, err))
	}
	return &stagedFile{f: f, s: s, rel: rel}, nil
}

type stagedFile struct {
	f    *os.File
	s    *Stage
	rel  string
	size int64
	sum  uint32
}

func (f *stagedFile) Write(p []byte) (int, error) {
	n, err := f.f.Write(p)
	f.size += int64(n)
	f.sum = updateChecksum(f.sum, p[:n])
	if err != nil {
		return n, f.s.fail(fmt.Errorf("%s: %w", f.rel, err))
	}
	return n, nil
}

func (f *stagedFile) Close() error {
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return f.s.fail(fmt.Errorf("%s: %w", f.rel, err))
	}
	f.s.recordFile(f.rel, f.size, f.sum)
	return nil
}

// Commit writes the manifest and puts the staged tree in the target's
// place, the old target renamed aside first; then it removes the replaced
// target by its manifest, keeping anything else it holds. If it fails before
// the new output is in place it removes the staging directory, and the
// target is as it was. Errors after that are *CleanupError.
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
	if err := writeFile(s.sys.staging, manifestName, manifestName, 0o600, m); err != nil {
		return s.discard(err)
	}
	// Windows does not rename a directory that has open handles.
	s.sys.staging.Close()
	s.sys.staging = nil
	old, err := s.swap()
	if err != nil {
		return s.discard(err)
	}
	if old != "" {
		if err := s.removeOld(old); err != nil {
			return &CleanupError{err}
		}
	}
	return nil
}

func (s *Stage) swap() (string, error) {
	p := s.sys.parent
	if !s.sys.target {
		if err := p.Rename(s.staging, s.base); err != nil {
			return "", fmt.Errorf("%s: %w", s.name, err)
		}
		return "", nil
	}
	if fi, err := p.Lstat(s.base); err != nil || fi.Mode().Type() != fs.ModeDir {
		return "", notOurs("%s: was replaced during the run; not replacing it", s.name)
	}
	aside := randomName(stagingPrefix(s.base))
	if err := p.Rename(s.base, aside); err != nil {
		return "", err
	}
	if err := p.Rename(s.staging, s.base); err != nil {
		if berr := p.Rename(aside, s.base); berr != nil {
			return "", fmt.Errorf("%w; and putting the previous output back from %s failed: %v", err, aside, berr)
		}
		return "", err
	}
	return aside, nil
}

func (s *Stage) removeOld(old string) error {
	p := s.sys.parent
	var kept []string
	if r, err := p.OpenRoot(old); err != nil {
		kept = append(kept, fmt.Sprintf(". (%v)", err))
	} else {
		removeListed(rootDir{r}, "", s.old, &kept)
		r.Close()
	}
	if len(kept) == 0 {
		err := p.Remove(old)
		if err == nil {
			return nil
		}
		kept = append(kept, fmt.Sprintf(". (%v)", err))
	}
	keptName := randomName(stagingPrefix(s.base) + "kept-")
	if err := p.Rename(old, keptName); err != nil {
		keptName = old
	}
	return errors.New(keptMessage(s.name, keptName, kept))
}

func (s *Stage) removeStaging() error {
	if s.sys.staging != nil {
		s.sys.staging.Close()
		s.sys.staging = nil
	}
	if err := s.sys.parent.RemoveAll(s.staging); err != nil {
		return fmt.Errorf("removing %s: %w", s.staging, err)
	}
	return nil
}

func (sys *sysStage) closeAll() {
	for _, r := range []**os.Root{&sys.staging, &sys.parent} {
		if *r != nil {
			(*r).Close()
			*r = nil
		}
	}
}

// rootDir is an os.Root as a dirHandle.
type rootDir struct{ r *os.Root }

func (d rootDir) names() ([]string, error) {
	f, err := d.r.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (d rootDir) lstat(name string) (byte, int64, error) {
	fi, err := d.r.Lstat(name)
	if err != nil {
		return 0, 0, err
	}
	switch fi.Mode().Type() {
	case 0:
		return kindFile, fi.Size(), nil
	case fs.ModeDir:
		return kindDir, 0, nil
	}
	return kindOther, 0, nil
}

func (d rootDir) openDir(name string) (dirHandle, error) {
	r, err := d.r.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	return rootDir{r}, nil
}

func (d rootDir) readFile(name string) ([]byte, error) { return d.r.ReadFile(name) }

func (d rootDir) remove(name string, isDir bool) error { return d.r.Remove(name) }

func (d rootDir) close() error { return d.r.Close() }
