package s3engine

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

// BenchmarkPut256MiB uploads a 256 MiB file to the local MinIO with the
// default engine settings and reports throughput, this process's CPU time
// per upload and its peak RSS (VmHWM; MinIO runs in its own process).
//
//	go test -run '^$' -bench Put256MiB -benchtime 3x ./uploader/
func BenchmarkPut256MiB(b *testing.B) {
	const size = 256 * mib
	bucket := newBucket(b)
	c := newEngine(b, bucket, engineCfg{})
	// Written in chunks: a 256 MiB buffer here would hide the engine's
	// own footprint in the RSS figure.
	p := filepath.Join(b.TempDir(), "bench.mp4")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{9})
	if _, err := io.CopyN(f, rng, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	src := sourceFor(b, p, "bench.mp4")
	runtime.GC()
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		cp := &uploader.Checkpoint{}
		if err := c.Put(ctxT(b), src, PutInput{Key: "bench-" + strconv.Itoa(i) + ".mp4"}, cp, newSession()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
		syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapSys)/mib, "heapsys-MiB")
	if hwm := vmHWM(); hwm > 0 {
		b.ReportMetric(float64(hwm)/mib, "peakRSS-MiB")
	}
}

// vmHWM returns this process's peak resident set size in bytes.
func vmHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkPutBurst uploads 2,000 files of 256 KiB, four at a time (the
// daemon's default max_files), straight through the engine: the part of
// the daemon's burst time the engine accounts for (no watcher, no state
// commits, no moves).
//
//	go test -run '^$' -bench PutBurst -benchtime 3x ./uploader/
func BenchmarkPutBurst(b *testing.B) {
	const (
		files = 2000
		size  = 256 << 10
		conc  = defaultMaxFiles
	)
	bucket := newBucket(b)
	c := newEngine(b, bucket, engineCfg{})
	dir := b.TempDir()
	rng := rand.NewChaCha8([32]byte{7})
	srcs := make([]*uploader.Source, files)
	for i := range srcs {
		p := filepath.Join(dir, "clip-"+strconv.Itoa(i)+".mp4")
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(f, rng, size); err != nil {
			b.Fatal(err)
		}
		f.Close()
		srcs[i] = sourceFor(b, p, filepath.Base(p))
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.SetBytes(files * size)
	b.ResetTimer()
	for i := range b.N {
		next := make(chan *uploader.Source)
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for src := range next {
					key := "burst-" + strconv.Itoa(i) + "/" + src.RelPath
					if err := c.Put(ctxT(b), src, PutInput{Key: key}, &uploader.Checkpoint{}, newSession()); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for _, src := range srcs {
			next <- src
		}
		close(next)
		wg.Wait()
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
		syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkPutWAN uploads a file through a simulated WAN (toxiproxy: 20 ms
// each way, 20 MiB/s per connection) to the local MinIO, each iteration on
// a fresh engine (nothing learned) unless WF_BENCH_WAN_LEARN=1. Size from
// WF_BENCH_WAN_MIB (default 256).
//
//	go test -run '^$' -bench PutWAN -benchtime 1x ./uploader/
func BenchmarkPutWAN(b *testing.B) {
	size := int64(256)
	if v, err := strconv.ParseInt(os.Getenv("WF_BENCH_WAN_MIB"), 10, 64); err == nil && v > 0 {
		size = v
	}
	size *= mib
	bucket := newBucket(b)
	w, err := testenv.StartWAN(minioT(b).Addr, testenv.WANLink{OneWay: 20 * time.Millisecond, BytesPerSec: 20 * mib})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	p := filepath.Join(b.TempDir(), "bench.mp4")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{9}), size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	src := sourceFor(b, p, "bench.mp4")
	learn := os.Getenv("WF_BENCH_WAN_LEARN") == "1"
	c := newEngine(b, bucket, engineCfg{endpoint: "http://" + w.Addr})
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		if !learn {
			c = newEngine(b, bucket, engineCfg{endpoint: "http://" + w.Addr})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		err := c.Put(ctx, src, PutInput{Key: "bench-" + strconv.Itoa(i) + ".mp4"}, &uploader.Checkpoint{}, newSession())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(c.learned.Load()), "streams")
	if hwm := vmHWM(); hwm > 0 {
		b.ReportMetric(float64(hwm)/mib, "peakRSS-MiB")
	}
}
