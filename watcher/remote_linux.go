package watcher

import "golang.org/x/sys/unix"

// onNetworkFS reports whether dir is on a network or FUSE filesystem. On
// such a mount, writes made by other clients raise no inotify events, so
// the rescan is how they are found and its interval is never stretched.
func onNetworkFS(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return true // unknown: keep the configured interval
	}
	switch uint32(st.Type) {
	case unix.NFS_SUPER_MAGIC, unix.SMB_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC,
		unix.FUSE_SUPER_MAGIC, unix.CEPH_SUPER_MAGIC, unix.AFS_SUPER_MAGIC, unix.V9FS_MAGIC:
		return true
	}
	return false
}
