package mover

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSymlink means a path below a trusted root goes through a symlink (or
// otherwise leaves the root). Editors can replace a directory inside a
// watched folder (an empty processed/ or failed/, a subdirectory) with a
// symlink; following it would make the daemon, often root, write, move or
// read wherever the link points.
var ErrSymlink = errors.New("a path below the folder is a symlink (or not a directory); refusing to follow it")

// relBelow returns p relative to root, slash-free of "..": an error when p
// is not root itself or inside it.
func relBelow(root, p string) (string, error) {
	root, p = filepath.Clean(root), filepath.Clean(p)
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s is not below %s", p, root)
	}
	return rel, nil
}

// symlinkErr turns the errors the kernel gives for a symlink met with
// O_NOFOLLOW or RESOLVE_NO_SYMLINKS (ELOOP), a path leaving the root under
// RESOLVE_BENEATH (EXDEV) and a symlink opened with O_DIRECTORY|O_NOFOLLOW
// (ENOTDIR) into ErrSymlink, keeping the original for the message.
func symlinkErr(op, path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s %s: %w (%v)", op, path, ErrSymlink, err)
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// openRoot opens root itself. The root is the operator's configured path
// and may itself cross symlinks (a mount elsewhere); only what lies below
// it is confined. With create, a missing root is made.
func openRoot(root string, create bool) (int, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := MkdirAll(root, 0o755); err != nil {
			return -1, err
		}
		fd, err = unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	return fd, nil
}

// openDirBelow opens the directory rel (relative, cleaned; "." for root
// itself) below root without following any symlink under root. With
// create, missing directories are made (0755). The caller closes the fd.
func openDirBelow(root, rel string, create bool) (int, error) {
	rfd, err := openRoot(root, create)
	if err != nil || rel == "." || rel == "" {
		return rfd, err
	}
	fd, err := openBeneath(rfd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err == nil || !(create && errors.Is(err, unix.ENOENT)) && !errors.Is(err, errNoOpenat2) {
		unix.Close(rfd)
		return fd, symlinkErr("open", filepath.Join(root, rel), err)
	}
	// Walk one component at a time: make what is missing, and refuse a
	// symlink at every step (O_NOFOLLOW on a directory fd).
	cur := rfd
	defer func() {
		if cur != fd {
			unix.Close(cur)
		}
	}()
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return -1, fmt.Errorf("open %s: %w", filepath.Join(root, rel), ErrSymlink)
		}
		next, err := unix.Openat(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			// Made with the parent's permission bits, so that in a
			// setgid folder nothing needs a chmod naming the setgid bit
			// (refused under systemd's RestrictSUIDSGID).
			merr := unix.Mkdirat(cur, c, parentPerm(cur))
			if merr == nil || errors.Is(merr, unix.EEXIST) {
				// The new name must be durable before anything moved into
				// the directory counts as filed; made by another filing a
				// moment ago (EEXIST), it may not be synced yet either.
				if serr := unix.Fsync(cur); merr == nil || serr != nil {
					merr = serr
				}
			}
			if merr != nil && !errors.Is(merr, unix.EEXIST) {
				return -1, &os.PathError{Op: "mkdir", Path: filepath.Join(root, rel), Err: merr}
			}
			next, err = unix.Openat(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil && merr == nil {
				// A directory the daemon made follows its parent's group
				// and mode, so editors can read what is filed there.
				// Best effort: a mode is no reason to strand a file.
				_ = shareLikeParent(cur, next)
			}
		}
		if err != nil {
			return -1, symlinkErr("open", filepath.Join(root, rel), err)
		}
		unix.Close(cur)
		cur = next
	}
	fd = cur
	return fd, nil
}

// dirAt is an open directory below a trusted root, with the path it was
// reached by (for messages and for callers that sync by path).
type dirAt struct {
	fd   int
	path string
}

func openDirAt(root, dir string, create bool) (dirAt, error) {
	rel, err := relBelow(root, dir)
	if err != nil {
		return dirAt{fd: -1}, err
	}
	fd, err := openDirBelow(root, rel, create)
	if err != nil {
		return dirAt{fd: -1}, err
	}
	return dirAt{fd: fd, path: filepath.Clean(dir)}, nil
}

func (d dirAt) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
	}
}

// lstat is fstatat without following a symlink in name.
func (d dirAt) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, &os.PathError{Op: "lstat", Path: filepath.Join(d.path, name), Err: err}
	}
	return st, nil
}

// openFile opens name in d for reading: never through a symlink, never
// blocking on a FIFO, and only if it is a regular file.
func (d dirAt) openFile(name string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	p := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, st, symlinkErr("open", p, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, st, fmt.Errorf("open %s: %w", p, ErrNotRegular)
	}
	// Reads of a regular file ignore O_NONBLOCK; clear it anyway so that
	// nothing downstream sees EAGAIN.
	_ = unix.SetNonblock(fd, false)
	return os.NewFile(uintptr(fd), p), st, nil
}

func (d dirAt) sync() error {
	if err := unix.Fsync(d.fd); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sync %s: %w", d.path, err)
	}
	return nil
}

// ErrNotRegular means a path expected to hold a regular file holds
// something else (a FIFO, a device, a directory).
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens path (inside root) for reading without following a
// symlink anywhere below root, without blocking on a FIFO, and only when it
// is a regular file. Sidecars and media opened by a root daemon must never
// be read through a link an editor planted (e.g. to /etc/shadow).
func OpenRegular(root, path string) (*os.File, error) {
	d, err := openDirAt(root, filepath.Dir(path), false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	f, _, err := d.openFile(filepath.Base(path))
	return f, err
}

// renameNoReplace renames old in od to name in nd, failing with EEXIST
// when name exists; it falls back to link+unlink where the filesystem has
// no RENAME_NOREPLACE.
func renameNoReplace(od dirAt, old string, nd dirAt, name string) error {
	err := renameat2NoReplace(od.fd, old, nd.fd, name)
	if err == nil || !errors.Is(err, errNoRenameNoReplace) {
		return err
	}
	if err := unix.Linkat(od.fd, old, nd.fd, name, 0); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return err
		}
		if errors.Is(err, unix.EEXIST) {
			return err
		}
		// No hard links here either: check, then rename (a small race,
		// as good as the filesystem allows).
		if _, serr := nd.lstat(name); serr == nil {
			return unix.EEXIST
		}
		return unix.Renameat(od.fd, old, nd.fd, name)
	}
	return unix.Unlinkat(od.fd, old, 0)
}

// parentPerm is the permission bits of the directory dirFd (0755 when it
// cannot be read), for a directory made inside it.
func parentPerm(dirFd int) uint32 {
	var st unix.Stat_t
	if err := unix.Fstat(dirFd, &st); err != nil {
		return 0o755
	}
	return st.Mode & 0o777
}
