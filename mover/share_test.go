package mover

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestShareMode(t *testing.T) {
	tests := []struct {
		folder fs.FileMode
		dir    bool
		want   fs.FileMode
	}{
		{0o775 | fs.ModeSetgid, true, 0o775 | fs.ModeSetgid},
		{0o775 | fs.ModeSetgid, false, 0o664},
		{0o750, true, 0o750},
		{0o750, false, 0o640},
		{0o755, false, 0o644},
	}
	for _, tc := range tests {
		if got := ShareMode(tc.folder, tc.dir); got != tc.want {
			t.Errorf("ShareMode(%v, dir=%v) = %v, want %v", tc.folder, tc.dir, got, tc.want)
		}
	}
}

func TestFollowFolderGroupAndMode(t *testing.T) {
	root := t.TempDir()
	const gid = 65534 // nogroup: root may chgrp to it
	if err := os.Chown(root, -1, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o770|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "processed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "clip.mp4.error.txt")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{dir: fs.ModeDir | fs.ModeSetgid | 0o770, file: 0o660} {
		if err := FollowFolder(root, path); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
		if g := fi.Sys().(*syscall.Stat_t).Gid; g != gid {
			t.Errorf("%s: gid %d, want %d", path, g, gid)
		}
	}
}

func TestFollowFolderLeavesSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "clip.mp4.error.txt")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := FollowFolder(root, link); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o600 {
		t.Errorf("the link's target was changed: %v", fi.Mode())
	}
}

// What the daemon files for editors (directories it makes below processed/,
// receipts and reason files) follows the directory it lands in, whatever
// the daemon's umask.
func TestFiledItemsFollowTheirDirectory(t *testing.T) {
	root := t.TempDir()
	const gid = 65534
	if err := os.Chown(root, -1, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, fs.ModeSetgid|0o775); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	receipt := filepath.Join(root, "sub", "deeper", "clip.mp4.receipt.json")
	if err := WriteNew(root, receipt, []byte("{}"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want fs.FileMode
	}{
		{filepath.Join(root, "sub"), fs.ModeDir | fs.ModeSetgid | 0o775},
		{filepath.Join(root, "sub", "deeper"), fs.ModeDir | fs.ModeSetgid | 0o775},
		{receipt, 0o664},
	} {
		fi, err := os.Lstat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.want {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.want)
		}
		if g := fi.Sys().(*syscall.Stat_t).Gid; g != gid {
			t.Errorf("%s: group %d, want %d", tc.path, g, gid)
		}
	}
}
