package powerfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mounted is a mounted power-cut file system for one test.
type mounted struct {
	t   *testing.T
	fs  *FS     // served in this process
	srv *Server // or by a child process (see ServeIfChild)
	mnt string
}

func mountNew(t *testing.T) *mounted {
	t.Helper()
	d := t.TempDir()
	f, err := New(filepath.Join(d, "work"))
	if err != nil {
		t.Fatal(err)
	}
	m := &mounted{t: t, fs: f, mnt: filepath.Join(d, "mnt")}
	if err := os.Mkdir(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.Mount(m.mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if a := f.Stats().Anomalies; a != 0 {
			t.Errorf("%d anomalies", a)
		}
	})
	return m
}

// mountChild is mountNew with the file system served by a child process,
// for tests that map files from the mount.
func mountChild(t *testing.T) *mounted {
	t.Helper()
	d := t.TempDir()
	m := &mounted{t: t, mnt: filepath.Join(d, "mnt")}
	if err := os.Mkdir(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Stderr = os.Stderr
	srv, err := StartServer(cmd, filepath.Join(d, "work"), m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	m.srv = srv
	t.Cleanup(func() {
		st, err := srv.Stats()
		if err != nil || st.Anomalies != 0 {
			t.Errorf("stats %+v %v", st, err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m
}

func (m *mounted) p(rel string) string { return filepath.Join(m.mnt, filepath.FromSlash(rel)) }

// cut cuts the power and mounts the durable state again.
func (m *mounted) cut(o CutOptions) CutReport {
	m.t.Helper()
	if m.srv != nil {
		var seed uint64
		if o.Rand != nil {
			seed = o.Rand.Uint64()
		}
		rep, err := m.srv.Cut(o.Keep, seed)
		if err != nil {
			m.t.Fatalf("cut: %v", err)
		}
		if err := m.srv.Mount(); err != nil {
			m.t.Fatal(err)
		}
		return rep
	}
	rep, err := m.fs.Cut(o)
	if err != nil {
		m.t.Fatalf("cut: %v", err)
	}
	if err := m.fs.Mount(m.mnt); err != nil {
		m.t.Fatal(err)
	}
	return rep
}

// write writes data to rel (created or truncated), fsyncing the file if
// sync is set.
func (m *mounted) write(rel string, data []byte, sync bool) {
	m.t.Helper()
	f, err := os.OpenFile(m.p(rel), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		m.t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			m.t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mounted) syncDir(rel string) {
	m.t.Helper()
	d, err := os.Open(m.p(rel))
	if err != nil {
		m.t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		m.t.Fatalf("fsync %s: %v", rel, err)
	}
}

func (m *mounted) mkdir(rel string) {
	m.t.Helper()
	if err := os.Mkdir(m.p(rel), 0o755); err != nil {
		m.t.Fatal(err)
	}
}

// want asserts rel's content (nil: rel must not exist).
func (m *mounted) want(rel string, data []byte) {
	m.t.Helper()
	got, err := os.ReadFile(m.p(rel))
	switch {
	case data == nil && errors.Is(err, os.ErrNotExist):
	case data == nil:
		m.t.Errorf("%s: want absent, got %q (%v)", rel, short(got), err)
	case err != nil:
		m.t.Errorf("%s: %v", rel, err)
	case !bytes.Equal(got, data):
		m.t.Errorf("%s: got %q, want %q", rel, short(got), short(data))
	}
}

func short(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:40:40], "..."...)
	}
	return b
}

func TestWriteWithoutFsyncIsGoneAfterCut(t *testing.T) {
	m := mountNew(t)
	m.write("kept", []byte("durable"), true)
	m.write("empty", nil, false)
	m.syncDir(".")
	// Changed after their names were durable, never fsynced.
	m.write("kept", []byte("lost overwrite"), false)
	m.write("empty", []byte("lost data"), false)
	// Neither data nor name durable.
	m.write("new", []byte("lost file"), false)
	// Data durable, name not.
	m.write("orphan", []byte("synced data, unsynced name"), true)

	rep := m.cut(CutOptions{})
	m.want("kept", []byte("durable"))
	m.want("empty", []byte{})
	m.want("new", nil)
	m.want("orphan", nil)
	if rep.Files == 0 || rep.Ops != 2 || rep.OpsKept != 0 {
		t.Errorf("report %+v: want files with lost data and 2 lost directory changes", rep)
	}
}

func TestFsyncedFileSurvivesWithItsIdentity(t *testing.T) {
	m := mountNew(t)
	m.mkdir("d")
	m.syncDir(".")
	data := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640,000 bytes: many pages
	m.write("d/clip.mp4", data, true)
	m.syncDir("d")
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(m.p("d/clip.mp4"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.p("d/clip.mp4"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // makes the mtime durable too
		t.Fatal(err)
	}
	f.Close()
	before, err := os.Stat(m.p("d/clip.mp4"))
	if err != nil {
		t.Fatal(err)
	}

	m.cut(CutOptions{})
	m.want("d/clip.mp4", data)
	after, err := os.Stat(m.p("d/clip.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	bs, as := before.Sys().(*syscall.Stat_t), after.Sys().(*syscall.Stat_t)
	if bs.Ctim != as.Ctim {
		t.Errorf("ctime changed by the cut: %v, was %v", as.Ctim, bs.Ctim)
	}
	if bs.Ino != as.Ino || bs.Dev != as.Dev || !after.ModTime().Equal(mtime) || after.Size() != before.Size() || after.Mode() != before.Mode() || as.Nlink != 1 {
		t.Errorf("identity changed by the cut: before dev %d ino %d %s %d %v, after dev %d ino %d %s %d %v nlink %d",
			bs.Dev, bs.Ino, before.ModTime(), before.Size(), before.Mode(), as.Dev, as.Ino, after.ModTime(), after.Size(), after.Mode(), as.Nlink)
	}
	// A second cut with nothing pending changes nothing.
	m.cut(CutOptions{})
	m.want("d/clip.mp4", data)
	var again syscall.Stat_t
	if err := syscall.Stat(m.p("d/clip.mp4"), &again); err != nil {
		t.Fatal(err)
	}
	if again.Ctim != bs.Ctim || again.Ino != bs.Ino || again.Dev != bs.Dev {
		t.Errorf("second cut: ctime %v ino %d dev %d, was %v %d %d", again.Ctim, again.Ino, again.Dev, bs.Ctim, bs.Ino, bs.Dev)
	}
}

func TestRenameWithoutDirectorySyncIsUndone(t *testing.T) {
	m := mountNew(t)
	m.mkdir("inbox")
	m.mkdir("processed")
	m.syncDir(".")
	m.write("inbox/a.mp4", []byte("A"), true)
	m.write("inbox/b.mp4", []byte("B"), true)
	m.syncDir("inbox")

	for _, n := range []string{"a.mp4", "b.mp4"} {
		if err := os.Rename(m.p("inbox/"+n), m.p("processed/"+n)); err != nil {
			t.Fatal(err)
		}
	}
	m.cut(CutOptions{})
	m.want("inbox/a.mp4", []byte("A"))
	m.want("inbox/b.mp4", []byte("B"))
	m.want("processed/a.mp4", nil)
	m.want("processed/b.mp4", nil)

	// Syncing the target directory makes the whole rename durable.
	if err := os.Rename(m.p("inbox/b.mp4"), m.p("processed/b.mp4")); err != nil {
		t.Fatal(err)
	}
	m.syncDir("processed")
	m.cut(CutOptions{})
	m.want("inbox/b.mp4", nil)
	m.want("processed/b.mp4", []byte("B"))
	m.want("inbox/a.mp4", []byte("A"))
}

func TestUnlinkWithoutDirectorySyncIsUndone(t *testing.T) {
	m := mountNew(t)
	m.write("a", []byte("still here"), true)
	m.syncDir(".")
	if err := os.Remove(m.p("a")); err != nil {
		t.Fatal(err)
	}
	m.cut(CutOptions{})
	m.want("a", []byte("still here"))
	if err := os.Remove(m.p("a")); err != nil {
		t.Fatal(err)
	}
	m.syncDir(".")
	m.cut(CutOptions{})
	m.want("a", nil)
}

// A new directory's own fsync does not make its name in its parent
// durable: a file synced into it is lost with it.
func TestNewDirectoryNeedsItsParentSynced(t *testing.T) {
	m := mountNew(t)
	m.mkdir("new")
	m.write("new/f", []byte("x"), true)
	m.syncDir("new")
	m.cut(CutOptions{})
	m.want("new/f", nil)
	if _, err := os.Stat(m.p("new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new directory survived without its parent synced: %v", err)
	}

	m.mkdir("new")
	m.write("new/f", []byte("x"), true)
	m.syncDir("new")
	m.syncDir(".")
	m.cut(CutOptions{})
	m.want("new/f", []byte("x"))
}

// A chain of renames made durable at its end must not leave the file at
// its start as well.
func TestRenameChainKeepsOneCopy(t *testing.T) {
	m := mountNew(t)
	for _, d := range []string{"d1", "d2", "d3"} {
		m.mkdir(d)
	}
	m.syncDir(".")
	m.write("d1/f", []byte("f"), true)
	m.syncDir("d1")
	if err := os.Rename(m.p("d1/f"), m.p("d2/f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.p("d2/f"), m.p("d3/f")); err != nil {
		t.Fatal(err)
	}
	m.syncDir("d3")
	m.cut(CutOptions{})
	m.want("d1/f", nil)
	m.want("d2/f", nil)
	m.want("d3/f", []byte("f"))
}

func TestTruncateAndGrowReadZeros(t *testing.T) {
	m := mountNew(t)
	m.write("f", bytes.Repeat([]byte("x"), 10000), true)
	m.syncDir(".")
	if err := os.Truncate(m.p("f"), 10); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.p("f"), 5000); err != nil {
		t.Fatal(err)
	}
	// Not synced yet: the old content comes back.
	m.cut(CutOptions{})
	m.want("f", bytes.Repeat([]byte("x"), 10000))

	if err := os.Truncate(m.p("f"), 10); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.p("f"), 5000); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(m.p("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(fh.Fd())); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	m.cut(CutOptions{})
	m.want("f", append(bytes.Repeat([]byte("x"), 10), make([]byte, 4990)...))
}

// With Keep, a random part of the unsynced pages survives: each page is
// wholly old or wholly new (torn at page boundaries, never inside one).
func TestTornWritesArePageSized(t *testing.T) {
	m := mountNew(t)
	const pages = 256
	old := bytes.Repeat([]byte("o"), pages*pageSize)
	m.write("f", old, true)
	m.syncDir(".")
	f, err := os.OpenFile(m.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("n"), pages*pageSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rep := m.cut(CutOptions{Keep: 0.5, Rand: rand.New(rand.NewPCG(7, 7))})
	got, err := os.ReadFile(m.p("f"))
	if err != nil || len(got) != len(old) {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	newPages := 0
	for pg := 0; pg < pages; pg++ {
		b := got[pg*pageSize : (pg+1)*pageSize]
		switch {
		case bytes.Equal(b, old[:pageSize]):
		case bytes.Equal(b, bytes.Repeat([]byte("n"), pageSize)):
			newPages++
		default:
			t.Fatalf("page %d is torn inside", pg)
		}
	}
	if newPages == 0 || newPages == pages || newPages != rep.PagesKept {
		t.Errorf("%d of %d pages new, report says %d kept: want some of each", newPages, pages, rep.PagesKept)
	}
}

// The writer probe's read lease works on this file system (the kernel
// handles leases locally for FUSE): it fails while a writer has the file
// open and succeeds after.
func TestReadLeaseSeesWriters(t *testing.T) {
	m := mountNew(t)
	w, err := os.OpenFile(m.p("f"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	probe := func() error {
		fd, err := unix.Open(m.p("f"), unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
			return err
		}
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		return err
	}
	if err := probe(); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("lease with a writer open: %v, want EAGAIN", err)
	}
	w.Close()
	if err := probe(); err != nil {
		t.Errorf("lease without writers: %v", err)
	}
}

func TestHardLinksAndSymlinksSurvive(t *testing.T) {
	m := mountNew(t)
	m.write("a", []byte("shared"), true)
	if err := os.Link(m.p("a"), m.p("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", m.p("s")); err != nil {
		t.Fatal(err)
	}
	m.syncDir(".")
	m.cut(CutOptions{})
	m.want("b", []byte("shared"))
	if tg, err := os.Readlink(m.p("s")); err != nil || tg != "a" {
		t.Errorf("symlink: %q %v", tg, err)
	}
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(m.p("a"), &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(m.p("b"), &sb); err != nil {
		t.Fatal(err)
	}
	if sa.Ino != sb.Ino || sa.Nlink != 2 {
		t.Errorf("hard link: inodes %d %d, nlink %d", sa.Ino, sb.Ino, sa.Nlink)
	}
}

// Operations through a mount that was cut fail; nothing written through it
// after the cut reaches the next mount.
func TestNothingPassesACut(t *testing.T) {
	m := mountNew(t)
	m.write("f", []byte("before"), true)
	m.syncDir(".")
	f, err := os.OpenFile(m.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := m.fs.Cut(CutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("after!"), 0); err == nil {
		if err := f.Sync(); err == nil {
			t.Error("write and fsync through a cut mount succeeded")
		}
	}
	if err := m.fs.Mount(m.mnt); err != nil {
		t.Fatal(err)
	}
	m.want("f", []byte("before"))
}
