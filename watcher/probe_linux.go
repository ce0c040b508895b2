//go:build linux

package watcher

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// leaseProbe asks the kernel: a read lease (F_SETLEASE F_RDLCK) can only be
// granted while no file descriptor anywhere on this host has the file open
// for writing, so EAGAIN means "a writer has it open". Samba and knfsd open
// files on this host on behalf of their clients, so it also sees shares.
type leaseProbe struct{}

func (leaseProbe) HasWriter(path string) (bool, error) {
	// O_NONBLOCK: do not wait for someone else's write lease to be broken;
	// O_NOFOLLOW: a symlink swapped in must not redirect us.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	switch {
	case err == unix.EWOULDBLOCK:
		// Another process holds a write lease (e.g. Samba oplocks): it may write.
		return true, nil
	case err == unix.EACCES || err == unix.EPERM:
		return false, fmt.Errorf("%w: open %s: %v", errProbeUnsupported, path, err)
	case err != nil:
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		if err == unix.EAGAIN {
			return true, nil
		}
		// EACCES: neither owner nor CAP_LEASE; EINVAL: filesystem without
		// leases (NFS, FUSE, overlay lower layers); ENOSYS: leases off.
		return false, fmt.Errorf("%w: F_SETLEASE on %s: %v", errProbeUnsupported, path, err)
	}
	// Release at once: while we hold the lease a writer's open() would block
	// until we give it up.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK); err != nil {
		return false, fmt.Errorf("release lease on %s: %w", path, err)
	}
	return false, nil
}
