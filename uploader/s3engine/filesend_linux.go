package s3engine

import (
	"os"
	"strconv"
)

// reopen opens f's file again, as a new open file description (its own
// position), through /proc: the same inode even if the path was renamed
// or replaced since.
func reopen(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var g *os.File
	var oerr error
	if err := rc.Control(func(fd uintptr) {
		g, oerr = os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(fd)), os.O_RDONLY, 0)
	}); err != nil {
		return nil, err
	}
	return g, oerr
}
