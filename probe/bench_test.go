//go:build linux

package probe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// uploadOf1GiB is the wall time of watchfolder's upload of one 1 GiB file
// to a MinIO on the same host (docs/benchmarks.md, "one 1 GiB file"): the
// fastest upload this project measures, so the share below is an upper
// bound. Any real network makes the upload slower and the share smaller.
const uploadOf1GiB = 2360 * time.Millisecond

// BenchmarkProbe1GiB probes real 1 GiB files made by ffmpeg (a 1080p clip
// repeated by stream copy, so the movie header describes every frame of
// the gigabyte), with the file's pages in the page cache (warm) and
// dropped before each probe (cold). It reports the cost as a share of the
// 1 GiB upload; the target is below 1 %.
//
//	go test -run '^$' -bench Probe1GiB ./probe
//
// The files are made once into $HOME/.cache/watchfolder/probe-bench.
func BenchmarkProbe1GiB(b *testing.B) {
	dir := benchDir(b)
	for _, kind := range []string{"mp4", "mxf"} {
		path := bigFile(b, dir, kind)
		for _, cold := range []bool{false, true} {
			name := kind + "/warm"
			if cold {
				name = kind + "/cold"
			}
			b.Run(name, func(b *testing.B) {
				facts, err := File(context.Background(), path)
				if err != nil || !facts.Checked {
					b.Fatalf("probe %s: %+v %v", path, facts, err)
				}
				var total time.Duration
				for b.Loop() {
					if cold {
						b.StopTimer()
						dropCache(b, path)
						b.StartTimer()
					}
					start := time.Now()
					if _, err := File(context.Background(), path); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
				}
				per := total / time.Duration(b.N)
				b.ReportMetric(100*per.Seconds()/uploadOf1GiB.Seconds(), "%-of-upload")
				if st, err := os.Stat(path); err == nil {
					b.ReportMetric(float64(st.Size())/(1<<30), "GiB")
				}
				b.Logf("%s: %s, probe %v = %.4f %% of a %v upload", filepath.Base(path), facts.Summary(), per, 100*per.Seconds()/uploadOf1GiB.Seconds(), uploadOf1GiB)
			})
		}
	}
}

// BenchmarkProbeSmall is the per-file cost on the test fixtures (page
// cache warm): what a burst of small files pays.
func BenchmarkProbeSmall(b *testing.B) {
	dir := b.TempDir()
	fs := fixtures()
	makeMedia(b, dir, fs)
	for _, f := range fs {
		b.Run(f.name, func(b *testing.B) {
			p := filepath.Join(dir, f.name)
			for b.Loop() {
				if _, err := File(context.Background(), p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchDir(b *testing.B) string {
	home, err := os.UserHomeDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(home, ".cache", "watchfolder", "probe-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// bigFile makes (once) a file of at least 1 GiB: a 10 s 1080p clip at a
// high bitrate, repeated with stream copy.
func bigFile(b *testing.B, dir, kind string) string {
	b.Helper()
	path := filepath.Join(dir, "big."+kind)
	if st, err := os.Stat(path); err == nil && st.Size() >= 1<<30 {
		return path
	}
	clip := filepath.Join(dir, "clip."+kind)
	args := []string{"-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "10"}
	switch kind {
	case "mp4":
		args = append(args, "-c:v", "libx264", "-preset", "ultrafast", "-qp", "12", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", clip)
	case "mxf":
		args = append(args, "-c:v", "mpeg2video", "-q:v", "2", "-c:a", "pcm_s16le", "-ac", "2", "-f", "mxf", clip)
	}
	b.Logf("making %s (once)", clip)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		b.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	st, err := os.Stat(clip)
	if err != nil {
		b.Fatal(err)
	}
	loops := int((1<<30)/st.Size()) + 1
	tmp := path + ".tmp." + kind
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", fmt.Sprint(loops), "-i", clip,
		"-map", "0", "-c", "copy", "-f", map[string]string{"mp4": "mp4", "mxf": "mxf"}[kind], tmp).CombinedOutput()
	if err != nil {
		b.Fatalf("ffmpeg loop: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// dropCache asks the kernel to forget the file's cached pages, so the
// next probe reads from the disk.
func dropCache(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}
