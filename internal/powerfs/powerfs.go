// Package powerfs is a FUSE file system for power-cut tests: a passthrough
// to a backing directory that remembers what has been made durable, and on
// Cut forgets everything else, the way a machine that loses power does.
//
// The rules are the POSIX ones, taken strictly:
//
//   - file data (writes, truncation, fallocate) becomes durable when the
//     file is fsynced (fsync or fdatasync, through any descriptor);
//   - a directory entry change (create, mkdir, mknod, symlink, link,
//     unlink, rmdir, rename) becomes durable when the directory it changes
//     is fsynced; fsync of a file does not make its own name durable, and
//     fsync of a new directory does not make its name in its parent
//     durable. A rename is one atomic change: syncing either directory makes
//     all of it durable (as on journaling file systems). A change becomes
//     durable together with every earlier change it depends on (the same
//     directory or the same node), so a cut never shows a state that no
//     order of writes could have produced;
//   - SyncAll makes everything durable (what syncfs(2) does on a real
//     disk: the kernel does not pass syncfs on to a FUSE server, so a
//     program's own syncfs or sync is invisible here and counts for
//     nothing).
//
// Cut discards what is not durable (optionally keeping a random part of it,
// down to single pages of file data: torn writes) and rebuilds the backing
// tree from the durable state; until Mount, every operation fails (EIO),
// and Mount then shows only the durable state. The mount itself stays, so
// the device number does not change; inode numbers (the file system's own)
// and ctimes survive a cut too, as they do on a disk. Attributes other than
// data and size (mode, owner, mtime) become durable with the file's fsync,
// or with the change that created it (a directory's mode: at its mkdir).
//
// Layout of the work directory: live.N is the tree the mount shows,
// store/<node id> the durable content of each file. A file that has not
// changed since it was last durable is one inode linked in both places; the
// first change to it copies the durable content apart first, so cuts cost
// no copying.
package powerfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const (
	pageSize = 4096
	rootID   = 1
)

type kind uint8

const (
	kindFile kind = iota + 1
	kindDir
	kindSymlink
	kindOther // fifo, socket, device
)

func kindOf(mode uint32) kind {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return kindFile
	case syscall.S_IFDIR:
		return kindDir
	case syscall.S_IFLNK:
		return kindSymlink
	}
	return kindOther
}

// inode is the model of one node: what a cut restores, and for files what
// has changed since they were last synced.
type inode struct {
	id   uint64
	kind kind
	// Durable attributes.
	mode     uint32 // type and permission bits
	uid, gid uint32
	mtime    unix.Timespec
	rdev     uint64
	target   string // symlink
	// ctime: a disk keeps it across a power cut, and programs compare it
	// (the daemon does, to see rewrites). The rebuilt backing file has a
	// new one, so until the file changes, the durable one is shown:
	// ctimeBase is the backing file's ctime right after the rebuild.
	ctime, ctimeBase unix.Timespec
	showCtime        bool

	// Files only. shared: store/<id> is a hard link of the live inode, so
	// live and durable content are the same bytes. Any change to the data
	// copies the durable content apart first.
	shared  bool
	dirty   map[int64]struct{} // pages written since the last sync
	minSize int64              // smallest size set since the last sync, -1 if none
	live    *os.File           // the live inode, while there is unsynced data
}

func (ino *inode) unsynced() bool { return len(ino.dirty) > 0 || ino.minSize >= 0 }

func (ino *inode) clean() {
	ino.dirty = nil
	ino.minSize = -1
	if ino.live != nil {
		ino.live.Close()
		ino.live = nil
	}
}

func (ino *inode) attrsFrom(st *syscall.Stat_t) {
	ino.mode = st.Mode
	ino.uid, ino.gid = st.Uid, st.Gid
	ino.mtime = unix.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}
	ino.durableCtime(st.Ctim)
}

// durableCtime records c as the durable ctime if it is the latest.
func (ino *inode) durableCtime(c syscall.Timespec) {
	t := unix.Timespec{Sec: c.Sec, Nsec: c.Nsec}
	if t.Sec > ino.ctime.Sec || t.Sec == ino.ctime.Sec && t.Nsec > ino.ctime.Nsec {
		ino.ctime = t
	}
}

// applyOp makes o durable, with the ctime its nodes had after it.
func (f *FS) applyOp(o *op) {
	f.durable.apply(o)
	if ino := f.nodes[o.child]; ino != nil {
		ino.durableCtime(o.ctime)
	}
	if ino := f.nodes[o.child2]; ino != nil && o.kind == opExchange {
		ino.durableCtime(o.ctime2)
	}
}

// Stats counts what the file system has seen since it was created.
type Stats struct {
	FileSyncs  int // fsync/fdatasync of files
	DirSyncs   int // fsync of directories
	Cuts       int
	PendingOps int // directory changes not yet durable
	DirtyFiles int // files with data not yet durable
	// Anomalies counts backing entries the model did not know (a bug in
	// this package, or the backing tree changed behind its back).
	Anomalies int
}

// CutOptions shape a cut.
type CutOptions struct {
	// Keep is the chance (0 to 1) that each change not made durable
	// reached the disk anyway: directory changes (a subset that respects
	// their order) and single pages of file data, and a file's new size.
	// 0 keeps exactly what was made durable.
	Keep float64
	// Rand drives the choice when Keep > 0 (default: a fixed seed).
	Rand *rand.Rand
}

// CutReport says what a cut threw away.
type CutReport struct {
	Ops, OpsKept     int // directory changes not durable, and how many survived anyway
	Files            int // files with data not durable
	Pages, PagesKept int // their unsynced pages, and how many survived anyway
}

func (r CutReport) String() string {
	return fmt.Sprintf("%d of %d directory changes lost, %d of %d unsynced pages lost in %d files",
		r.Ops-r.OpsKept, r.Ops, r.Pages-r.PagesKept, r.Pages, r.Files)
}

// FS is a power-cut file system. Mount it, use it, Cut it, Mount it again.
type FS struct {
	base  string
	store string

	// rw is held shared by every file system operation and exclusively
	// while a cut or unmount takes the mount away, so no operation is half
	// done across a cut.
	rw      sync.RWMutex
	mounted *mount // under rw
	parked  *mount // under rw: the mount a cut took away, until Mount

	mu      sync.Mutex // the model below
	live    string
	gen     int
	nodes   map[uint64]*inode
	byIno   map[uint64]uint64 // backing inode number -> node id
	nextID  uint64
	log     []op      // directory changes not yet durable, oldest first
	durable namespace // the durable directory tree
	stats   Stats
}

type mount struct {
	fs     *FS
	dir    string
	live   string
	server *fuse.Server
	root   *node
}

// New makes an empty file system whose state lives in workDir (created if
// needed; it must be empty).
func New(workDir string) (*FS, error) {
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("powerfs: %w", err)
	}
	if ents, err := os.ReadDir(workDir); err != nil || len(ents) > 0 {
		return nil, fmt.Errorf("powerfs: work directory %s must be empty (%v)", workDir, err)
	}
	f := &FS{base: workDir, store: filepath.Join(workDir, "store"), live: filepath.Join(workDir, "live.0"),
		nodes: map[uint64]*inode{}, byIno: map[uint64]uint64{}, nextID: rootID + 1, durable: namespace{}}
	for _, d := range []string{f.store, f.live} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("powerfs: %w", err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f.live, &st); err != nil {
		return nil, fmt.Errorf("powerfs: %w", err)
	}
	root := &inode{id: rootID, kind: kindDir, minSize: -1}
	root.attrsFrom(&st)
	f.nodes[rootID] = root
	f.byIno[st.Ino] = rootID
	return f, nil
}

// Mount serves the file system's current state at dir (an existing,
// empty directory). It needs root (a direct mount, no fusermount). After a
// cut, it brings back the same mount (dir must be the same): the kernel
// forgets everything it cached, and the device number stays the same, as
// it does for a disk after a reboot (programs that identify files by
// device and inode, as the daemon does, depend on that).
func (f *FS) Mount(dir string) error {
	f.rw.Lock()
	if f.mounted != nil {
		f.rw.Unlock()
		return fmt.Errorf("powerfs: already mounted at %s", f.mounted.dir)
	}
	if p := f.parked; p != nil {
		if p.dir != dir {
			f.rw.Unlock()
			return fmt.Errorf("powerfs: the cut mount is at %s, not %s", p.dir, dir)
		}
		f.parked = nil
		f.mu.Lock()
		p.live = f.live
		f.mu.Unlock()
		f.rw.Unlock()
		// While operations still fail: no request can hold a directory
		// lock the kernel needs for the invalidations.
		p.forgetAll()
		f.rw.Lock()
		f.mounted = p
		f.rw.Unlock()
		return nil
	}
	f.mu.Lock()
	m := &mount{fs: f, dir: dir, live: f.live}
	f.mu.Unlock()
	m.root = &node{m: m}
	f.mounted = m
	f.rw.Unlock()

	sec := time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			AllowOther:        true,
			FsName:            "powerfs",
			Name:              "powerfs",
			DisableXAttrs:     true,
			// The kernel checks permissions from the attributes, as a disk
			// file system does (daemons under test may not be root).
			Options: []string{"default_permissions"},
			// Every write must reach this process: no kernel passthrough.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
		},
		EntryTimeout:   &sec,
		AttrTimeout:    &sec,
		RootStableAttr: &fs.StableAttr{Ino: rootID},
	}
	server, err := fs.Mount(dir, m.root, opts)
	if err != nil {
		f.rw.Lock()
		f.mounted = nil
		f.rw.Unlock()
		return fmt.Errorf("powerfs: mount %s: %w", dir, err)
	}
	f.rw.Lock()
	m.server = server
	f.rw.Unlock()
	return nil
}

// Unmount makes everything durable (as a clean shutdown does) and
// unmounts. It is a no-op when not mounted.
func (f *FS) Unmount() error {
	f.rw.Lock()
	m := f.mounted
	if m == nil {
		m = f.parked
	}
	f.mounted, f.parked = nil, nil
	f.mu.Lock()
	err := f.syncAllLocked()
	f.mu.Unlock()
	f.rw.Unlock()
	if m == nil {
		return err
	}
	return errors.Join(err, m.unmount())
}

// SyncAll makes every change durable, as syncfs(2) would.
func (f *FS) SyncAll() error {
	f.rw.Lock()
	defer f.rw.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncAllLocked()
}

func (f *FS) syncAllLocked() error {
	for i := range f.log {
		f.applyOp(&f.log[i])
	}
	f.log = nil
	var errs []error
	for _, ino := range f.sortedNodes() {
		if ino.live != nil {
			if err := f.writeBack(ino, int(ino.live.Fd()), nil, true); err != nil {
				errs = append(errs, err)
			}
			var st syscall.Stat_t
			if syscall.Fstat(int(ino.live.Fd()), &st) == nil {
				ino.attrsFrom(&st)
			}
		}
		ino.clean()
	}
	return errors.Join(errs...)
}

// Stats returns the counters.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.PendingOps = len(f.log)
	for _, ino := range f.nodes {
		if ino.unsynced() {
			s.DirtyFiles++
		}
	}
	return s
}

// Cut is the power cut: from this moment every operation on the mount
// fails (EIO), what was not durable is discarded (but for the random part
// o.Keep asks for), and the backing tree is rebuilt from the durable state.
// Mount shows it. Files opened before the cut stay dead after it; the
// processes that had them open should be gone (as after a power cut).
func (f *FS) Cut(o CutOptions) (CutReport, error) {
	f.rw.Lock()
	defer f.rw.Unlock()
	if f.mounted != nil {
		f.parked = f.mounted
		f.mounted = nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rep, werr := f.discard(o)
	f.stats.Cuts++
	return rep, errors.Join(werr, f.rebuild())
}

// discard decides what survives the cut: the durable state, plus the
// random part of the rest that o.Keep asks for.
func (f *FS) discard(o CutOptions) (CutReport, error) {
	rep := CutReport{Ops: len(f.log)}
	r := o.Rand
	if r == nil {
		r = rand.New(rand.NewPCG(1, 2))
	}
	if o.Keep > 0 {
		kept := randomSubset(f.log, o.Keep, r)
		for _, i := range kept {
			f.applyOp(&f.log[i])
		}
		rep.OpsKept = len(kept)
	}
	f.log = nil
	var errs []error
	for _, ino := range f.sortedNodes() {
		if !ino.unsynced() {
			continue
		}
		rep.Files++
		rep.Pages += len(ino.dirty)
		if o.Keep > 0 && ino.live != nil {
			var pages []int64
			for _, pg := range sortedPages(ino.dirty) {
				if r.Float64() < o.Keep {
					pages = append(pages, pg)
				}
			}
			rep.PagesKept += len(pages)
			if err := f.writeBack(ino, int(ino.live.Fd()), pages, r.Float64() < o.Keep); err != nil {
				errs = append(errs, err)
			}
		}
		ino.clean()
	}
	return rep, errors.Join(errs...)
}

// rebuild makes a new live tree that shows exactly the durable state, and
// forgets every node that is not in it.
func (f *FS) rebuild() error {
	old := f.live
	f.gen++
	f.live = filepath.Join(f.base, "live."+strconv.Itoa(f.gen))
	f.byIno = map[uint64]uint64{}
	root := f.nodes[rootID]
	if err := os.Mkdir(f.live, os.FileMode(root.mode&0o777)); err != nil {
		return fmt.Errorf("powerfs: rebuild: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f.live, &st); err != nil {
		return fmt.Errorf("powerfs: rebuild: %w", err)
	}
	f.byIno[st.Ino] = rootID
	reached := map[uint64]string{rootID: f.live}
	err := f.materialize(rootID, f.live, reached)
	for id, ino := range f.nodes {
		if _, ok := reached[id]; !ok {
			ino.clean()
			delete(f.nodes, id)
			delete(f.durable, id)
			if ino.kind == kindFile {
				os.Remove(f.storePath(id))
			}
		}
	}
	for id := range f.durable {
		if _, ok := reached[id]; !ok {
			delete(f.durable, id)
		}
	}
	err = errors.Join(err, os.RemoveAll(old))
	// Last: removing the old names changed the ctime of the files whose
	// inode is in both trees.
	for id, p := range reached {
		var st syscall.Stat_t
		if ino := f.nodes[id]; ino != nil && syscall.Lstat(p, &st) == nil {
			ino.ctimeBase = unix.Timespec{Sec: st.Ctim.Sec, Nsec: st.Ctim.Nsec}
			ino.showCtime = true
		}
	}
	return err
}

func (f *FS) materialize(dir uint64, path string, reached map[uint64]string) error {
	ents := f.durable[dir]
	names := make([]string, 0, len(ents))
	for name := range ents {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		id := ents[name]
		ino := f.nodes[id]
		p := filepath.Join(path, name)
		if ino == nil {
			errs = append(errs, fmt.Errorf("powerfs: rebuild %s: unknown node %d", p, id))
			continue
		}
		if first, ok := reached[id]; ok {
			if ino.kind == kindDir {
				errs = append(errs, fmt.Errorf("powerfs: rebuild: directory %d at %s and %s", id, first, p))
			} else if err := os.Link(first, p); err != nil {
				errs = append(errs, fmt.Errorf("powerfs: rebuild: %w", err))
			}
			continue
		}
		reached[id] = p
		if err := f.make(ino, p); err != nil {
			errs = append(errs, err)
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			errs = append(errs, fmt.Errorf("powerfs: rebuild: %w", err))
			continue
		}
		f.byIno[st.Ino] = id
		if ino.kind == kindDir {
			errs = append(errs, f.materialize(id, p, reached))
		}
	}
	return errors.Join(errs...)
}

// make creates node ino at p in the new live tree, with its durable
// content and attributes.
func (f *FS) make(ino *inode, p string) error {
	perm := ino.mode & 0o7777
	var err error
	switch ino.kind {
	case kindDir:
		err = syscall.Mkdir(p, perm)
	case kindFile:
		sp := f.storePath(ino.id)
		if _, serr := os.Lstat(sp); errors.Is(serr, os.ErrNotExist) {
			err = os.WriteFile(sp, nil, 0o600)
		}
		if err == nil {
			err = os.Link(sp, p)
		}
		ino.shared = err == nil
	case kindSymlink:
		err = os.Symlink(ino.target, p)
	default:
		err = syscall.Mknod(p, ino.mode, int(ino.rdev))
	}
	if err != nil {
		return fmt.Errorf("powerfs: rebuild %s: %w", p, err)
	}
	if ino.kind != kindSymlink {
		err = syscall.Chmod(p, perm)
	}
	if err == nil {
		err = syscall.Lchown(p, int(ino.uid), int(ino.gid))
	}
	if err == nil {
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ino.mtime, ino.mtime}, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("powerfs: rebuild %s: %w", p, err)
	}
	return nil
}

func (f *FS) storePath(id uint64) string { return filepath.Join(f.store, strconv.FormatUint(id, 10)) }

func (f *FS) sortedNodes() []*inode {
	out := make([]*inode, 0, len(f.nodes))
	for _, ino := range f.nodes {
		out = append(out, ino)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func sortedPages(m map[int64]struct{}) []int64 {
	out := make([]int64, 0, len(m))
	for pg := range m {
		out = append(out, pg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// unshare gives a file that is about to change its own copy of its
// durable content (see inode.shared).
func (f *FS) unshare(ino *inode) error {
	if !ino.shared {
		return nil
	}
	sp := f.storePath(ino.id)
	tmp := sp + ".split"
	if err := copyFile(sp, tmp); err != nil {
		return fmt.Errorf("powerfs: keep durable copy of node %d: %w", ino.id, err)
	}
	if err := os.Rename(tmp, sp); err != nil {
		return fmt.Errorf("powerfs: keep durable copy of node %d: %w", ino.id, err)
	}
	ino.shared = false
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// changed records that the data of ino changed through descriptor fd:
// pages [off, off+n) were written, or (size >= 0) the size was set.
func (f *FS) changed(ino *inode, fd int, off, n, size int64) {
	if ino.live == nil {
		if nfd, err := unix.Dup(fd); err == nil {
			unix.CloseOnExec(nfd)
			ino.live = os.NewFile(uintptr(nfd), "live")
		}
	}
	if size >= 0 && (ino.minSize < 0 || size < ino.minSize) {
		ino.minSize = size
	}
	if n > 0 {
		if ino.dirty == nil {
			ino.dirty = map[int64]struct{}{}
		}
		for pg := off / pageSize; pg <= (off+n-1)/pageSize; pg++ {
			ino.dirty[pg] = struct{}{}
		}
	}
}

// writeBack copies unsynced data of ino from the live inode (fd) into its
// durable content: the given pages (nil: every dirty page) and, if
// withSize, the size (truncation first, so bytes cut off and grown again
// read as zeros).
func (f *FS) writeBack(ino *inode, fd int, pages []int64, withSize bool) error {
	if ino.shared {
		return nil
	}
	if pages == nil {
		pages = sortedPages(ino.dirty)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
	}
	dst, err := os.OpenFile(f.storePath(ino.id), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
	}
	defer dst.Close()
	limit := st.Size
	if withSize {
		if ino.minSize >= 0 {
			if err := dst.Truncate(ino.minSize); err != nil {
				return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
			}
		}
	} else if dfi, err := dst.Stat(); err == nil {
		// Pages beyond the durable size stay invisible without the size.
		limit = min(limit, dfi.Size())
	}
	buf := make([]byte, 0, 1<<20)
	flush := func(off int64) error {
		if len(buf) == 0 {
			return nil
		}
		_, err := dst.WriteAt(buf, off)
		buf = buf[:0]
		return err
	}
	runStart, prev := int64(-1), int64(-2)
	for _, pg := range pages {
		off := pg * pageSize
		if off >= limit {
			break
		}
		if pg != prev+1 || len(buf)+pageSize > cap(buf) {
			if err := flush(runStart); err != nil {
				return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
			}
			runStart = off
		}
		prev = pg
		n := int(min(pageSize, limit-off))
		chunk := buf[len(buf) : len(buf)+n]
		got, err := unix.Pread(fd, chunk, off)
		if err != nil {
			return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
		}
		clear(chunk[got:]) // shrunk meanwhile
		buf = buf[:len(buf)+n]
	}
	if err := flush(runStart); err != nil {
		return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
	}
	if withSize {
		if err := dst.Truncate(st.Size); err != nil {
			return fmt.Errorf("powerfs: sync node %d: %w", ino.id, err)
		}
	}
	return nil
}

// syncFile is fsync/fdatasync of a file through descriptor fd.
func (f *FS) syncFile(ino *inode, fd int) error {
	f.stats.FileSyncs++
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if ino.unsynced() {
		if err := f.writeBack(ino, fd, nil, true); err != nil {
			return err
		}
	}
	ino.attrsFrom(&st)
	ino.clean()
	return nil
}

// syncDir is fsync of directory dir: its entry changes become durable, with
// the earlier changes they depend on.
func (f *FS) syncDir(dir uint64) {
	f.stats.DirSyncs++
	idx := closure(f.log, dir)
	for _, i := range idx {
		f.applyOp(&f.log[i])
	}
	f.log = without(f.log, idx)
}

// forgetAll makes the kernel forget every name and every cached page and
// attribute of the mount, and empties the node tree, so that everything
// is looked up again in the rebuilt backing tree.
func (m *mount) forgetAll() {
	var walk func(n *fs.Inode)
	walk = func(n *fs.Inode) {
		chs := n.Children()
		for name, ch := range chs {
			if ch.IsDir() {
				walk(ch)
			}
			n.NotifyEntry(name)
			ch.NotifyContent(0, 0)
		}
		for name := range chs {
			n.RmChild(name)
		}
	}
	root := m.root.EmbeddedInode()
	walk(root)
	root.NotifyContent(0, 0)
}

func (m *mount) unmount() error {
	if m.server == nil {
		return nil
	}
	err := syscall.Unmount(m.dir, 0)
	if err != nil {
		// Something still has a file open there: detach it; its
		// operations fail from now on (the mount is no longer current).
		err = syscall.Unmount(m.dir, syscall.MNT_DETACH)
		if err != nil {
			return fmt.Errorf("powerfs: unmount %s: %w", m.dir, err)
		}
		return nil
	}
	done := make(chan struct{})
	go func() { m.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	return nil
}
