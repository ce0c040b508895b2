package mover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// FollowFolder gives path, a directory or file the daemon created inside
// the watched folder root (processed/, failed/, reason files, receipts),
// the group of root and a mode that follows root's: editors who can read
// the folder can read what the daemon files there, whatever the service's
// umask. Directories get root's permission bits and its setgid bit (so
// what lands inside keeps the group); files get root's bits without x.
// Changing the group needs the service user to be in that group: when it
// is not, the group is left as it is and the mode is still applied.
func FollowFolder(root, path string) error {
	rfi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("follow folder %s: %w", root, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("follow folder %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil // never follow a link someone put there
	}
	mode := ShareMode(rfi.Mode(), fi.IsDir())
	if st, ok := rfi.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(path, -1, int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("follow folder: chgrp %s: %w", path, err)
		}
	}
	// chmod after chown: chown clears the setgid bit.
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("follow folder: chmod %s: %w", path, err)
	}
	return nil
}

// ShareMode is the mode FollowFolder gives a directory or file created in
// a folder whose mode is folder.
func ShareMode(folder fs.FileMode, dir bool) fs.FileMode {
	perm := folder.Perm()
	if dir {
		return perm | folder&fs.ModeSetgid
	}
	return perm &^ 0o111
}
