package watcher

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// The periodic rescan stretches to ~100x the scan's duration (capped at an
// hour, never below rescan_interval) while inotify is trusted, and stays at
// rescan_interval when it is not.
func TestRescanIntervalAdapts(t *testing.T) {
	fsn, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer fsn.Close()
	now := time.Now()
	cases := []struct {
		name     string
		took     time.Duration
		notify   bool
		remote   bool
		rootErr  bool
		overflow bool
		watchErr bool
		noFsn    bool
		want     time.Duration
	}{
		{name: "fast scan keeps the configured interval", took: 100 * time.Millisecond, notify: true, want: time.Minute},
		{name: "slow scan stretches to 1%", took: 2 * time.Second, notify: true, want: 200 * time.Second},
		{name: "capped at an hour", took: 2 * time.Hour, notify: true, want: time.Hour},
		{name: "network filesystem", took: 2 * time.Second, notify: true, remote: true, want: time.Minute},
		{name: "no inotify for the folder", took: 2 * time.Second, want: time.Minute},
		{name: "fsnotify not running", took: 2 * time.Second, notify: true, noFsn: true, want: time.Minute},
		{name: "root missing", took: 2 * time.Second, notify: true, rootErr: true, want: time.Minute},
		{name: "overflow since the last scan", took: 2 * time.Second, notify: true, overflow: true, want: time.Minute},
		{name: "a directory could not be watched", took: 2 * time.Second, notify: true, watchErr: true, want: time.Minute},
	}
	for _, c := range cases {
		w := &Watcher{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if !c.noFsn {
			w.fsn.Store(fsn)
		}
		f := &folder{Folder: Folder{Name: "n", RescanInterval: time.Minute}, notify: c.notify}
		w.folders = []*folder{f}
		l := &loop{w: w}
		m := scanMsg{began: now.Add(-c.took), remote: c.remote, rootErr: c.rootErr}
		if c.overflow {
			w.overflows.Add(1)
		}
		if c.watchErr {
			f.watchErrs.Add(1)
		}
		if got := l.adaptRescan(f, m, now); got != c.want || w.rescanEvery(0) != c.want {
			t.Errorf("%s: interval %s (in force %s), want %s", c.name, got, w.rescanEvery(0), c.want)
		}
		if c.overflow {
			// The next scan without a new overflow may stretch again.
			if got := l.adaptRescan(f, scanMsg{began: now.Add(-c.took)}, now); got != 200*time.Second {
				t.Errorf("%s: after a quiet scan, interval %s, want 200s", c.name, got)
			}
		}
	}
}
