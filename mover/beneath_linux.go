package mover

import (
	"errors"

	"golang.org/x/sys/unix"
)

var (
	errNoOpenat2         = errors.New("openat2 not available")
	errNoRenameNoReplace = errors.New("RENAME_NOREPLACE not available")
)

// openBeneath opens rel below dirfd with openat2, which resolves the whole
// path in the kernel refusing symlinks and anything that leaves dirfd.
// errNoOpenat2 means the kernel (or a seccomp filter) lacks it: walk.
func openBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dirfd, rel, &how)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.E2BIG) {
		return -1, errNoOpenat2
	}
	if errors.Is(err, unix.EAGAIN) {
		// A concurrent rename raced the lookup; the walk has no such limit.
		return -1, errNoOpenat2
	}
	return fd, err
}

func renameat2NoReplace(olddirfd int, old string, newdirfd int, name string) error {
	err := unix.Renameat2(olddirfd, old, newdirfd, name, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoRenameNoReplace
	}
	return err
}
