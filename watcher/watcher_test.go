package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func requireLeases(t *testing.T) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe")
	writeFile(t, p, 1)
	if _, err := (leaseProbe{}).HasWriter(p); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("lease probe unavailable although running as root: %v", err)
		}
		t.Skipf("lease probe unavailable here (not root?): %v", err)
	}
}

func TestLeaseProbe(t *testing.T) {
	requireLeases(t)
	p := filepath.Join(t.TempDir(), "clip.mp4")
	writeFile(t, p, 100)
	var probe writerProbe = leaseProbe{}

	busy, err := probe.HasWriter(p)
	if err != nil || busy {
		t.Fatalf("closed file: HasWriter = %v, %v; want false, nil", busy, err)
	}
	wf, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	busy, err = probe.HasWriter(p)
	if err != nil || !busy {
		t.Errorf("open for writing: HasWriter = %v, %v; want true, nil", busy, err)
	}
	// A reader does not count as a writer.
	rf, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if err := wf.Close(); err != nil {
		t.Fatal(err)
	}
	busy, err = probe.HasWriter(p)
	if err != nil || busy {
		t.Errorf("after close: HasWriter = %v, %v; want false, nil", busy, err)
	}
	// A symlink is not followed, and a missing file is an error of the file,
	// not "unsupported".
	link := p + ".lnk"
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{link, p + ".missing"} {
		if _, err := probe.HasWriter(q); err == nil || errors.Is(err, errProbeUnsupported) {
			t.Errorf("HasWriter(%s) err = %v; want a file error", q, err)
		}
	}
}

// A render written in chunks with the descriptor held open, pausing longer
// than StableAfter: only the lease probe keeps it from being Ready early.
func TestSlowWriterHeldBackByProbe(t *testing.T) {
	requireLeases(t)
	h := newHarness(t, opts{stable: 300 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)

	p := filepath.Join(h.root, "export.mov")
	fd, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	pauses := []time.Duration{150, 150, 800, 150, 150} // ms; 800 > StableAfter
	total := 0
	for _, pause := range pauses {
		if _, err := fd.Write(chunk); err != nil {
			t.Fatal(err)
		}
		total += len(chunk)
		time.Sleep(pause * time.Millisecond) // the writer's own pace, part of the scenario
	}
	closedAt := time.Now()
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}

	r := h.waitKind(Ready, "export.mov", 10*time.Second)
	if r.at.Before(closedAt) {
		t.Errorf("Ready at %v, before the writer closed at %v", r.at, closedAt)
	}
	if r.Info.Size != int64(total) {
		t.Errorf("Ready size = %d, want %d", r.Info.Size, total)
	}
	h.sentinel("zz.mp4")
	if n := h.count(Ready, "export.mov"); n != 1 {
		t.Errorf("Ready count = %d, want 1", n)
	}
	if s := h.w.Stats(); s.ProbeBusy == 0 || s.ProbeFallbacks != 0 {
		t.Errorf("stats = %+v; want ProbeBusy > 0 (the probe held it back) and no fallbacks", s)
	}
}

func TestTempThenRenameAndJunkNames(t *testing.T) {
	h := newHarness(t, opts{stable: 200 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)
	root := h.root

	junk := []string{"._clip.mp4", ".DS_Store", "Thumbs.db", "THUMBS.DB", "desktop.ini", "x.part",
		"~$doc.mp4", "clip.mp4~", ".~lock.clip.mp4#", "dl.mp4.crdownload", "notes.txt"}
	for _, j := range junk {
		writeFile(t, filepath.Join(root, j), 10)
	}
	writeFile(t, filepath.Join(root, ".clip.tmp"), 1000)
	if err := os.Rename(filepath.Join(root, ".clip.tmp"), filepath.Join(root, "clip.mp4")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "second.part"), 2000)
	if err := os.Rename(filepath.Join(root, "second.part"), filepath.Join(root, "second.mp4")); err != nil {
		t.Fatal(err)
	}
	if r := h.waitKind(Ready, "clip.mp4", 5*time.Second); r.Info.Size != 1000 {
		t.Errorf("clip.mp4 size = %d, want 1000", r.Info.Size)
	}
	h.waitKind(Ready, "second.mp4", 5*time.Second)
	h.sentinel("zz.mp4")
	h.rescan()

	h.onlyFor("clip.mp4", "second.mp4", "zz.mp4")
	for _, rel := range []string{"clip.mp4", "second.mp4"} {
		if n := h.count(Ready, rel); n != 1 {
			t.Errorf("%s: %d Ready events, want 1", rel, n)
		}
	}
}

func TestNewSubdirectories(t *testing.T) {
	h := newHarness(t, opts{stable: 200 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)
	root, outside := h.root, t.TempDir()
	const d = 5 * time.Second

	// A tree prepared elsewhere and moved in: all its files were there
	// before any watch could be.
	writeFile(t, filepath.Join(outside, "incoming", "a.mp4"), 10)
	writeFile(t, filepath.Join(outside, "incoming", "deep", "b.mp4"), 20)
	if err := os.Rename(filepath.Join(outside, "incoming"), filepath.Join(root, "incoming")); err != nil {
		t.Fatal(err)
	}
	h.waitKind(Ready, "incoming/a.mp4", d)
	h.waitKind(Ready, "incoming/deep/b.mp4", d)

	// mkdir -p and write at once.
	if err := os.MkdirAll(filepath.Join(root, "fast", "x", "y"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "fast", "x", "y", "c.mp4"), 30)
	writeFile(t, filepath.Join(root, "fast", "d.mp4"), 40)
	h.waitKind(Ready, "fast/x/y/c.mp4", d)
	h.waitKind(Ready, "fast/d.mp4", d)

	// Renamed within the tree: the files are new paths, and the moved
	// watches must report under the new names.
	if err := os.Rename(filepath.Join(root, "incoming"), filepath.Join(root, "renamed")); err != nil {
		t.Fatal(err)
	}
	h.waitKind(Ready, "renamed/a.mp4", d)
	h.waitKind(Ready, "renamed/deep/b.mp4", d)
	writeFile(t, filepath.Join(root, "renamed", "deep", "e.mp4"), 50) // no rescan configured: only a watch sees it
	h.waitKind(Ready, "renamed/deep/e.mp4", d)

	// Moved out: its watches go, nothing written there is reported.
	if err := os.Rename(filepath.Join(root, "renamed"), filepath.Join(outside, "gone")); err != nil {
		t.Fatal(err)
	}
	h.sentinel("zz1.mp4")
	writeFile(t, filepath.Join(outside, "gone", "deep", "f.mp4"), 60)
	h.sentinel("zz2.mp4")
	for _, e := range h.events() {
		if strings.Contains(e.RelPath, "f.mp4") || strings.HasPrefix(e.RelPath, "..") {
			t.Errorf("event for a file outside the folder: %s %s", e.Kind, e.RelPath)
		}
	}
	for _, p := range h.w.fsn.Load().WatchList() {
		if !under(p, root) {
			t.Errorf("still watching %s outside the folder", p)
		}
	}
	if n := h.count(Ready, "incoming/a.mp4"); n != 1 {
		t.Errorf("incoming/a.mp4 Ready %d times, want 1", n)
	}
}

func TestSkipAndHiddenDirsNeverReport(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "processed", "p1.mp4"), 10)
	writeFile(t, filepath.Join(root, ".hidden", "h1.mp4"), 10)
	writeFile(t, filepath.Join(root, "sub", ".cache", "deep", "h2.mp4"), 10)
	h := newHarness(t, opts{root: root, stable: 100 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)

	writeFile(t, filepath.Join(root, "failed", "q.mp4"), 10) // Skip dir created after start
	writeFile(t, filepath.Join(root, "processed", "p2.mp4"), 10)
	writeFile(t, filepath.Join(root, ".new", "h3.mp4"), 10)
	writeFile(t, filepath.Join(root, ".hidden", "h4.mp4"), 10)
	h.sentinel("zz.mp4")
	h.rescan()
	h.onlyFor("zz.mp4")

	want := map[string]bool{root: true, filepath.Join(root, "sub"): true}
	got := h.w.fsn.Load().WatchList()
	for _, p := range got {
		if !want[p] {
			t.Errorf("watching %s", p)
		}
	}
	if len(got) != len(want) || h.w.Stats().WatchedDirs != len(want) {
		t.Errorf("watching %v (stats %d), want %d dirs", got, h.w.Stats().WatchedDirs, len(want))
	}
}

func TestVanishedBeforeStable(t *testing.T) {
	h := newHarness(t, opts{stable: 3 * time.Second}).start()
	h.waitScans(1, 5*time.Second)
	outside := t.TempDir()

	tests := []struct {
		name   string
		remove func(p string) error
	}{
		{"deleted", os.Remove},
		{"renamed away", func(p string) error { return os.Rename(p, filepath.Join(outside, filepath.Base(p))) }},
		{"dir deleted", func(p string) error { return os.RemoveAll(filepath.Dir(p)) }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel := fmt.Sprintf("d%d/v%d.mp4", i, i)
			p := filepath.Join(h.root, rel)
			writeFile(t, p, 10)
			h.waitKind(Seen, rel, 5*time.Second)
			if err := tt.remove(p); err != nil {
				t.Fatal(err)
			}
			v := h.waitKind(Vanished, rel, 5*time.Second)
			if v.Path != p || v.Folder != "news" {
				t.Errorf("Vanished %+v, want path %s in folder news", v.Event, p)
			}
			if n := h.count(Ready, rel); n != 0 {
				t.Errorf("%d Ready events for a vanished file", n)
			}
		})
	}
}

func TestStartupScanFindsExistingFiles(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "one.MP4"), 11)
	writeFile(t, filepath.Join(root, "a", "b", "two.wav"), 22)
	writeFile(t, filepath.Join(root, "empty.mov"), 0)
	// No fsnotify at all: only the start-up scan can find them.
	h := newHarness(t, opts{root: root, noNotify: true}).start()
	for rel, size := range map[string]int64{"one.MP4": 11, "a/b/two.wav": 22, "empty.mov": 0} {
		if r := h.waitKind(Ready, rel, 5*time.Second); r.Info.Size != size || r.Info.Inode == 0 {
			t.Errorf("%s: Ready info %+v, want size %d and an inode", rel, r.Info, size)
		}
	}
	for _, e := range h.events() {
		if e.Kind == Ready && !strings.HasPrefix(e.Path, root+"/") {
			t.Errorf("absolute path %q not below %q", e.Path, root)
		}
	}
	if n := h.w.Stats().WatchedDirs; n != 0 {
		t.Errorf("WatchedDirs = %d with fsnotify off", n)
	}
}

// Writes on an NFS/SMB client are invisible to inotify on the server: the
// rescan must find new files and notice that pending ones grew.
func TestPeriodicRescanWithoutEvents(t *testing.T) {
	h := newHarness(t, opts{noNotify: true, stable: time.Second, rescan: 100 * time.Millisecond}).start()
	h.waitScans(1, 5*time.Second)

	p := filepath.Join(h.root, "net", "late.mxf")
	writeFile(t, p, 100)
	h.waitKind(Seen, "net/late.mxf", 5*time.Second)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.waitKind(Ready, "net/late.mxf", 5*time.Second)
	if r.Info.Size != 150 {
		t.Errorf("Ready size = %d, want 150 (the grown file)", r.Info.Size)
	}
	if h.w.Stats().Scans < 2 {
		t.Errorf("only %d scans: the file cannot have come from a rescan", h.w.Stats().Scans)
	}
}

func TestMissingRootAppearsLater(t *testing.T) {
	root := filepath.Join(t.TempDir(), "share")
	h := newHarness(t, opts{root: root, rescan: 100 * time.Millisecond}).start()
	h.waitScans(2, 5*time.Second)
	writeFile(t, filepath.Join(root, "a.mp4"), 10)
	h.waitKind(Ready, "a.mp4", 5*time.Second)
	writeFile(t, filepath.Join(root, "b.mp4"), 10) // watched by now, or next rescan
	h.waitKind(Ready, "b.mp4", 5*time.Second)
	if n := h.logs.count("folder root unavailable"); n != 1 {
		t.Errorf("root-unavailable logged %d times, want once", n)
	}
	if n := h.logs.count("folder root available again"); n != 1 {
		t.Errorf("root-available logged %d times, want once", n)
	}
}

func TestVersionChangeAfterReady(t *testing.T) {
	h := newHarness(t, opts{stable: 200 * time.Millisecond, rescan: 100 * time.Millisecond}).start()
	p := filepath.Join(h.root, "v.mp4")
	writeFile(t, p, 100)
	first := h.waitKind(Ready, "v.mp4", 5*time.Second)

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	second := h.waitNth(Ready, "v.mp4", 2, 5*time.Second)
	if second.Info.Size != 150 || first.Info.Size != 100 {
		t.Errorf("Ready sizes %d then %d, want 100 then 150", first.Info.Size, second.Info.Size)
	}
	h.waitScans(h.w.Stats().Scans+3, 5*time.Second) // three more rescans must not repeat it

	var kinds []string
	for _, e := range h.events() {
		if e.RelPath == "v.mp4" {
			kinds = append(kinds, e.Kind.String())
		}
	}
	if got, want := strings.Join(kinds, ","), "seen,ready,seen,ready"; got != want {
		t.Errorf("events for v.mp4 = %s, want %s", got, want)
	}
}

func TestForgetReportsAgain(t *testing.T) {
	h := newHarness(t, opts{stable: 100 * time.Millisecond}).start()
	p := filepath.Join(h.root, "f.mp4")
	writeFile(t, p, 10)
	first := h.waitKind(Ready, "f.mp4", 5*time.Second)
	h.w.Forget(p)
	second := h.waitNth(Ready, "f.mp4", 2, 5*time.Second)
	if !second.Info.same(first.Info) {
		t.Errorf("after Forget: %+v, want the same version %+v", second.Info, first.Info)
	}
	if n := h.count(Seen, "f.mp4"); n != 2 {
		t.Errorf("Seen %d times, want 2", n)
	}
}

// 10,000 files in one directory, StableAfter 0: found by the start-up scan
// when they are there first, and through fsnotify when written while
// running; the watcher must keep up with the writer.
func TestManyFilesInOneDirectory(t *testing.T) {
	const n = 10000
	write := func(dir string) time.Duration {
		begin := time.Now()
		for i := range n {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d.mp4", i)), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(begin)
	}
	tests := []struct {
		name   string
		before bool // written before Run: the start-up scan finds them
	}{
		{"start-up scan", true},
		{"events", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "many")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			var wrote time.Duration
			if tt.before {
				write(dir)
			}
			h := newHarness(t, opts{root: root}).start()
			begin := time.Now()
			if !tt.before {
				h.waitScans(1, 5*time.Second)
				begin = time.Now()
				wrote = write(dir)
			}
			deadline := time.After(30 * time.Second)
			ready := map[string]int{}
			for seen := 0; len(ready) < n; {
				h.mu.Lock()
				fresh := h.evs[seen:]
				seen = len(h.evs)
				h.mu.Unlock()
				for _, e := range fresh {
					if e.Kind == Ready {
						ready[e.RelPath]++
					}
				}
				if len(ready) == n {
					break
				}
				select {
				case <-h.changed:
				case <-deadline:
					t.Fatalf("only %d of %d files Ready", len(ready), n)
				}
			}
			took := time.Since(begin)
			for rel, c := range ready {
				if c != 1 {
					t.Errorf("%s Ready %d times", rel, c)
				}
			}
			// Measured from Run (scan) or from the first write (events):
			// the watcher may lag the writer by a few seconds; the bound
			// catches a stall (waiting for a rescan), not a busy machine.
			if took > wrote+20*time.Second {
				t.Errorf("all Ready after %v (writing took %v)", took, wrote)
			}
			t.Logf("writing took %v, all Ready after %v (stats %+v)", wrote, took, h.w.Stats())
		})
	}
}

// fakeProbe answers from a script: busy for the first busyFor calls per
// path, then err (nil: no writer).
type fakeProbe struct {
	mu      sync.Mutex
	calls   map[string]int
	busyFor int
	err     error
}

func (p *fakeProbe) HasWriter(path string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[path]++
	if p.calls[path] <= p.busyFor {
		return true, nil
	}
	return false, p.err
}

func TestProbeOutcomes(t *testing.T) {
	tests := []struct {
		name          string
		probe         *fakeProbe
		wantBusy      int64
		wantFallbacks int64
		wantWarnings  int
	}{
		{"no writer", &fakeProbe{}, 0, 0, 0},
		{"writer twice", &fakeProbe{busyFor: 2}, 4, 0, 0},
		{"unsupported", &fakeProbe{err: fmt.Errorf("%w: F_SETLEASE: EINVAL", errProbeUnsupported)}, 0, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.probe.calls = map[string]int{}
			h := newHarness(t, opts{probe: tt.probe, stable: 100 * time.Millisecond}).start()
			h.waitScans(1, 5*time.Second)
			writeFile(t, filepath.Join(h.root, "a.mp4"), 1)
			writeFile(t, filepath.Join(h.root, "b.mp4"), 1)
			h.waitKind(Ready, "a.mp4", 10*time.Second)
			h.waitKind(Ready, "b.mp4", 10*time.Second)
			s := h.w.Stats()
			if s.ProbeBusy != tt.wantBusy || s.ProbeFallbacks != tt.wantFallbacks {
				t.Errorf("stats %+v; want ProbeBusy %d, ProbeFallbacks %d", s, tt.wantBusy, tt.wantFallbacks)
			}
			if n := h.logs.count("level=WARN", "cannot check for local writers", "EINVAL"); n != tt.wantWarnings {
				t.Errorf("fallback warning logged %d times, want %d", n, tt.wantWarnings)
			}
		})
	}
}

func TestRunStopsWithStuckConsumer(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.mp4"), 1)
	writeFile(t, filepath.Join(root, "b.mp4"), 1)
	h := newHarness(t, opts{root: root})
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx, out) }()
	<-out // the loop is running; the next send blocks: nobody reads any more
	if err := h.w.Run(ctx, out); err == nil {
		t.Error("second Run succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run blocked on a consumer that stopped reading")
	}
	if h.w.Stats().WatchedDirs != 0 {
		t.Error("fsnotify still open after Run returned")
	}
}

func TestNewValidates(t *testing.T) {
	abs := t.TempDir()
	tests := []struct {
		name    string
		folders []Folder
		wantErr string // "" for success
	}{
		{"ok", []Folder{{Name: "a", Path: abs}}, ""},
		{"no folders", nil, "no folders"},
		{"relative path", []Folder{{Name: "a", Path: "srv/watch"}}, `"srv/watch" is not absolute`},
		{"relative skip", []Folder{{Name: "a", Path: abs, Skip: []string{"processed"}}}, "skip directory"},
		{"bad include", []Folder{{Name: "a", Path: abs, Include: []string{"[mp4"}}}, `include: pattern "[mp4"`},
		{"bad exclude", []Folder{{Name: "a", Path: abs, Exclude: []string{"raw/[x"}}}, `exclude: pattern "raw/[x"`},
		{"negative", []Folder{{Name: "a", Path: abs, StableAfter: -time.Second}}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Options{Folders: tt.folders})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNestedFolderBelongsToInner(t *testing.T) {
	outer := t.TempDir()
	inner := filepath.Join(outer, "inner")
	w, err := New(Options{Folders: []Folder{{Name: "outer", Path: outer}, {Name: "inner", Path: inner}}})
	if err != nil {
		t.Fatal(err)
	}
	if !w.folders[0].m.skipped(filepath.Join(inner, "x")) || w.folders[1].m.skipped(filepath.Join(inner, "x")) {
		t.Error("inner folder's tree should be skipped by the outer folder only")
	}
}

func TestStatsWatchedDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b", "c", "processed/x", ".git/objects"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, opts{root: root}).start()
	h.waitScans(1, 5*time.Second)
	if got := h.w.Stats().WatchedDirs; got != 4 { // root, a, a/b, c
		t.Errorf("WatchedDirs = %d, want 4", got)
	}
	if err := os.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	h.waitCond("watches of a removed tree dropped", 5*time.Second, func() bool { return h.w.Stats().WatchedDirs == 2 })
}
