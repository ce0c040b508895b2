package mover

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// A folder whose processed/ (or a directory below it, or the source's own
// directory) an editor replaced with a symlink: nothing is moved, written
// or removed outside the folder.
func TestNothingFollowsASymlinkOutOfTheFolder(t *testing.T) {
	cases := []struct {
		name       string
		writeFails bool // the companion's directory is the symlink
		setup      func(t *testing.T, root, outside string) (src, target string)
	}{
		{"processed is a symlink", true, func(t *testing.T, root, outside string) (string, string) {
			symlink(t, outside, filepath.Join(root, "processed"))
			return filepath.Join(root, "clip.mp4"), filepath.Join(root, "processed", "clip.mp4")
		}},
		{"subdirectory of processed is a symlink", true, func(t *testing.T, root, outside string) (string, string) {
			mkdir(t, filepath.Join(root, "processed"))
			symlink(t, outside, filepath.Join(root, "processed", "sub"))
			return filepath.Join(root, "clip.mp4"), filepath.Join(root, "processed", "sub", "clip.mp4")
		}},
		{"target name is a dangling symlink", false, func(t *testing.T, root, outside string) (string, string) {
			mkdir(t, filepath.Join(root, "processed"))
			symlink(t, filepath.Join(outside, "planted.mp4"), filepath.Join(root, "processed", "clip.mp4"))
			return filepath.Join(root, "clip.mp4"), filepath.Join(root, "processed", "clip.mp4")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root, outside := t.TempDir(), t.TempDir()
			src, target := c.setup(t, root, outside)
			write(t, src, "media")
			_, err := MoveBelow(root, src, root, target)
			if err == nil {
				t.Fatal("move through a symlink succeeded")
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("written outside the folder: %v", ents)
			}
			if b, err := os.ReadFile(src); err != nil || string(b) != "media" {
				t.Fatalf("source lost: %q %v", b, err)
			}
			// Reason and receipt files too.
			err = WriteNew(root, target+".error.txt", []byte("reason"), 0o644, true)
			if c.writeFails && err == nil {
				t.Fatal("write through a symlink succeeded")
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("written outside the folder: %v", ents)
			}
		})
	}
}

// A source directory replaced by a symlink must not make the daemon file a
// file from elsewhere (/etc/shadow into processed/).
func TestSourceThroughSymlinkIsNotMoved(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	write(t, filepath.Join(outside, "clip.mp4"), "not yours")
	symlink(t, outside, filepath.Join(root, "sub"))
	_, err := MoveBelow(root, filepath.Join(root, "sub", "clip.mp4"), root, filepath.Join(root, "processed", "sub", "clip.mp4"))
	if !errors.Is(err, ErrSymlink) {
		t.Fatalf("err = %v, want ErrSymlink", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "clip.mp4")); err != nil {
		t.Fatalf("file outside the folder was moved: %v", err)
	}
}

func TestPruneEmptyDoesNotFollowSymlinks(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	mkdir(t, filepath.Join(outside, "b"))
	symlink(t, outside, filepath.Join(root, "a"))
	PruneEmpty(root, filepath.Join(root, "a", "b"))
	if _, err := os.Stat(filepath.Join(outside, "b")); err != nil {
		t.Fatalf("directory outside the folder removed: %v", err)
	}
}

func TestWriteNewNeverReplaces(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "processed", "b.mp4.receipt.json")
	write(t, p, "the user's own file")
	if err := WriteNew(root, p, []byte("receipt"), 0o644, false); !errors.Is(err, ErrTargetExists) {
		t.Fatalf("err = %v, want ErrTargetExists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "the user's own file" {
		t.Fatalf("user's file replaced: %q", b)
	}
	q := filepath.Join(root, "processed", "c.mp4.receipt.json")
	if err := WriteNew(root, q, []byte("receipt"), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "processed", ".watchfolder-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// OpenRegular refuses a symlink (a sidecar pointing at /etc/shadow) and a
// FIFO (which would block the open forever waiting for a writer).
func TestOpenRegularRefusesSymlinksAndFIFOs(t *testing.T) {
	root := t.TempDir()
	symlink(t, "/etc/passwd", filepath.Join(root, "link.json"))
	if err := syscall.Mkfifo(filepath.Join(root, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(root, "dir.json"))
	write(t, filepath.Join(root, "ok.json"), "{}")
	cases := []struct {
		name string
		want error
	}{
		{"link.json", ErrSymlink},
		{"fifo.json", ErrNotRegular},
		{"dir.json", ErrNotRegular},
		{"ok.json", nil},
	}
	for _, c := range cases {
		done := make(chan error, 1)
		go func() {
			f, err := OpenRegular(root, filepath.Join(root, c.name))
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: open blocked", c.name)
		}
	}
}

// A name at NAME_MAX that is taken gets a suffixed, shortened name (not
// "file name too long" forever), and companions count as taken.
func TestPlanWithLongNamesAndCompanions(t *testing.T) {
	dest := t.TempDir()
	long := strings.Repeat("é", 125) + ".mp4" // 254 bytes
	write(t, filepath.Join(dest, long), "x")
	got, err := Plan(dest, long)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	base := filepath.Base(got)
	if len(base) > nameMax || !strings.HasSuffix(base, " (1).mp4") || !strings.HasPrefix(long, strings.TrimSuffix(base, " (1).mp4")) {
		t.Fatalf("Plan = %q (%d bytes)", base, len(base))
	}
	if !utf8Valid(base) {
		t.Fatalf("shortened name cut a character: %q", base)
	}

	sidecar := func(p string) []string { return []string{strings.TrimSuffix(p, filepath.Ext(p)) + ".json"} }
	write(t, filepath.Join(dest, "s", "clip.json"), "someone's sidecar")
	got, err = PlanWith(filepath.Join(dest, "s"), "clip.mov", sidecar)
	if err != nil || filepath.Base(got) != "clip (1).mov" {
		t.Fatalf("PlanWith = %q, %v; want clip (1).mov", got, err)
	}
	// A companion that would not fit NAME_MAX shortens the media name.
	ts := strings.Repeat("t", 250) + ".ts"
	got, err = PlanWith(filepath.Join(dest, "t"), ts, sidecar)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(sidecar(got), got) {
		if len(filepath.Base(p)) > nameMax {
			t.Fatalf("%q is longer than NAME_MAX", filepath.Base(p))
		}
	}
}

// A copy across filesystems whose original was not removed (a crash, or a
// directory the daemon may not write) is recognised when the move is tried
// again: no second copy, and the original goes when it can.
func TestCrossFilesystemMoveIsIdempotent(t *testing.T) {
	other := shmDir(t)
	root := t.TempDir()
	src := filepath.Join(root, "clip.mov")
	write(t, src, "cross-device bytes")
	target := filepath.Join(other, "processed", "clip.mov")
	// The state a crash between the copy's rename and the removal leaves.
	write(t, target, "cross-device bytes")
	if _, err := MoveBelow(root, src, other, target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("original not removed: %v", err)
	}
	assertOnly(t, filepath.Join(other, "processed"), "clip.mov")

	// Different bytes under the planned name: not ours, never replaced.
	write(t, src, "new bytes")
	if _, err := MoveBelow(root, src, other, target); !errors.Is(err, ErrTargetExists) {
		t.Fatalf("err = %v, want ErrTargetExists", err)
	}
}

// The daemon (here: uid 65534) may not remove the original from a folder
// it cannot write: the move says so (ErrOriginalKept), and every retry
// recognises the copy instead of making "clip (1).mov", "clip (2).mov"...
func TestCrossFilesystemOriginalKeptIsCopiedOnce(t *testing.T) {
	other := shmDir(t)
	inbox := worldDir(t)
	src := filepath.Join(inbox, "clip.mov")
	write(t, src, "cross-device bytes")
	if err := os.Chmod(inbox, 0o755); err != nil { // root's, read-only for uid 65534
		t.Fatal(err)
	}
	processed := filepath.Join(other, "processed")
	mkdir(t, processed)
	if err := os.Chown(processed, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(processed, "clip.mov")
	for attempt := 1; attempt <= 3; attempt++ {
		out, err := asNobody(t, "move", inbox, src, other, target)
		if !strings.Contains(out, "ErrOriginalKept") {
			t.Fatalf("attempt %d: %s %v; want ErrOriginalKept", attempt, out, err)
		}
	}
	assertOnly(t, processed, "clip.mov")
	if b, _ := os.ReadFile(target); string(b) != "cross-device bytes" {
		t.Fatalf("copy = %q", b)
	}
}

// TestHelperProcess runs mover calls for the tests above as another user.
func TestHelperProcess(t *testing.T) {
	args := strings.Split(os.Getenv("WF_MOVER_HELPER"), "\x1f")
	if len(args) < 2 {
		return
	}
	switch args[0] {
	case "move":
		_, err := MoveBelow(args[1], args[2], args[3], args[4])
		switch {
		case errors.Is(err, ErrOriginalKept):
			os.Stdout.WriteString("ErrOriginalKept: " + err.Error() + "\n")
		case err != nil:
			os.Stdout.WriteString("error: " + err.Error() + "\n")
		default:
			os.Stdout.WriteString("ok\n")
		}
	}
}

func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	exe := filepath.Join(worldDir(t), "mover.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe, "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "WF_MOVER_HELPER="+strings.Join(args, "\x1f"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// worldDir is a fresh directory that uid 65534 can reach.
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "wf-mover-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func shmDir(t *testing.T) string {
	t.Helper()
	other, err := os.MkdirTemp("/dev/shm", "wf-mover-")
	if err != nil {
		t.Fatalf("need a second filesystem (/dev/shm): %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	if err := os.Chmod(other, 0o755); err != nil {
		t.Fatal(err)
	}
	var a, b syscall.Statfs_t
	if syscall.Statfs(os.TempDir(), &a) != nil || syscall.Statfs(other, &b) != nil || a.Fsid == b.Fsid {
		t.Fatalf("%s and %s are on the same filesystem; this test needs two", os.TempDir(), other)
	}
	return other
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, "|") != strings.Join(names, "|") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

func symlink(t *testing.T, to, at string) {
	t.Helper()
	if err := os.Symlink(to, at); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }
