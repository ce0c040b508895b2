package watcher

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// scanReq asks for a walk of dir (the folder root when full).
type scanReq struct {
	dir  string
	full bool
}

// fileObs is one candidate file a scan found.
type fileObs struct {
	path string
	info FileInfo
}

// scanMsg carries a scan's findings to the loop, in batches.
type scanMsg struct {
	f       *folder
	req     scanReq
	gen     uint64 // this scan's generation
	start   uint64 // loop tick when the scan started
	files   []fileObs
	done    bool
	rootErr bool // full scan: the root is missing or not a directory

	began     time.Time // when the scan started
	watchErrs int64     // the folder's watch errors when it started
	remote    bool      // full scan: the root is on a network filesystem
}

// requestScan queues a scan of req for f; scans of one folder run one at a
// time, so a rescan never races with itself.
func (l *loop) requestScan(f *folder, req scanReq) {
	for _, q := range f.queue {
		if q.full || (!req.full && under(req.dir, q.dir)) {
			return // already covered by a queued scan
		}
	}
	if req.full {
		f.queue = f.queue[:0] // a full scan covers the queued subtree scans
	}
	f.queue = append(f.queue, req)
	l.startNextScan(f)
}

func (l *loop) startNextScan(f *folder) {
	if f.scanning || len(f.queue) == 0 || l.ctx.Err() != nil {
		return
	}
	req := f.queue[0]
	f.queue = f.queue[1:]
	f.scanning = true
	l.gen++
	s := &scanner{w: l.w, ctx: l.ctx, f: f, out: l.scanCh,
		msg: scanMsg{f: f, req: req, gen: l.gen, start: l.tick, began: time.Now(), watchErrs: f.watchErrs.Load()}}
	l.scanners.Add(1)
	go func() {
		defer l.scanners.Done()
		s.run()
	}()
}

func (l *loop) anyScanning() bool {
	for _, f := range l.w.folders {
		if f.scanning {
			return true
		}
	}
	return false
}

func (l *loop) onScan(ctx context.Context, m scanMsg) {
	f := m.f
	now := time.Now()
	for _, o := range m.files {
		if st := l.files[o.path]; st != nil && st.touched > m.start {
			// We looked at it ourselves after the scan started; the
			// scan's stat may be older, so keep our own.
			st.seenGen = m.gen
			continue
		}
		if g, ok := l.goneAt[o.path]; ok && g > m.start {
			// Removed after the scan started: confirm before believing it.
			fi, err := os.Lstat(o.path)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			o.info = infoOf(fi)
		}
		st := l.observe(ctx, f, o.path, o.info, now)
		st.seenGen = m.gen
		l.settle(ctx, st)
	}
	if !m.done {
		return
	}
	f.scanning = false
	if m.req.full {
		l.w.scans.Add(1)
		if !f.scanned {
			f.scanned = true
			for _, st := range f.deferred {
				if l.files[st.path] == st {
					l.schedule(st, now)
				}
			}
			f.deferred = nil
		}
		switch {
		case f.RescanInterval > 0:
			l.scheduleRescan(f, now.Add(l.adaptRescan(f, m, now)))
		case m.rootErr:
			l.scheduleRescan(f, now.Add(rootRetry))
		}
	}
	// Tracked files below the scanned directory that the scan did not list
	// may be gone; confirm each with its own Lstat (a failed ReadDir must
	// not make files vanish).
	for p, st := range l.files {
		if st.f == f && st.seenGen != m.gen && under(p, m.req.dir) {
			l.recheck(ctx, st)
		}
	}
	if !l.anyScanning() {
		clear(l.goneAt)
	}
	l.startNextScan(f)
}

// adaptRescan returns the interval until f's next periodic rescan, after
// the full scan m. The rescan is a safety net behind inotify; on a large
// tree it re-lists everything (a metadata storm on a NAS, and CPU), so
// while inotify is trusted the interval grows to rescanShare times the
// scan's duration (at most ~1 % of the time spent scanning), capped at
// maxRescanEvery, never below RescanInterval. It stays at RescanInterval
// when inotify is not trusted: fsnotify is not running, the folder is on
// a network or FUSE filesystem (other clients' writes raise no events),
// a directory could not be watched during the scan, the root is missing,
// or the event queue overflowed since the last full scan (an overflow, a
// watch error or Rescan also scans at once).
func (l *loop) adaptRescan(f *folder, m scanMsg, now time.Time) time.Duration {
	every := f.RescanInterval
	overflows := l.w.overflows.Load()
	trusted := l.w.fsn.Load() != nil && f.notify && !m.remote && !m.rootErr &&
		f.watchErrs.Load() == m.watchErrs && overflows == f.overflowsSeen
	f.overflowsSeen = overflows
	if trusted {
		every = max(every, min(rescanShare*now.Sub(m.began), maxRescanEvery))
	}
	if old := time.Duration(f.every.Swap(int64(every))); old != every {
		l.w.log.Debug("rescan interval", "folder", f.Name, "every", every, "scan_took", now.Sub(m.began))
	}
	return every
}

// scanner walks one directory tree in its own goroutine.
type scanner struct {
	w   *Watcher
	ctx context.Context
	f   *folder
	out chan<- scanMsg
	msg scanMsg
}

func (s *scanner) run() {
	defer s.flush(true)
	dir := s.msg.req.dir
	if s.msg.req.full {
		// The root itself may be a symlink (a mount elsewhere): that one is
		// followed, as the operator named it.
		fi, err := os.Stat(dir)
		if err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
		if err != nil {
			s.msg.rootErr = true
			if msg := err.Error(); s.f.rootErr != msg {
				s.f.rootErr = msg
				s.w.log.Error("folder root unavailable; retrying at each rescan", "folder", s.f.Name, "path", dir, "err", err)
			}
			return
		}
		if s.f.rootErr != "" {
			s.f.rootErr = ""
			s.w.log.Info("folder root available again", "folder", s.f.Name, "path", dir)
		}
		s.msg.remote = onNetworkFS(dir)
	} else if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return // gone or replaced since it was created
	}
	s.walk(dir)
}

// walk watches dir, then lists it (in that order, so nothing created in
// between is missed), then descends.
func (s *scanner) walk(dir string) {
	if s.ctx.Err() != nil {
		return
	}
	s.w.watchDir(s.f, dir)
	subdirs, ok := s.list(dir)
	if !ok {
		return
	}
	for _, d := range subdirs {
		s.walk(d)
	}
}

// list reports the candidate files in dir and returns its subdirectories.
// The directory is closed before the caller descends, so deep trees do not
// hold one descriptor per level.
func (s *scanner) list(dir string) ([]string, bool) {
	d, err := os.Open(dir)
	if err != nil {
		s.dirError(dir, err)
		return nil, false
	}
	defer d.Close()
	ds := newDirStat(d)
	var subdirs []string
	for {
		ents, err := d.ReadDir(512)
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue // hidden files and directories are never candidates
			}
			p := filepath.Join(dir, name)
			t := e.Type()
			switch {
			case t.IsDir():
				if !s.f.m.skipped(p) {
					subdirs = append(subdirs, p)
				}
			case t.IsRegular():
				if !s.f.m.matchName(relOf(s.f, p), name) {
					continue
				}
				info, ok := ds.regular(dir, name)
				if !ok {
					continue // gone or replaced since ReadDir
				}
				s.add(fileObs{path: p, info: info})
			default:
				s.w.notCandidate(s.f, p, t)
			}
			if s.ctx.Err() != nil {
				return nil, false
			}
		}
		if err == io.EOF {
			return subdirs, true
		}
		if err != nil {
			s.dirError(dir, err)
			return subdirs, true
		}
	}
}

func (s *scanner) dirError(dir string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Removed while we walked: not an error.
	case errors.Is(err, fs.ErrPermission):
		s.w.logOnce("denied:"+dir, slog.LevelWarn, "permission denied; skipping directory", "folder", s.f.Name, "dir", dir)
	default:
		s.w.log.Warn("cannot read directory; skipping it until the next rescan", "folder", s.f.Name, "dir", dir, "err", err)
	}
}

func (s *scanner) add(o fileObs) {
	s.msg.files = append(s.msg.files, o)
	if len(s.msg.files) >= scanBatch {
		s.flush(false)
	}
}

func (s *scanner) flush(done bool) {
	if !done && len(s.msg.files) == 0 {
		return
	}
	m := s.msg
	m.done = done
	select {
	case s.out <- m:
	case <-s.ctx.Done():
	}
	s.msg.files = nil
}

// watchDir adds an fsnotify watch on dir (idempotent: re-adding an existing
// watch is one cheap syscall, and it repairs a watch lost to a race).
// Called from scan goroutines and the loop; fsnotify is safe for that.
func (w *Watcher) watchDir(f *folder, dir string) {
	fsn := w.fsn.Load()
	if fsn == nil || !f.notify {
		return
	}
	err := fsn.Add(dir)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOSPC):
		w.watchErrors.Add(1)
		f.watchErrs.Add(1)
		w.logOnce("enospc:"+f.Name, slog.LevelError,
			"inotify watch limit reached: raise fs.inotify.max_user_watches (sysctl); rescans still cover the unwatched directories",
			"folder", f.Name, "dir", dir)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		// Gone again already.
	case errors.Is(err, fs.ErrPermission):
		w.watchErrors.Add(1)
		f.watchErrs.Add(1)
		w.logOnce("denied:"+dir, slog.LevelWarn, "permission denied; skipping directory", "folder", f.Name, "dir", dir)
	default:
		w.watchErrors.Add(1)
		f.watchErrs.Add(1)
		w.log.Warn("cannot watch directory; rescans still cover it", "folder", f.Name, "dir", dir, "err", err)
	}
}

func lstatRegular(dir, name string) (FileInfo, bool) {
	fi, err := os.Lstat(filepath.Join(dir, name))
	if err != nil || !fi.Mode().IsRegular() {
		return FileInfo{}, false
	}
	return infoOf(fi), true
}
