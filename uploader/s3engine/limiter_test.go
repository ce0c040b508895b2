package s3engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

func TestLimiterNil(t *testing.T) {
	var l *uploader.Limiter
	if uploader.NewLimiter(0) != nil || uploader.NewLimiter(-1) != nil {
		t.Fatal("uploader.NewLimiter(<=0) should be nil (no cap)")
	}
	if err := l.WaitN(context.Background(), 1<<30); err != nil || l.Rate() != 0 {
		t.Fatalf("nil limiter: %v", err)
	}
}

// TestLimiterRate: several readers sharing one limiter together get the
// configured rate, not each of them.
func TestLimiterRate(t *testing.T) {
	const rate, readers, each = 4 << 20, 4, 1 << 20
	l := uploader.NewLimiter(rate)
	start := time.Now()
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			b := &partBody{ctx: context.Background(), sr: io.NewSectionReader(bytes.NewReader(make([]byte, each)), 0, each),
				lim: l, prog: &progress{s: newSession()}, timer: time.NewTimer(time.Hour), stall: time.Hour}
			if n, err := io.Copy(io.Discard, b); err != nil || n != each {
				t.Errorf("copy: %d, %v", n, err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	want := time.Duration(float64(readers*each-max(float64(rate)/20, uploader.LimiterChunk)) / rate * float64(time.Second))
	if elapsed < want*9/10 || elapsed > want*115/100+100*time.Millisecond {
		t.Errorf("4 MiB through a 4 MiB/s limiter took %v, want about %v", elapsed, want)
	}
}

func TestLimiterCancel(t *testing.T) {
	l := uploader.NewLimiter(1024) // the burst (one chunk) is spent at once, then ~1 min of debt
	if err := l.WaitN(context.Background(), uploader.LimiterChunk); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.WaitN(ctx, uploader.LimiterChunk) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitN after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitN ignored cancellation")
	}
}

// TestPartBodyStall: a body nobody reads is cancelled after StallTimeout;
// one that keeps moving is not.
func TestPartBodyStall(t *testing.T) {
	c := &S3{eng: EngineOptions{StallTimeout: 200 * time.Millisecond}}
	f := tempFile(t, 1<<20)
	prog := &progress{s: newSession()}
	err := c.send(context.Background(), f, 0, 1<<20, prog, nil, func(ctx context.Context, body io.ReadSeeker) error {
		body.Read(make([]byte, 1000))
		<-ctx.Done() // a request stuck on a half-open connection
		return ctx.Err()
	})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("no progress")) {
		t.Fatalf("stalled body: %v", err)
	}
	err = c.send(context.Background(), f, 0, 1<<20, prog, nil, func(ctx context.Context, body io.ReadSeeker) error {
		buf := make([]byte, 64<<10)
		for range 8 { // slower overall than the timeout, but never stalled
			time.Sleep(50 * time.Millisecond)
			if _, err := body.Read(buf); err != nil {
				return err
			}
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatalf("moving body cancelled: %v", err)
	}
}

func tempFile(t *testing.T, size int) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "body")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	return f
}
