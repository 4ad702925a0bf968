package output

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// perFileSync is false: one syncfs at Commit flushes every file staged,
// instead of an fsync each.
const perFileSync = false

func syncTree(fd int) error { return unix.Syncfs(fd) }

// exchange swaps the directories a and b in dfd atomically; it is
// errors.ErrUnsupported where the kernel or filesystem cannot.
func exchange(dfd int, a, b string) error {
	err := unix.Renameat2(dfd, a, dfd, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
	}
	return err
}

// readUmask reads the umask from /proc (Linux 4.7 and later), which unlike
// umask(2) does not change it, even for a moment.
func readUmask() uint32 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return swapUmask()
}
