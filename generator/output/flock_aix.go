package output

import "golang.org/x/sys/unix"

// flock is unsupported: AIX has no flock(2). Runs then go unlocked, and a
// run leaves every staging directory it finds (reporting it) instead of
// removing it, as where a filesystem does not support flock.
func flock(fd, how int) error { return unix.ENOTSUP }
