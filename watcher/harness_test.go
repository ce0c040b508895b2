package watcher

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects log output so tests can assert on warnings.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain all of subs.
func (l *logBuf) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

type recv struct {
	Event
	at time.Time // when the test received it
}

type harness struct {
	t    *testing.T
	w    *Watcher
	root string
	logs *logBuf

	mu      sync.Mutex
	evs     []recv
	changed chan struct{}

	cancel context.CancelFunc
	done   chan error
}

type opts struct {
	root     string // default: a new temp dir
	stable   time.Duration
	rescan   time.Duration
	noNotify bool        // scans only, as on an NFS/SMB client mount
	probe    writerProbe // default: the real lease probe
	include  []string
	exclude  []string
}

// newHarness builds a watcher on one folder named "news" with processed/
// and failed/ as Skip dirs. Call start to run it.
func newHarness(t *testing.T, o opts) *harness {
	t.Helper()
	if o.root == "" {
		o.root = t.TempDir()
	}
	logs := &logBuf{}
	w, err := New(Options{
		Folders: []Folder{{
			Name: "news", Path: o.root,
			Skip:        []string{filepath.Join(o.root, "processed"), filepath.Join(o.root, "failed")},
			Include:     o.include,
			Exclude:     o.exclude,
			StableAfter: o.stable, RescanInterval: o.rescan,
		}},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.noNotify {
		w.folders[0].notify = false
	}
	if o.probe != nil {
		w.probe = o.probe
	}
	return &harness{t: t, w: w, root: o.root, logs: logs, changed: make(chan struct{}, 1)}
}

func (h *harness) start() *harness {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.w.Run(ctx, out) }()
	go func() {
		for {
			select {
			case ev := <-out:
				h.mu.Lock()
				h.evs = append(h.evs, recv{ev, time.Now()})
				h.mu.Unlock()
				select {
				case h.changed <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	h.t.Cleanup(func() {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			h.t.Errorf("Run did not return after cancel")
		}
		if h.t.Failed() {
			h.t.Logf("events:\n%s\nlog:\n%s", h.dump(), h.logs.String())
		}
	})
	return h
}

func (h *harness) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, e := range h.evs {
		fmt.Fprintf(&b, "  %s %s size=%d\n", e.Kind, e.RelPath, e.Info.Size)
	}
	return b.String()
}

func (h *harness) events() []recv {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]recv(nil), h.evs...)
}

// waitFor waits until an event satisfying pred has arrived and returns the
// first such.
func (h *harness) waitFor(what string, d time.Duration, pred func(Event) bool) recv {
	h.t.Helper()
	deadline := time.After(d)
	for {
		for _, e := range h.events() {
			if pred(e.Event) {
				return e
			}
		}
		select {
		case <-h.changed:
		case <-deadline:
			h.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

func (h *harness) waitKind(kind EventKind, rel string, d time.Duration) recv {
	h.t.Helper()
	return h.waitFor(kind.String()+" "+rel, d, func(e Event) bool { return e.Kind == kind && e.RelPath == rel })
}

// waitNth waits for the n-th (1-based) event of kind for rel.
func (h *harness) waitNth(kind EventKind, rel string, n int, d time.Duration) recv {
	h.t.Helper()
	deadline := time.After(d)
	for {
		seen := 0
		for _, e := range h.events() {
			if e.Kind == kind && e.RelPath == rel {
				if seen++; seen == n {
					return e
				}
			}
		}
		select {
		case <-h.changed:
		case <-deadline:
			h.t.Fatalf("timed out after %v waiting for %s #%d of %s", d, kind, n, rel)
		}
	}
}

func (h *harness) count(kind EventKind, rel string) int {
	n := 0
	for _, e := range h.events() {
		if e.Kind == kind && e.RelPath == rel {
			n++
		}
	}
	return n
}

// waitCond polls a condition that has no event of its own (counters).
func (h *harness) waitCond(what string, d time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitScans waits until at least n full scans have completed in all.
func (h *harness) waitScans(n int64, d time.Duration) {
	h.t.Helper()
	h.waitCond(fmt.Sprintf("%d scans", n), d, func() bool { return h.w.Stats().Scans >= n })
}

// rescan requests a rescan and waits until it has been through the loop.
func (h *harness) rescan() {
	h.t.Helper()
	want := h.w.Stats().Scans + 1
	h.w.Rescan()
	h.waitScans(want, 5*time.Second)
}

// sentinel writes a file and waits for it to be Ready: every filesystem
// change made before it has then been through the loop.
func (h *harness) sentinel(rel string) {
	h.t.Helper()
	writeFile(h.t, filepath.Join(h.root, rel), 10)
	h.waitKind(Ready, rel, 10*time.Second)
}

// onlyFor fails if any event concerns a RelPath outside allowed.
func (h *harness) onlyFor(allowed ...string) {
	h.t.Helper()
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for _, e := range h.events() {
		if !ok[e.RelPath] {
			h.t.Errorf("unexpected event %s for %q", e.Kind, e.RelPath)
		}
	}
}

func writeFile(t *testing.T, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), size), 0o644); err != nil {
		t.Fatal(err)
	}
}
