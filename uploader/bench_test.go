package uploader

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
		cp := &Checkpoint{}
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
