//go:build unix && !linux

package output

import (
	"errors"

	"golang.org/x/sys/unix"
)

// perFileSync is true: without syncfs each file and directory is fsynced
// as it is written.
const perFileSync = true

func syncTree(fd int) error { return unix.Fsync(fd) }

// exchange is not available: Commit renames the old target aside first.
func exchange(dfd int, a, b string) error { return errors.ErrUnsupported }

func readUmask() uint32 { return swapUmask() }
