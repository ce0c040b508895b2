package mover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// FollowFolder gives path, a directory or file the daemon created inside
// the watched folder root (processed/, failed/, reason files, receipts),
// the group of root and a mode that follows root's: editors who can read
// the folder can read what the daemon files there, whatever the service's
// umask. Directories get root's permission bits and its setgid bit (so
// what lands inside keeps the group); files get root's bits without x.
// The last element of path is opened without following a symlink, and
// the change is made on that descriptor.
func FollowFolder(root, path string) error {
	rfi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("follow folder %s: %w", root, err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil // a link someone put there: leave it alone
	}
	if err != nil {
		return fmt.Errorf("follow folder %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := ShareFd(fd, rfi); err != nil {
		return fmt.Errorf("follow folder %s: %w", path, err)
	}
	return nil
}

// ShareFd applies FollowFolder's group and mode to an open file or
// directory, for callers that create it relative to a directory fd (see
// beneath.go). folder is the watched folder's FileInfo. Changing the group
// needs the service user to be in that group: when it is not, the group is
// left as it is and the mode is still applied.
func ShareFd(fd int, folder fs.FileInfo) error {
	gid := -1
	if fst, ok := folder.Sys().(*syscall.Stat_t); ok {
		gid = int(fst.Gid)
	}
	return share(fd, gid, folder.Mode())
}

// shareLikeParent is ShareFd for fd just created in the directory parentFd:
// it follows the parent's group and mode.
func shareLikeParent(parentFd, fd int) error {
	var pst unix.Stat_t
	if err := unix.Fstat(parentFd, &pst); err != nil {
		return err
	}
	mode := fs.FileMode(pst.Mode & 0o777)
	if pst.Mode&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	return share(fd, int(pst.Gid), mode)
}

func share(fd, gid int, folderMode fs.FileMode) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if gid >= 0 && uint32(gid) != st.Gid {
		// EPERM: the daemon is not in that group; the mode still follows.
		if err := unix.Fchown(fd, -1, gid); err != nil && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("chgrp: %w", err)
		}
	}
	want := ShareMode(folderMode, dir)
	cur := fs.FileMode(st.Mode & 0o777)
	if st.Mode&unix.S_ISGID != 0 {
		cur |= fs.ModeSetgid
	}
	if cur == want {
		return nil
	}
	err := unix.Fchmod(fd, unixMode(want))
	if errors.Is(err, unix.EPERM) && want&fs.ModeSetgid != 0 {
		// systemd's RestrictSUIDSGID refuses any chmod that names the
		// setgid bit. A directory made in a setgid folder has it already
		// (the kernel passes it on), and a chmod without it would clear
		// it: then leave the mode alone. Otherwise follow the permission
		// bits at least.
		if cur&fs.ModeSetgid != 0 {
			return nil
		}
		err = unix.Fchmod(fd, unixMode(want.Perm()))
	}
	if err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func ShareMode(folder fs.FileMode, dir bool) fs.FileMode {
	perm := folder.Perm()
	if dir {
		return perm | folder&fs.ModeSetgid
	}
	return perm &^ 0o111
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	return u
}
