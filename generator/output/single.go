package output

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrFileExists means CreateFile found something at its path.
var ErrFileExists = errors.New("file exists")

// CreateFile writes data to a new file at path with mode, atomically and
// without ever replacing anything: the data goes to a temporary file in
// path's directory, opened relative to that directory (os.Root: a symlink
// swapped in cannot send it elsewhere), synced, then linked to path's name,
// which fails if the name exists. A reader sees the whole file or none. An
// existing path is ErrFileExists; the caller's file is never touched.
func CreateFile(path string, data []byte, mode fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" || base == "." || base == ".." {
		return fmt.Errorf("%s: not a file name", path)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if _, err := root.Lstat(base); err == nil {
		return fmt.Errorf("%s: %w: remove it first, or give another file", path, ErrFileExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := "." + base + ".kubestrap-" + hex.EncodeToString(suffix[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		// The temporary name goes whatever happens; on success the file
		// lives on under path.
		if rerr := root.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// A link, not a rename: it fails rather than replace a file that
	// appeared at path since the check above.
	if err := root.Link(tmp, base); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w: remove it first, or give another file", path, ErrFileExists)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	// The new name is on disk only once its directory is.
	if d, err := root.Open("."); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
