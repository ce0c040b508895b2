package watcher

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleRescan measures what the periodic rescan costs a daemon that
// has nothing to do: a folder of 100,000 files (100 directories of 1,000),
// all known and unchanged, rescan_interval at its default of 1 minute. Each
// iteration is one full scan; the process CPU time per scan (user+system,
// from getrusage) times the scans per minute the watcher schedules gives
// the idle CPU-seconds per minute. Run with:
//
//	go test -run '^$' -bench IdleRescan -benchtime 5x ./watcher/
func BenchmarkIdleRescan(b *testing.B) {
	const dirs, perDir = 100, 1000
	root := b.TempDir()
	for d := range dirs {
		dir := filepath.Join(root, fmt.Sprintf("day-%03d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range perDir {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("clip-%04d.mp4", i)))
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
	w, err := New(Options{
		Folders: []Folder{{Name: "bench", Path: root, StableAfter: time.Hour, RescanInterval: time.Minute}},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan Event, 1024)
	go func() {
		for {
			select {
			case <-events:
			case <-ctx.Done():
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx, events) }()
	defer func() { cancel(); <-done }()
	waitScans := func(n int64) {
		deadline := time.Now().Add(5 * time.Minute)
		for w.Stats().Scans < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d scans after 5 minutes, want %d", w.Stats().Scans, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitScans(1) // the start-up scan: every file becomes known
	b.ResetTimer()
	before := cpuTime()
	for i := range b.N {
		w.Rescan()
		waitScans(int64(i) + 2)
	}
	perScan := (cpuTime() - before) / time.Duration(b.N)
	b.StopTimer()
	every := w.rescanEvery(0)
	b.ReportMetric(perScan.Seconds(), "cpu-s/scan")
	b.ReportMetric(every.Seconds(), "rescan-every-s")
	b.ReportMetric(perScan.Seconds()*float64(time.Minute)/float64(every), "idle-cpu-s/min")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
