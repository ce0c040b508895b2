package mover

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlanAvoidsTakenNames(t *testing.T) {
	dest := t.TempDir()
	tests := []struct {
		name     string
		existing []string
		rel      string
		want     string
	}{
		{"free", nil, "sub/clip.mp4", "sub/clip.mp4"},
		{"taken once", []string{"clip.mp4"}, "clip.mp4", "clip (1).mp4"},
		{"taken twice", []string{"a/clip.mov", "a/clip (1).mov"}, "a/clip.mov", "a/clip (2).mov"},
		{"partial counts as taken", []string{"p.mxf" + partialSuffix}, "p.mxf", "p (1).mxf"},
		{"no extension", []string{"README"}, "README", "README (1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(dest, tt.name)
			for _, e := range tt.existing {
				write(t, filepath.Join(d, e), "x")
			}
			got, err := Plan(d, tt.rel)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(d, tt.want); got != want {
				t.Fatalf("Plan = %s, want %s", got, want)
			}
		})
	}
	if _, err := Plan(dest, "../escape.mp4"); err == nil {
		t.Fatal("Plan accepted a path that escapes the destination")
	}
}

func TestMoveSameFilesystemAndRepeat(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "in", "deep", "clip.mp4")
	write(t, src, "media")
	target := filepath.Join(root, "processed", "deep", "clip.mp4")
	if err := Move(src, target); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "media" {
		t.Fatalf("target = %q, %v", b, err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source still there: %v", err)
	}
	// A crash after the rename but before the commit repeats the move.
	if err := Move(src, target); err != nil {
		t.Fatalf("repeated move: %v", err)
	}
	// Neither there: an error that names the file.
	if err := Move(filepath.Join(root, "nope.mp4"), filepath.Join(root, "processed", "nope.mp4")); err == nil {
		t.Fatal("move of a missing file succeeded")
	}
}

// MoveUnsynced leaves the directory sync to the caller and names the
// directory to sync, also when it finds the move already done (a crash may
// have come before the sync); a cross-filesystem move syncs itself.
func TestMoveUnsyncedNamesTheDirectoryToSync(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "in", "clip.mp4")
	write(t, src, "media")
	target := filepath.Join(root, "processed", "sub", "clip.mp4")
	for _, pass := range []string{"first", "repeat"} {
		dir, err := MoveUnsynced(src, target)
		if err != nil {
			t.Fatalf("%s: %v", pass, err)
		}
		if want := filepath.Dir(target); dir != want {
			t.Fatalf("%s: dir to sync = %q, want %q", pass, dir, want)
		}
		if err := SyncDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := MoveUnsynced(filepath.Join(root, "nope.mp4"), filepath.Join(root, "processed", "nope.mp4")); err == nil {
		t.Fatal("move of a missing file succeeded")
	}
	write(t, src, "again")
	if _, err := MoveUnsynced(src, target); !errors.Is(err, ErrTargetExists) {
		t.Fatalf("move onto an existing target: err = %v, want ErrTargetExists", err)
	}
}

func TestMoveRefusesToOverwrite(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "a.mp4")
	target := filepath.Join(root, "p", "a.mp4")
	write(t, src, "new")
	write(t, target, "old")
	if err := Move(src, target); err == nil {
		t.Fatal("Move overwrote an existing target")
	}
	if b, _ := os.ReadFile(target); string(b) != "old" {
		t.Fatalf("target changed to %q", b)
	}
}

func TestMoveAcrossFilesystems(t *testing.T) {
	other, err := os.MkdirTemp("/dev/shm", "wf-mover-")
	if err != nil {
		t.Fatalf("need a second filesystem (/dev/shm): %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	root := t.TempDir()
	var a, b syscall.Statfs_t
	if syscall.Statfs(root, &a) != nil || syscall.Statfs(other, &b) != nil || a.Fsid == b.Fsid {
		t.Fatalf("%s and %s are on the same filesystem; this test needs two", root, other)
	}
	src := filepath.Join(root, "clip.mov")
	write(t, src, "cross-device bytes")
	target := filepath.Join(other, "processed", "clip.mov")
	if err := Move(src, target); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "cross-device bytes" {
		t.Fatalf("target = %q", got)
	}
	if _, err := os.Stat(target + partialSuffix); !os.IsNotExist(err) {
		t.Fatal("partial file left behind")
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatal("source left behind")
	}
}

func TestPruneEmptyStopsAtRoot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "a", "keep.txt"), "x")
	PruneEmpty(root, deep)
	if _, err := os.Stat(filepath.Join(root, "a", "b")); !os.IsNotExist(err) {
		t.Fatal("empty directories not removed")
	}
	if _, err := os.Stat(filepath.Join(root, "a")); err != nil {
		t.Fatal("non-empty directory removed")
	}
	PruneEmpty(root, root)
	if _, err := os.Stat(root); err != nil {
		t.Fatal("root removed")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x", "clip.mp4.error.txt")
	if err := WriteFileAtomic(p, []byte("reason"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "reason" {
		t.Fatalf("got %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temp file left: %v", entries)
	}
}
