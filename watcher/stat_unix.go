//go:build unix

package watcher

import (
	"io/fs"
	"syscall"
)

func infoOf(fi fs.FileInfo) FileInfo {
	i := FileInfo{Size: fi.Size(), ModTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		i.Inode = uint64(st.Ino)
		i.Device = uint64(st.Dev) //nolint:unconvert // int32 on some platforms
	}
	return i
}
