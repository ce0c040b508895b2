package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/watcher"
)

// openToEditors makes the harness's inbox writable by uid 65534, the
// editor in these tests (the daemon runs as root).
func openToEditors(t *testing.T, h *harness) {
	t.Helper()
	for _, d := range []string{filepath.Dir(h.dir), h.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(h.inbox, 0o777); err != nil {
		t.Fatal(err)
	}
}

// asEditor runs a command as uid 65534.
func asEditor(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as editor %q: %v\n%s", args, err, out)
	}
}

// outsideDir is a directory outside the folder that uid 65534 can name.
func outsideDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "wf-outside-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (h *harness) waitLog(what string, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(h.logs.String(), what) {
		if time.Now().After(deadline) {
			h.t.Fatalf("no %q in the log after %s:\n%s", what, timeout, tail(h.logs.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An editor replaces the empty failed/ (or a directory below processed/)
// with a symlink: the daemon (root) must not move media or write a reason
// file wherever it points. The job waits in moving, saying why.
func TestEditorSymlinkDoesNotRedirectFiling(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		data    []byte
		replace func(h *harness) string // the directory the editor turns into a symlink
	}{
		{"failed is a symlink", "empty.mp4", nil, func(h *harness) string { return h.failed }},
		{"processed/sub is a symlink", "sub/clip.mp4", content("clip", 2000), func(h *harness) string {
			return filepath.Join(h.processed, "sub")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, hopts{})
			openToEditors(t, h)
			for _, d := range []string{h.failed, h.processed} {
				if err := os.MkdirAll(d, 0o755); err != nil { // the daemon may not have made them yet
					t.Fatal(err)
				}
			}
			if err := os.Chmod(h.processed, 0o777); err != nil {
				t.Fatal(err)
			}
			outside := outsideDir(t)
			if err := os.Chmod(outside, 0o777); err != nil {
				t.Fatal(err)
			}
			dir := c.replace(h)
			asEditor(t, "sh", "-c", fmt.Sprintf("rmdir %q 2>/dev/null; ln -s %q %q", dir, outside, dir))
			src := filepath.Join(h.inbox, c.file)
			asEditor(t, "mkdir", "-p", filepath.Dir(src))
			asEditor(t, "sh", "-c", fmt.Sprintf("printf %%s %q > %q", c.data, src))
			h.waitLog(mover.ErrSymlink.Error(), 30*time.Second)
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("daemon wrote outside the folder: %v", ents)
			}
			if _, err := os.Lstat(src); err != nil {
				t.Fatalf("media no longer in the folder: %v", err)
			}
			for _, j := range h.jobs() {
				if j.State != state.Moving {
					t.Errorf("job %s is %s, want moving (waiting for the symlink to go)", j.RelPath, j.State)
				}
			}
		})
	}
}

// A sidecar replaced by a symlink (to /etc/shadow, or any file the editor
// cannot read) is never read; a FIFO in its place does not block.
func TestSidecarSymlinkAndFIFONotRead(t *testing.T) {
	root := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret.json")
	writeFile(t, secret, []byte(`{"title": "root-only secret"}`))
	link := filepath.Join(root, "clip.json")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	m, err := readSidecar(root, link, config.SidecarPlatforms())
	if !errors.Is(err, mover.ErrSymlink) || m.Title != "" {
		t.Fatalf("readSidecar through a symlink = %+v, %v; want ErrSymlink", m, err)
	}
	fifo := filepath.Join(root, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := readSidecar(root, fifo, config.SidecarPlatforms()); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, mover.ErrNotRegular) {
			t.Fatalf("readSidecar(FIFO) = %v, want ErrNotRegular", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readSidecar blocked on a FIFO")
	}
}

// Receipts never overwrite a user's file of the same name, and with
// include = ["*"] a sidecar is not a job of its own.
func TestReceiptsNeverOverwriteAndSidecarsAreNotJobs(t *testing.T) {
	h := newHarness(t, hopts{folderExtra: "receipts = true\ninclude = [\"*\"]"})
	user := filepath.Join(h.processed, "b.mp4.receipt.json")
	writeFile(t, user, []byte("the user's own notes"))
	writeFile(t, filepath.Join(h.inbox, "b.mp4"), content("b", 1500))
	writeFile(t, filepath.Join(h.inbox, "c.json"), []byte(`{"title": "C"}`))
	writeFile(t, filepath.Join(h.inbox, "c.mp4"), content("c", 1500))
	done := h.waitState(state.Done, 2, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // a job for c.json would have appeared by now
	if jobs := h.jobs(); len(jobs) != 2 {
		for _, j := range jobs {
			t.Logf("job %s %s", j.RelPath, j.State)
		}
		t.Fatalf("%d jobs, want 2 (the sidecar is not a job)", len(jobs))
	}
	if b, _ := os.ReadFile(user); string(b) != "the user's own notes" {
		t.Fatalf("user's file overwritten: %q", b)
	}
	for _, j := range done {
		if _, err := os.Stat(CompanionPath(j.FinalPath, ReceiptSuffix)); err != nil {
			t.Errorf("%s: no receipt beside %s: %v", j.RelPath, j.FinalPath, err)
		}
		if j.RelPath == "b.mp4" && j.FinalPath == filepath.Join(h.processed, "b.mp4") {
			t.Errorf("b.mp4 filed where its receipt would replace the user's file")
		}
	}
	if _, err := os.Stat(filepath.Join(h.processed, "c.json")); err != nil {
		t.Errorf("sidecar not filed with its media: %v", err)
	}
}

// A 255-byte name that is taken in processed/, and a media file whose
// sidecar name is taken there, are filed under suffixed names instead of
// staying in moving ("file name too long", "target already exists").
func TestNameCollisionsAtNameMaxAndTakenSidecarAreFiled(t *testing.T) {
	h := newHarness(t, hopts{})
	long := strings.Repeat("L", 251) + ".mp4"
	writeFile(t, filepath.Join(h.processed, long), []byte("earlier delivery"))
	writeFile(t, filepath.Join(h.processed, "d.json"), []byte(`{"title": "earlier"}`))
	writeFile(t, filepath.Join(h.inbox, long), content("long", 1200))
	writeFile(t, filepath.Join(h.inbox, "d.json"), []byte(`{"title": "D"}`))
	writeFile(t, filepath.Join(h.inbox, "d.mp4"), content("d", 1200))
	done := h.waitState(state.Done, 2, 30*time.Second)
	for _, j := range done {
		if len(filepath.Base(j.FinalPath)) > 255 {
			t.Errorf("%s filed as a name longer than NAME_MAX", j.RelPath)
		}
		if _, err := os.Stat(j.FinalPath); err != nil {
			t.Errorf("%s: %v", j.RelPath, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(h.processed, "d.json")); string(b) != `{"title": "earlier"}` {
		t.Errorf("earlier sidecar replaced: %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(h.processed, "d (1).json")); err != nil || string(b) != `{"title": "D"}` {
		t.Errorf("new sidecar not filed beside d (1).mp4: %q %v", b, err)
	}
}

// A file whose name is not valid UTF-8 reaches failed/ with a reason.
func TestNonUTF8NameIsFiledAsFailed(t *testing.T) {
	h := newHarness(t, hopts{})
	name := "caf\xe9.mp4" // Latin-1
	writeFile(t, filepath.Join(h.inbox, name), content("latin1", 1000))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(h.failed, name)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not in failed/ after 30s; log:\n%s", tail(h.logs.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	reason, err := os.ReadFile(filepath.Join(h.failed, name+ReasonSuffix))
	if err != nil || !strings.Contains(string(reason), "not valid UTF-8") {
		t.Fatalf("reason = %q, %v", reason, err)
	}
	if _, err := os.Lstat(filepath.Join(h.inbox, name)); !os.IsNotExist(err) {
		t.Fatalf("still in the inbox: %v", err)
	}
}

// A second daemon (another state directory) on a watched folder refuses to
// start and names the holder.
func TestSecondDaemonOnAFolderRefusesToStart(t *testing.T) {
	h := newHarness(t, hopts{})
	lock := filepath.Join(h.inbox, FolderLockName)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(lock); strings.Contains(string(b), fmt.Sprintf("pid %d ", os.Getpid())) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first daemon did not write the folder lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfg := *h.cfg
	cfg.StateDir = filepath.Join(h.dir, "state2")
	cfg.ControlSocket = filepath.Join(h.dir, "control2.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := New(ctx, Options{Config: &cfg, Logger: h.d.log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	select {
	case err := <-res:
		if !errors.Is(err, ErrFolderLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
			t.Fatalf("second daemon: %v; want ErrFolderLocked naming the holder", err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		<-res
		t.Fatal("second daemon started on a folder another daemon watches")
	}
	// Once the first one stops, the folder is free.
	h.stop()
	ctx2, cancel2 := context.WithCancel(context.Background())
	d2, err := New(ctx2, Options{Config: &cfg, Logger: h.d.log, Version: "test"})
	if err != nil {
		cancel2()
		t.Fatal(err)
	}
	res2 := make(chan error, 1)
	go func() { res2 <- d2.Run(ctx2) }()
	time.Sleep(time.Second)
	cancel2()
	if err := <-res2; err != nil {
		t.Fatalf("daemon on a freed folder: %v", err)
	}
}

// include = ["*.{mov,mxf}"] passes the config and matches both extensions
// (path.Match took the braces literally and matched nothing).
func TestBraceIncludeFromConfig(t *testing.T) {
	cfg, err := config.Parse([]byte(`
state_dir = "/tmp/x"
[[folder]]
name = "n"
path = "/srv/watch/n"
destinations = ["a"]
include = ["*.{mov,MXF}"]
[destination.a]
type = "s3"
bucket = "bkt"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	wf := watcherFolders(cfg)[0]
	for rel, want := range map[string]bool{"a.mov": true, "sub/b.mxf": true, "c.mp4": false, "a.json": false} {
		if got := watcher.Match(wf, rel); got != want {
			t.Errorf("Match(%q) = %v, want %v", rel, got, want)
		}
	}
}

// Filing across filesystems from a directory the daemon cannot remove files
// from (append-only here; a read-only share in practice): the copy is made
// once, the job ends done saying the original stayed, and no retry makes
// "clip (1).mp4", "clip (2).mp4"...
func TestCrossFilesystemOriginalKeptIsFiledOnce(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "wf-daemon-")
	if err != nil {
		t.Fatalf("need a second filesystem (/dev/shm): %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	processed := filepath.Join(shm, "processed")
	h := newHarness(t, hopts{folderExtra: fmt.Sprintf("processed_dir = %q", processed)})
	locked := filepath.Join(h.inbox, "locked")
	writeFile(t, filepath.Join(locked, "clip.mp4"), content("kept", 3000))
	if out, err := exec.Command("chattr", "+a", locked).CombinedOutput(); err != nil {
		t.Fatalf("chattr +a (needs ext4, xfs or btrfs under %s): %v %s", os.TempDir(), err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-a", locked).Run() })
	done := h.waitState(state.Done, 1, 30*time.Second)
	h.d.watcher.Load().Rescan()
	time.Sleep(3 * time.Second) // room for a wrong second filing
	assertDir := func() {
		ents, _ := os.ReadDir(filepath.Join(processed, "locked"))
		if len(ents) != 1 || ents[0].Name() != "clip.mp4" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("processed/locked holds %q, want just clip.mp4", names)
		}
	}
	assertDir()
	if jobs := h.jobs(); len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1", len(jobs))
	}
	j := done[0]
	noted := false
	for _, hist := range j.History {
		noted = noted || strings.Contains(hist.Note, "original could not be removed")
	}
	if !noted {
		t.Errorf("job history does not say the original stayed: %+v", j.History)
	}
	if n := strings.Count(h.logs.String(), "filed as a copy"); n != 1 {
		t.Errorf("said %d times that the original stayed, want once", n)
	}
	if _, err := os.Stat(filepath.Join(locked, "clip.mp4")); err != nil {
		t.Errorf("original: %v", err)
	}
}
