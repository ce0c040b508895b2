//go:build unix

package watcher

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Symlinks (to files or directories) are never followed, FIFOs never
// opened, and a directory named like a media file is a directory.
func TestNonRegularFilesIgnored(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(outside, "x.mp4"), 10)
	writeFile(t, filepath.Join(outside, "dir", "y.mp4"), 10)
	mk := func(suffix string) {
		if err := os.Symlink(filepath.Join(outside, "x.mp4"), filepath.Join(root, "link"+suffix+".mp4")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(outside, "dir"), filepath.Join(root, "linkdir"+suffix)); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(filepath.Join(root, "pipe"+suffix+".mp4"), 0o644); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, "dir"+suffix+".mp4", "inner.mp4"), 10)
	}
	mk("1") // found by the start-up scan
	h := newHarness(t, opts{root: root, stable: 100 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)
	mk("2") // found through fsnotify
	h.sentinel("zz.mp4")
	h.waitKind(Ready, "dir1.mp4/inner.mp4", 5*time.Second)
	h.waitKind(Ready, "dir2.mp4/inner.mp4", 5*time.Second)
	h.rescan()
	h.onlyFor("zz.mp4", "dir1.mp4/inner.mp4", "dir2.mp4/inner.mp4")
	for _, l := range []string{"link1.mp4", "link2.mp4", "linkdir1"} {
		if n := h.logs.count("symlink not followed", l); n != 1 {
			t.Errorf("symlink %s logged %d times, want once", l, n)
		}
	}
}
