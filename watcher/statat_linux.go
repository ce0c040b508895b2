package watcher

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dirStat stats entries of one open directory by name (fstatat against
// the directory's descriptor): a rescan stats every file, and resolving
// only the last component instead of the whole path is most of its cost.
type dirStat struct {
	fd int
}

func newDirStat(d *os.File) dirStat {
	rc, err := d.SyscallConn()
	fd := -1
	if err == nil {
		_ = rc.Control(func(f uintptr) { fd = int(f) })
	}
	return dirStat{fd: fd}
}

// regular returns the version of the regular file name in the directory;
// ok is false when it is gone or not a regular file (never followed).
func (s dirStat) regular(dir, name string) (FileInfo, bool) {
	if s.fd < 0 {
		return lstatRegular(dir, name)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(s.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return FileInfo{}, false
	}
	return FileInfo{Size: st.Size, ModTime: time.Unix(st.Mtim.Unix()), Inode: st.Ino, Device: st.Dev}, true
}
