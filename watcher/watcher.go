// Package watcher finds files in watched folders and decides when each one is
// finished: quiet for StableAfter and not open for writing on this host. It
// emits events; it knows nothing of S3 or the job store.
//
// One goroutine (the loop in Run) owns all per-file state. fsnotify events,
// scan results (scans run in their own goroutines, one at a time per
// folder), timer expirations and requests from other goroutines (Rescan,
// Forget) are funnelled into it. Timers are a single time.Timer over a heap
// of deadlines, so thousands of pending files cost no goroutines and the
// only periodic work is the rescan and the re-check of pending files.
package watcher

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// EventKind says what happened to a file.
type EventKind int

const (
	Seen     EventKind = iota + 1 // first noticed (or changed after Ready), not stable yet
	Ready                         // stable and no local writer: hand it to the pipeline
	Vanished                      // a Seen file disappeared before it was Ready
)

func (k EventKind) String() string {
	switch k {
	case Seen:
		return "seen"
	case Ready:
		return "ready"
	case Vanished:
		return "vanished"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// FileInfo pins one version of a file.
type FileInfo struct {
	Size    int64
	ModTime time.Time
	Inode   uint64
	Device  uint64
}

func (a FileInfo) same(b FileInfo) bool {
	return a.Size == b.Size && a.ModTime.Equal(b.ModTime) && a.Inode == b.Inode && a.Device == b.Device
}

// Event is emitted on the channel passed to Run.
type Event struct {
	Kind    EventKind
	Folder  string // folder name
	Path    string // absolute path
	RelPath string // slash-separated, below the folder root
	Info    FileInfo
}

// Folder is one watched tree.
type Folder struct {
	Name           string
	Path           string   // absolute root
	Skip           []string // absolute directories never watched (processed_dir, failed_dir)
	Include        []string // globs on the base name; empty: DefaultInclude
	Exclude        []string // globs on the base name, added to the built-in excludes
	StableAfter    time.Duration
	RescanInterval time.Duration
	// Sidecars: "<stem>.json" files are the metadata of a media file
	// beside them and are never reported themselves.
	Sidecars bool
}

// Options for New.
type Options struct {
	Folders []Folder
	Logger  *slog.Logger
}

// Stats are counters for metrics; safe for concurrent use.
type Stats struct {
	WatchedDirs    int   // directories with an fsnotify watch now
	Scans          int64 // full scans of a folder completed (start-up, periodic, overflow, Rescan)
	Overflows      int64 // fsnotify queue overflows (each triggers a full rescan)
	ProbeFallbacks int64 // files found stable without a writer probe (probe unsupported there)
	ProbeBusy      int64 // probes that found a local writer and held a file back
	WatchErrors    int64 // directories that could not be watched (e.g. inotify watch limit)
}

const (
	// A file held back by a writer is probed again with a backoff: closing
	// a file changes neither size nor mtime and fsnotify gives us no close
	// event, so the retry delay is the delay between the writer closing and
	// Ready. It starts at StableAfter (at least firstProbeRetry: copies and
	// saves usually close within moments of their last write) and doubles
	// up to StableAfter clamped to [minProbeRetry, maxProbeRetry]: a file a
	// recorder holds open for hours costs at most one cheap probe a second,
	// and a long StableAfter does not add minutes of latency after the file
	// has already been quiet that long. Any change resets the backoff.
	firstProbeRetry = 50 * time.Millisecond
	minProbeRetry   = time.Second
	maxProbeRetry   = 10 * time.Second
	// rootRetry is how often a missing folder root is looked for when the
	// folder has no RescanInterval (a share that mounts late).
	rootRetry = time.Minute
	// scanBatch is how many files a scan sends to the loop at once.
	scanBatch = 256
	// dueBatch caps deadline checks per loop turn so events stay responsive
	// when thousands of files fall due together.
	dueBatch = 512
	// maxOnceKeys bounds the memory of "log this once" keys.
	maxOnceKeys = 10000
	// rescanShare is the share of wall time a folder's periodic rescan may
	// take while inotify is trusted: the interval grows to this many times
	// the last full scan's duration (RescanInterval is the minimum).
	rescanShare = 100
	// maxRescanEvery caps that growth: a safety net still runs hourly.
	maxRescanEvery = time.Hour
)

// Watcher watches folders.
type Watcher struct {
	log     *slog.Logger
	folders []*folder
	probe   writerProbe

	rescanReq chan struct{} // buffered 1: Rescan never blocks
	forgetReq chan struct{} // buffered 1: wakes the loop for forgetSet
	forgetMu  sync.Mutex
	forgetSet map[string]struct{}

	running atomic.Bool
	fsn     atomic.Pointer[fsnotify.Watcher]

	scans, overflows, probeFallbacks, probeBusy, watchErrors atomic.Int64

	onceMu   sync.Mutex
	onceKeys map[string]struct{}
}

// folder is a Folder plus what the watcher keeps about it.
type folder struct {
	Folder
	m matcher
	// notify false turns fsnotify off for this folder; only scans see it
	// (what happens on an NFS/SMB client mount). Tests use it.
	notify bool

	// Owned by the loop goroutine.
	queue    []scanReq
	scanning bool
	scanned  bool         // the first full scan has completed: Ready may be emitted
	deferred []*fileState // due before the first scan completed
	rescanAt time.Time    // next periodic rescan
	// overflowsSeen is the overflow count when the last full scan ended;
	// an overflow since then keeps the interval at RescanInterval.
	overflowsSeen int64

	// every is the periodic rescan interval in force (ns): RescanInterval,
	// stretched while inotify is trusted (see adaptRescan).
	every atomic.Int64
	// watchErrs counts directories of this folder that could not be
	// watched; scans compare it before and after.
	watchErrs atomic.Int64

	// Owned by the (single, sequential) scan goroutine of this folder.
	rootErr string
}

// New validates opts and returns a watcher; Run starts it.
func New(opts Options) (*Watcher, error) {
	if len(opts.Folders) == 0 {
		return nil, errors.New("watcher: no folders")
	}
	w := &Watcher{
		log:       opts.Logger,
		probe:     leaseProbe{},
		rescanReq: make(chan struct{}, 1),
		forgetReq: make(chan struct{}, 1),
		forgetSet: map[string]struct{}{},
		onceKeys:  map[string]struct{}{},
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	for _, f := range opts.Folders {
		if !filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("watcher: folder %q: path %q is not absolute", f.Name, f.Path)
		}
		if f.StableAfter < 0 || f.RescanInterval < 0 {
			return nil, fmt.Errorf("watcher: folder %q (%s): negative stable_after or rescan_interval", f.Name, f.Path)
		}
		f.Path = filepath.Clean(f.Path)
		f.Skip = append([]string(nil), f.Skip...)
		for i, s := range f.Skip {
			if s != "" && !filepath.IsAbs(s) {
				return nil, fmt.Errorf("watcher: folder %q: skip directory %q is not absolute", f.Name, s)
			}
			f.Skip[i] = filepath.Clean(s)
		}
		// A folder nested inside another belongs to the inner one only.
		for _, o := range opts.Folders {
			if op := filepath.Clean(o.Path); op != f.Path && under(op, f.Path) {
				f.Skip = append(f.Skip, op)
			}
		}
		m, err := newMatcher(f)
		if err != nil {
			return nil, fmt.Errorf("watcher: folder %q (%s): %w", f.Name, f.Path, err)
		}
		w.folders = append(w.folders, &folder{Folder: f, m: m, notify: true})
	}
	return w, nil
}

// rescanEvery is folder i's periodic rescan interval in force.
func (w *Watcher) rescanEvery(i int) time.Duration { return time.Duration(w.folders[i].every.Load()) }

// Stats returns the current counters.
func (w *Watcher) Stats() Stats {
	s := Stats{
		Scans:          w.scans.Load(),
		Overflows:      w.overflows.Load(),
		ProbeFallbacks: w.probeFallbacks.Load(),
		ProbeBusy:      w.probeBusy.Load(),
		WatchErrors:    w.watchErrors.Load(),
	}
	if fsn := w.fsn.Load(); fsn != nil {
		s.WatchedDirs = len(fsn.WatchList())
	}
	return s
}

// Rescan asks for an immediate full scan of every folder. It never blocks;
// requests made while one is pending are merged.
func (w *Watcher) Rescan() {
	select {
	case w.rescanReq <- struct{}{}:
	default:
	}
}

// Forget drops what the watcher remembers about path, so its current
// version is reported again (Seen, then Ready once stable) even if that
// version was Ready before. The daemon calls it when a queued file turned
// out to have changed. It never blocks.
func (w *Watcher) Forget(path string) {
	w.forgetMu.Lock()
	w.forgetSet[filepath.Clean(path)] = struct{}{}
	w.forgetMu.Unlock()
	select {
	case w.forgetReq <- struct{}{}:
	default:
	}
}

// logOnce logs msg the first time key is seen, so a permanent condition
// (a symlink, an unreadable directory, a folder without lease support)
// does not fill the journal at every rescan.
func (w *Watcher) logOnce(key string, level slog.Level, msg string, args ...any) {
	w.onceMu.Lock()
	_, seen := w.onceKeys[key]
	full := len(w.onceKeys) >= maxOnceKeys
	if !seen && !full {
		w.onceKeys[key] = struct{}{}
	}
	w.onceMu.Unlock()
	if !seen && !full {
		w.log.Log(context.Background(), level, msg, args...)
	}
}

// Run watches until ctx is done, sending events to out. It closes nothing
// it was given; it returns nil when ctx is cancelled (also while blocked on
// a full out). Each folder is scanned at once; no file of a folder is Ready
// before that first scan has completed. A missing folder root is logged and
// looked for again at every rescan (a share that mounts late). Run may be
// called only once.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watcher: Run called twice")
	}
	l := &loop{
		w:      w,
		out:    out,
		files:  map[string]*fileState{},
		goneAt: map[string]uint64{},
		scanCh: make(chan scanMsg),
		timer:  time.NewTimer(time.Hour),
	}
	l.timer.Stop()

	fsn, err := fsnotify.NewWatcher()
	if err != nil {
		// Survive (e.g. inotify instance limit reached): scans still find
		// everything, only later.
		w.log.Error("cannot start fsnotify; relying on periodic rescans only (raise fs.inotify.max_user_instances?)", "err", err)
	} else {
		w.fsn.Store(fsn)
		l.events, l.errs = fsn.Events, fsn.Errors
	}

	scanCtx, cancelScans := context.WithCancel(ctx)
	defer func() {
		cancelScans()
		l.scanners.Wait() // no scan goroutine may outlive Run or touch the closed fsnotify
		if fsn != nil {
			w.fsn.Store(nil)
			if err := fsn.Close(); err != nil {
				w.log.Warn("close fsnotify", "err", err)
			}
		}
	}()
	l.ctx = scanCtx

	for _, f := range w.folders {
		// Each full scan schedules the next periodic one when it ends.
		f.every.Store(int64(f.RescanInterval))
		l.requestScan(f, scanReq{dir: f.Path, full: true})
	}
	l.run(ctx)
	return nil
}

// fileState is what the loop knows about one candidate file.
type fileState struct {
	f       *folder
	path    string
	rel     string
	info    FileInfo  // last observed version
	changed time.Time // when info last changed, as observed by us
	ready   bool      // info was emitted as Ready

	busyDelay time.Duration // next writer-probe retry delay; 0 after a change

	seq      uint64    // id of the live heap entry; older entries are stale
	queued   bool      // a live heap entry exists
	queuedAt time.Time // its deadline
	touched  uint64    // loop tick of the last observation outside a scan
	seenGen  uint64    // generation of the last scan that listed it
}

type loop struct {
	w      *Watcher
	ctx    context.Context // cancelled when Run returns: scans stop
	out    chan<- Event
	events <-chan fsnotify.Event
	errs   <-chan error

	files map[string]*fileState
	// goneAt records, for paths removed while a scan may be running, the
	// tick of the removal: a scan that started earlier may report them as
	// present, and its word is not taken for them.
	goneAt map[string]uint64
	tick   uint64 // counts observations made outside scans (see stamp)
	seq    uint64
	gen    uint64

	due   dueHeap
	timer *time.Timer

	scanCh   chan scanMsg
	scanners sync.WaitGroup
}

func (l *loop) run(ctx context.Context) {
	for {
		if ctx.Err() != nil {
			return
		}
		l.runDue(ctx)
		l.armTimer()
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-l.events:
			if !ok {
				l.events = nil
				continue
			}
			l.onNotify(ctx, ev)
		case err, ok := <-l.errs:
			if !ok {
				l.errs = nil
				continue
			}
			l.onNotifyError(err)
		case m := <-l.scanCh:
			l.onScan(ctx, m)
		case <-l.timer.C:
		case <-l.w.rescanReq:
			l.rescanAll("requested")
		case <-l.w.forgetReq:
			l.onForget(ctx)
		}
	}
}

// emit sends ev unless ctx is done first, so a stuck consumer cannot keep
// Run from returning.
func (l *loop) emit(ctx context.Context, kind EventKind, st *fileState) {
	ev := Event{Kind: kind, Folder: st.f.Name, Path: st.path, RelPath: st.rel, Info: st.info}
	l.w.log.Debug("file "+kind.String(), "folder", st.f.Name, "path", st.path, "size", st.info.Size)
	select {
	case l.out <- ev:
	case <-ctx.Done():
	}
}

// --- deadlines ---

type dueEntry struct {
	at     time.Time
	path   string  // file deadline, or
	rescan *folder // periodic rescan
	seq    uint64
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// schedule makes sure st is checked at or before at. An earlier live entry
// is kept: when it fires the check reschedules for the real deadline, so a
// busy writer's stream of changes does not flood the heap.
func (l *loop) schedule(st *fileState, at time.Time) {
	if st.queued && !st.queuedAt.After(at) {
		return
	}
	l.seq++
	st.seq, st.queued, st.queuedAt = l.seq, true, at
	heap.Push(&l.due, dueEntry{at: at, path: st.path, seq: st.seq})
}

func (l *loop) unschedule(st *fileState) {
	l.seq++
	st.seq, st.queued = l.seq, false
}

func (l *loop) scheduleRescan(f *folder, at time.Time) {
	f.rescanAt = at
	heap.Push(&l.due, dueEntry{at: at, rescan: f})
}

func (l *loop) armTimer() {
	if len(l.due) == 0 {
		l.timer.Stop()
		return
	}
	l.timer.Reset(max(time.Until(l.due[0].at), 0))
}

func (l *loop) runDue(ctx context.Context) {
	now := time.Now()
	for n := 0; n < dueBatch && len(l.due) > 0 && !l.due[0].at.After(now); n++ {
		if ctx.Err() != nil {
			return
		}
		e := heap.Pop(&l.due).(dueEntry)
		if f := e.rescan; f != nil {
			if !e.at.Equal(f.rescanAt) {
				continue // superseded
			}
			l.requestScan(f, scanReq{dir: f.Path, full: true}) // schedules the next when done
			continue
		}
		st := l.files[e.path]
		if st == nil || st.seq != e.seq {
			continue
		}
		st.queued = false
		l.check(ctx, st)
	}
}

// probeRetry returns the delay before probing st again and advances its
// backoff.
func probeRetry(st *fileState) time.Duration {
	limit := min(max(st.f.StableAfter, minProbeRetry), maxProbeRetry)
	d := st.busyDelay
	if d == 0 {
		d = max(st.f.StableAfter, firstProbeRetry)
	}
	d = min(d, limit)
	st.busyDelay = min(2*d, limit)
	return d
}

// check decides, at a deadline, whether st is finished.
func (l *loop) check(ctx context.Context, st *fileState) {
	fi, err := os.Lstat(st.path)
	if err != nil || !fi.Mode().IsRegular() {
		l.lost(ctx, st, err)
		return
	}
	l.stamp(st)
	now := time.Now()
	if cur := infoOf(fi); !cur.same(st.info) {
		l.observe(ctx, st.f, st.path, cur, now)
		return
	}
	f := st.f
	if at := st.changed.Add(f.StableAfter); now.Before(at) {
		l.schedule(st, at)
		return
	}
	if !f.scanned {
		// Nothing is Ready before the folder's start-up scan has been
		// seen through, so the daemon has the full picture first.
		f.deferred = append(f.deferred, st)
		return
	}
	busy, err := l.w.probe.HasWriter(st.path)
	switch {
	case err == nil && busy:
		l.w.probeBusy.Add(1)
		l.schedule(st, now.Add(probeRetry(st)))
		return
	case err == nil:
	case errors.Is(err, errProbeUnsupported):
		l.w.probeFallbacks.Add(1)
		l.w.logOnce("probe:"+f.Name, slog.LevelWarn,
			"cannot check for local writers; a file is ready once quiet for stable_after alone",
			"folder", f.Name, "reason", err)
	default:
		// The file changed under the probe (removed, replaced by a
		// symlink) or the open failed for another reason: look again.
		if fi, serr := os.Lstat(st.path); serr != nil || !fi.Mode().IsRegular() {
			l.lost(ctx, st, serr)
			return
		}
		l.w.log.Warn("writer probe failed; will retry", "path", st.path, "err", err)
		l.schedule(st, now.Add(probeRetry(st)))
		return
	}
	// The probe opened the file; make sure the version we judged is still
	// the one on disk before calling it Ready.
	fi, err = os.Lstat(st.path)
	if err != nil || !fi.Mode().IsRegular() {
		l.lost(ctx, st, err)
		return
	}
	if cur := infoOf(fi); !cur.same(st.info) {
		l.observe(ctx, f, st.path, cur, time.Now())
		return
	}
	st.ready = true
	l.unschedule(st)
	l.emit(ctx, Ready, st)
}

// --- observations ---

// observe records that path (a regular, matching file) has version info.
func (l *loop) observe(ctx context.Context, f *folder, path string, info FileInfo, now time.Time) *fileState {
	st := l.files[path]
	if st == nil {
		st = &fileState{f: f, path: path, rel: relOf(f, path), info: info, changed: now}
		l.files[path] = st
		l.emit(ctx, Seen, st)
		l.schedule(st, now.Add(f.StableAfter))
		return st
	}
	if st.info.same(info) {
		return st
	}
	st.info, st.changed, st.busyDelay = info, now, 0
	if st.ready {
		st.ready = false
		l.emit(ctx, Seen, st)
	}
	l.schedule(st, now.Add(f.StableAfter))
	return st
}

// settle checks st at once when its deadline has already come (StableAfter
// 0, or a file quiet for long enough when a scan lists it), instead of at
// the loop's next turn. The result is the same check, but the Ready follows
// its Seen directly: a scan batch otherwise emits 256 Seen events and only
// then their 256 Ready events, and a consumer that takes events in batches
// (the daemon commits each batch in one transaction) finds most Ready events
// in a later batch than their Seen, where each one costs a commit of its own
// (a burst of 2,000 files took ~4 s to queue that way instead of ~0.2 s).
// Only callers outside check use it, so a file that keeps changing under
// check is rescheduled, never re-checked recursively.
func (l *loop) settle(ctx context.Context, st *fileState) {
	if !st.queued || !st.f.scanned || l.files[st.path] != st || st.queuedAt.After(time.Now()) {
		return
	}
	l.unschedule(st) // its heap entry goes stale; check reschedules if need be
	l.check(ctx, st)
}

// lost handles a tracked file that is no longer a regular file at its path.
// err is the Lstat error, nil when something else now has the name.
func (l *loop) lost(ctx context.Context, st *fileState, err error) {
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		// EACCES, EIO...: we do not know that it is gone; look again later.
		l.w.log.Warn("cannot stat file; will retry", "path", st.path, "err", err)
		l.schedule(st, time.Now().Add(probeRetry(st)))
		return
	}
	delete(l.files, st.path)
	l.unschedule(st)
	if l.anyScanning() {
		l.tick++
		l.goneAt[st.path] = l.tick
	}
	if !st.ready {
		l.emit(ctx, Vanished, st)
	}
}

// recheck looks at a tracked file whose status is in doubt.
func (l *loop) recheck(ctx context.Context, st *fileState) {
	fi, err := os.Lstat(st.path)
	if err != nil || !fi.Mode().IsRegular() {
		l.lost(ctx, st, err)
		return
	}
	st = l.observe(ctx, st.f, st.path, infoOf(fi), time.Now())
	l.stamp(st)
	l.settle(ctx, st)
}

// stamp notes that st was just looked at outside a scan: a scan that
// started earlier carries an older stat for it, which must not win.
func (l *loop) stamp(st *fileState) {
	l.tick++
	st.touched = l.tick
}

func relOf(f *folder, path string) string {
	if r, ok := strings.CutPrefix(path, f.Path); ok && len(r) > 1 && r[0] == filepath.Separator && f.Path != string(filepath.Separator) {
		return filepath.ToSlash(r[1:]) // path is clean and below the root: the common case, cheaply
	}
	rel, err := filepath.Rel(f.Path, path)
	if err != nil {
		return filepath.ToSlash(path)
	}
	return filepath.ToSlash(rel)
}

// folderOf returns the folder whose root holds path (the innermost).
func (l *loop) folderOf(path string) *folder {
	var best *folder
	for _, f := range l.w.folders {
		if under(path, f.Path) && (best == nil || len(f.Path) > len(best.Path)) {
			best = f
		}
	}
	return best
}

// --- fsnotify ---

func (l *loop) onNotify(ctx context.Context, ev fsnotify.Event) {
	path := filepath.Clean(ev.Name)
	f := l.folderOf(path)
	if f == nil || !f.notify {
		return
	}
	l.tick++
	if path == f.Path {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			l.w.log.Error("folder root removed or renamed; looking for it again at each rescan", "folder", f.Name, "path", path)
			l.pathGone(ctx, f, path)
			// The scan notices when it is back (and, without a
			// RescanInterval, schedules its own retries).
			l.requestScan(f, scanReq{dir: f.Path, full: true})
		}
		return
	}
	rel := relOf(f, path)
	if hiddenComponent(rel) || f.m.skipped(path) {
		return
	}
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			l.pathGone(ctx, f, path)
		} else {
			l.w.log.Warn("cannot stat", "path", path, "err", err)
		}
		return
	}
	st := l.files[path]
	mode := fi.Mode()
	switch {
	case mode.IsDir():
		if st != nil {
			l.lost(ctx, st, nil)
		}
		if ev.Has(fsnotify.Create) {
			// Watch it now so nothing written from here on is missed, then
			// scan it: files (and subdirectories) may have landed before.
			l.w.watchDir(f, path)
			l.requestScan(f, scanReq{dir: path})
		}
	case mode.IsRegular():
		if !f.m.match(rel) {
			return
		}
		st = l.observe(ctx, f, path, infoOf(fi), time.Now())
		l.stamp(st)
		l.settle(ctx, st)
	default:
		if st != nil {
			l.lost(ctx, st, nil)
		}
		l.w.notCandidate(f, path, mode)
	}
}

// pathGone handles a name that no longer exists: a file, or a directory
// with watches and tracked files below it.
func (l *loop) pathGone(ctx context.Context, f *folder, path string) {
	if st := l.files[path]; st != nil {
		l.lost(ctx, st, fs.ErrNotExist)
		return
	}
	fsn := l.w.fsn.Load()
	if fsn == nil {
		return
	}
	// fsnotify keeps watches of a moved directory's subdirectories under
	// their old names, and a later Add under the new name would be folded
	// into them; drop them now (the new location gets its own Create).
	wasDir := false
	for _, p := range fsn.WatchList() {
		if under(p, path) {
			wasDir = true
			_ = fsn.Remove(p) // may already be gone with the directory
		}
	}
	if !wasDir {
		return
	}
	for p, st := range l.files {
		if under(p, path) {
			l.recheck(ctx, st)
		}
	}
}

func (l *loop) onNotifyError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		l.w.overflows.Add(1)
		l.w.log.Warn("fsnotify queue overflowed; rescanning all folders (raise fs.inotify.max_queued_events if frequent)")
		l.rescanAll("overflow")
		return
	}
	// The kernel may have dropped events: look at everything now.
	l.w.log.Warn("fsnotify error; rescanning all folders", "err", err)
	l.rescanAll("watch error")
}

func (l *loop) rescanAll(why string) {
	l.w.log.Debug("rescan", "reason", why)
	for _, f := range l.w.folders {
		l.requestScan(f, scanReq{dir: f.Path, full: true})
	}
}

func (l *loop) onForget(ctx context.Context) {
	l.w.forgetMu.Lock()
	paths := l.w.forgetSet
	l.w.forgetSet = map[string]struct{}{}
	l.w.forgetMu.Unlock()
	for p := range paths {
		st := l.files[p]
		if st == nil || !st.ready {
			continue // unknown or pending: it will be reported when stable anyway
		}
		delete(l.files, p)
		l.unschedule(st)
		l.recheck(ctx, st) // sees it as new: Seen now, Ready once stable
	}
}

func hiddenComponent(rel string) bool {
	for _, c := range strings.Split(rel, "/") {
		if strings.HasPrefix(c, ".") {
			return true
		}
	}
	return false
}

// notCandidate logs a non-regular entry: symlinks once at warn (an operator
// may expect them to be followed), the rest at debug.
func (w *Watcher) notCandidate(f *folder, path string, mode fs.FileMode) {
	if mode&fs.ModeSymlink != 0 {
		w.logOnce("symlink:"+path, slog.LevelWarn, "symlink not followed", "folder", f.Name, "path", path)
		return
	}
	w.log.Debug("not a regular file; ignored", "folder", f.Name, "path", path, "mode", mode.String())
}
