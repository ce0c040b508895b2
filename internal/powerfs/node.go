package powerfs

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is the FUSE side of one inode of one mount. Its id (the inode number
// the kernel sees) is the model's node id.
type node struct {
	fs.Inode
	m *mount
}

// handle is an open file: a descriptor of the live backing file, always
// opened read-write so that its data can be copied at fsync.
type handle struct {
	fd  int
	gen int // the cut generation it was opened in: dead after a cut
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeMknoder    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeFlusher    = (*node)(nil)
	_ fs.NodeReleaser   = (*node)(nil)
	_ fs.NodeAllocater  = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
)

// enter starts an operation: it fails (EIO, as on a disk that lost power)
// unless n's mount is still the current one. The caller must call
// f.rw.RUnlock when done.
func (n *node) enter() (*FS, bool) {
	f := n.m.fs
	f.rw.RLock()
	if f.mounted != n.m {
		f.rw.RUnlock()
		return nil, false
	}
	return f, true
}

func (n *node) id() uint64 { return n.StableAttr().Ino }

// liveHandle returns fh's handle, and whether it was opened since the
// last cut.
func (f *FS) liveHandle(fh fs.FileHandle) (*handle, bool) {
	h, ok := fh.(*handle)
	if !ok {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return h, h.gen == f.gen
}

// path is n's backing path (a placeholder that does not exist if n is no
// longer in any directory).
func (n *node) path() string {
	return filepath.Join(n.m.live, n.Path(n.m.root.EmbeddedInode()))
}

func (n *node) child(name string) string { return filepath.Join(n.path(), name) }

// idOf maps a backing entry to its node id. Every entry is made through
// this file system, so an unknown one is an anomaly.
func (f *FS) idOf(st *syscall.Stat_t) (uint64, syscall.Errno) {
	id, ok := f.byIno[st.Ino]
	if !ok || f.nodes[id] == nil {
		f.stats.Anomalies++
		return 0, syscall.EIO
	}
	return id, 0
}

func (n *node) newChild(ctx context.Context, id uint64, mode uint32) *fs.Inode {
	return n.NewInode(ctx, &node{m: n.m}, fs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: id, Gen: 1})
}

// fillAttr converts st for the kernel: the model's inode number, and the
// store's extra link of an unchanged file not counted.
func (f *FS) fillAttr(out *fuse.Attr, st *syscall.Stat_t, id uint64) {
	out.FromStat(st)
	out.Ino = id
	ino := f.nodes[id]
	if ino == nil {
		return
	}
	if ino.shared && out.Nlink > 1 {
		out.Nlink--
	}
	if ino.showCtime {
		if st.Ctim.Sec == ino.ctimeBase.Sec && st.Ctim.Nsec == ino.ctimeBase.Nsec {
			out.Ctime, out.Ctimensec = uint64(ino.ctime.Sec), uint32(ino.ctime.Nsec)
		} else {
			ino.showCtime = false // changed since the cut: its own ctime now
		}
	}
}

// opCtime is the ctime of backing entry p, for an op's record.
func opCtime(p string) syscall.Timespec {
	var st syscall.Stat_t
	syscall.Lstat(p, &st)
	return st.Ctim
}

func errno(err error) syscall.Errno { return fs.ToErrno(err) }

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Lstat(n.child(name), &st); err != nil {
		return nil, errno(err)
	}
	id, e := f.idOf(&st)
	if e != 0 {
		return nil, e
	}
	f.fillAttr(&out.Attr, &st, id)
	return n.newChild(ctx, id, st.Mode), 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	var st syscall.Stat_t
	var err error
	// go-fuse passes any open handle of the node, maybe one from before
	// a cut whose release has not arrived yet: then the path it is.
	if h, live := f.liveHandle(fh); live {
		err = syscall.Fstat(h.fd, &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return errno(err)
	}
	f.mu.Lock()
	f.fillAttr(&out.Attr, &st, n.id())
	f.mu.Unlock()
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.nodes[n.id()]
	if ino == nil {
		return syscall.EIO
	}
	// The target: the open descriptor's file (even if unlinked), else the
	// path.
	p := n.path()
	fd := -1
	if h, ok := fh.(*handle); ok {
		if h.gen != f.gen {
			return syscall.EIO
		}
		fd = h.fd
	}
	if sz, ok := in.GetSize(); ok {
		if fd < 0 {
			nfd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return errno(err)
			}
			defer syscall.Close(nfd)
			fd = nfd
		}
		if err := f.unshare(ino); err != nil {
			return syscall.EIO
		}
		if err := syscall.Ftruncate(fd, int64(sz)); err != nil {
			return errno(err)
		}
		f.changed(ino, fd, 0, 0, int64(sz))
	}
	if m, ok := in.GetMode(); ok {
		var err error
		if fd >= 0 {
			err = syscall.Fchmod(fd, m)
		} else {
			err = syscall.Chmod(p, m)
		}
		if err != nil {
			return errno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		var err error
		if fd >= 0 {
			err = syscall.Fchown(fd, su, sg)
		} else {
			err = syscall.Lchown(p, su, sg)
		}
		if err != nil {
			return errno(err)
		}
	}
	mt, mok := in.GetMTime()
	at, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(at.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mt.UnixNano())
		}
		var err error
		if fd >= 0 {
			// The /proc link names the open file, even an unlinked one.
			err = unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
		} else {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return errno(err)
		}
	}
	var st syscall.Stat_t
	var err error
	if fd >= 0 {
		err = syscall.Fstat(fd, &st)
	} else {
		err = syscall.Lstat(p, &st)
	}
	if err != nil {
		return errno(err)
	}
	f.fillAttr(&out.Attr, &st, ino.id)
	return 0
}

// created registers a new backing entry p (just made in directory n) as a
// new node, and records the directory change.
func (n *node) created(ctx context.Context, name, p string, st *syscall.Stat_t, target string, rdev uint64) (uint64, syscall.Errno) {
	f := n.m.fs
	if caller, ok := fuse.FromContext(ctx); ok {
		// Owned by the caller, as on a disk.
		if err := syscall.Lchown(p, int(caller.Uid), int(caller.Gid)); err == nil {
			st.Uid, st.Gid = caller.Uid, caller.Gid
		}
	}
	id := f.nextID
	f.nextID++
	ino := &inode{id: id, kind: kindOf(st.Mode), minSize: -1, target: target, rdev: rdev}
	ino.attrsFrom(st)
	if ino.kind == kindFile {
		// Durable content so far: empty, which is what the new file holds.
		if err := os.Link(p, f.storePath(id)); err != nil {
			return 0, errno(err)
		}
		ino.shared = true
	}
	f.nodes[id] = ino
	f.byIno[st.Ino] = id
	f.log = append(f.log, op{kind: opAdd, p1: n.id(), n1: name, child: id, ctime: opCtime(p)})
	return id, 0
}

// openFlags are the flags for the backing open: read-write always (the
// data must be readable at fsync; root may), no append (the kernel sends
// offsets), no direct I/O.
func openFlags(flags uint32) int {
	fl := int(flags) &^ (syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_DIRECT | syscall.O_CREAT | syscall.O_EXCL | fuse.FMODE_EXEC)
	return fl | syscall.O_RDWR | syscall.O_CLOEXEC
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, nil, 0, syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := n.child(name)
	fd, err := syscall.Open(p, openFlags(flags)|syscall.O_CREAT|syscall.O_EXCL, mode&0o7777)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	var st syscall.Stat_t
	err = syscall.Fchmod(fd, mode&0o7777) // the kernel applied the umask already
	if err == nil {
		err = syscall.Fstat(fd, &st)
	}
	if err != nil {
		syscall.Close(fd)
		syscall.Unlink(p)
		return nil, nil, 0, errno(err)
	}
	id, e := n.created(ctx, name, p, &st, "", 0)
	if e != 0 {
		syscall.Close(fd)
		syscall.Unlink(p)
		return nil, nil, 0, e
	}
	f.fillAttr(&out.Attr, &st, id)
	return n.newChild(ctx, id, st.Mode), &handle{fd: fd, gen: f.gen}, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.mkEntry(ctx, name, out, "", 0, func(p string) error {
		if err := syscall.Mkdir(p, mode&0o7777); err != nil {
			return err
		}
		return syscall.Chmod(p, mode&0o7777)
	})
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.mkEntry(ctx, name, out, "", uint64(dev), func(p string) error {
		return syscall.Mknod(p, mode, int(dev))
	})
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.mkEntry(ctx, name, out, target, 0, func(p string) error { return syscall.Symlink(target, p) })
}

func (n *node) mkEntry(ctx context.Context, name string, out *fuse.EntryOut, target string, rdev uint64, mk func(p string) error) (*fs.Inode, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := n.child(name)
	if err := mk(p); err != nil {
		return nil, errno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, errno(err)
	}
	id, e := n.created(ctx, name, p, &st, target, rdev)
	if e != 0 {
		return nil, e
	}
	f.fillAttr(&out.Attr, &st, id)
	return n.newChild(ctx, id, st.Mode), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	t, ok := target.(*node)
	if !ok || t.m != n.m {
		return nil, syscall.EXDEV
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := n.child(name)
	if err := syscall.Link(t.path(), p); err != nil {
		return nil, errno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, errno(err)
	}
	id, e := f.idOf(&st)
	if e != 0 {
		return nil, e
	}
	f.log = append(f.log, op{kind: opAdd, p1: n.id(), n1: name, child: id, ctime: st.Ctim})
	f.fillAttr(&out.Attr, &st, id)
	return n.newChild(ctx, id, st.Mode), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, syscall.Unlink)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, syscall.Rmdir)
}

func (n *node) remove(name string, rm func(string) error) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := n.child(name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return errno(err)
	}
	id, e := f.idOf(&st)
	if e != 0 {
		return e
	}
	if err := rm(p); err != nil {
		return errno(err)
	}
	// The name is gone, so its ctime cannot be read back: it is now.
	now := time.Now()
	f.log = append(f.log, op{kind: opRemove, p1: n.id(), n1: name, child: id,
		ctime: syscall.Timespec{Sec: now.Unix(), Nsec: int64(now.Nanosecond())}})
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	np, ok := newParent.(*node)
	if !ok || np.m != n.m {
		return syscall.EXDEV
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p1, p2 := n.child(name), np.child(newName)
	var st1, st2 syscall.Stat_t
	if err := syscall.Lstat(p1, &st1); err != nil {
		return errno(err)
	}
	id1, e := f.idOf(&st1)
	if e != 0 {
		return e
	}
	var id2 uint64
	if err := syscall.Lstat(p2, &st2); err == nil {
		if id2, e = f.idOf(&st2); e != 0 {
			return e
		}
	}
	if err := unix.Renameat2(unix.AT_FDCWD, p1, unix.AT_FDCWD, p2, uint(flags)); err != nil {
		return errno(err)
	}
	switch {
	case flags&unix.RENAME_EXCHANGE != 0:
		f.log = append(f.log, op{kind: opExchange, p1: n.id(), n1: name, p2: np.id(), n2: newName, child: id1, child2: id2,
			ctime: opCtime(p2), ctime2: opCtime(p1)})
	case id1 == id2:
		// Two names of one file: rename does nothing.
	default:
		f.log = append(f.log, op{kind: opRename, p1: n.id(), n1: name, p2: np.id(), n2: newName, child: id1, ctime: opCtime(p2)})
	}
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	t, err := os.Readlink(n.path())
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := os.Open(n.path())
	if err != nil {
		return nil, errno(err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, errno(err)
	}
	ents := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(d.Name(), name), &st); err != nil {
			continue
		}
		id, e := f.idOf(&st)
		if e != 0 {
			return nil, e
		}
		ents = append(ents, fuse.DirEntry{Name: name, Mode: st.Mode, Ino: id})
	}
	return fs.NewListDirStream(ents), 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, 0, syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.nodes[n.id()]
	if ino == nil {
		return nil, 0, syscall.EIO
	}
	trunc := flags&syscall.O_TRUNC != 0
	if trunc {
		if err := f.unshare(ino); err != nil {
			return nil, 0, syscall.EIO
		}
	}
	fd, err := syscall.Open(n.path(), openFlags(flags)|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, errno(err)
	}
	if trunc {
		f.changed(ino, fd, 0, 0, 0)
	}
	return &handle{fd: fd, gen: f.gen}, 0, 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return nil, syscall.EIO
	}
	defer f.rw.RUnlock()
	h, live := f.liveHandle(fh)
	if !live {
		return nil, syscall.EIO
	}
	got, err := unix.Pread(h.fd, dest, off)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f, ok := n.enter()
	if !ok {
		return 0, syscall.EIO
	}
	defer f.rw.RUnlock()
	h, live := f.liveHandle(fh)
	if !live {
		return 0, syscall.EIO
	}
	f.mu.Lock()
	ino := f.nodes[n.id()]
	var err error
	if ino == nil {
		err = syscall.EIO
	} else {
		err = f.unshare(ino)
	}
	f.mu.Unlock()
	if err != nil {
		return 0, syscall.EIO
	}
	// Recorded after the write: an fsync racing with it copies the page
	// now or at the next fsync, never marks it clean before it changed.
	w, err := unix.Pwrite(h.fd, data, off)
	if w > 0 {
		f.mu.Lock()
		f.changed(ino, h.fd, off, int64(w), -1)
		f.mu.Unlock()
	}
	if err != nil {
		return uint32(max(w, 0)), errno(err)
	}
	return uint32(w), 0
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	h, live := f.liveHandle(fh)
	if !live {
		return syscall.EIO
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.nodes[n.id()]
	if ino == nil || f.unshare(ino) != nil {
		return syscall.EIO
	}
	if err := unix.Fallocate(h.fd, mode, int64(off), int64(size)); err != nil {
		return errno(err)
	}
	f.changed(ino, h.fd, int64(off), int64(size), -1)
	return 0
}

// Fsync is fsync/fdatasync of a file, and fsync of a directory.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f, ok := n.enter()
	if !ok {
		return syscall.EIO
	}
	defer f.rw.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.nodes[n.id()]
	if ino == nil {
		return syscall.EIO
	}
	if ino.kind == kindDir {
		f.syncDir(ino.id)
		return 0
	}
	h, ok := fh.(*handle)
	if !ok {
		return syscall.EBADF
	}
	if h.gen != f.gen {
		return syscall.EIO
	}
	if err := f.syncFile(ino, h.fd); err != nil {
		return syscall.EIO
	}
	return 0
}

func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

func (n *node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		syscall.Close(h.fd)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.m.live, &s); err != nil {
		return errno(err)
	}
	out.FromStatfsT(&s)
	return 0
}
