//go:build !unix

package watcher

import "io/fs"

// infoOf without inode numbers: size and mtime still pin a version.
func infoOf(fi fs.FileInfo) FileInfo {
	return FileInfo{Size: fi.Size(), ModTime: fi.ModTime()}
}
