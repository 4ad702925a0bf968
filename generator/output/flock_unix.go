//go:build unix && !aix

package output

import "golang.org/x/sys/unix"

func flock(fd, how int) error { return unix.Flock(fd, how) }
