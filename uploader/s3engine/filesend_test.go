package s3engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// TestFileSendBody: a marked request's body goes out through its own file
// description, mostly by sendfile, with the part's exact bytes; progress
// counts each byte once across a retry; the descriptor is closed; a file
// that shrank fails the request instead of hanging it.
func TestFileSendBody(t *testing.T) {
	const size = 3 << 20
	data := make([]byte, size)
	rand.Read(data)
	tests := []struct {
		name      string
		off, n    int64
		dropFirst bool  // the first attempt's connection drops halfway
		truncate  int64 // the file is cut to this size before sending; 0: not
	}{
		{name: "whole file", off: 0, n: size},
		{name: "middle part", off: 1<<20 + 17, n: 1 << 20},
		{name: "last part", off: size - 300<<10, n: 300 << 10},
		{name: "retry after a dropped connection", off: 512 << 10, n: 2 << 20, dropFirst: true},
		{name: "file shrank", off: 1 << 20, n: 2 << 20, truncate: 2 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu       sync.Mutex
				got      []byte
				attempts int
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				attempts++
				first := attempts == 1
				mu.Unlock()
				if first && tt.dropFirst {
					io.CopyN(io.Discard, r.Body, tt.n/2)
					conn, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						conn.Close()
					}
					return
				}
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				mu.Lock()
				got = b
				mu.Unlock()
			}))
			defer srv.Close()

			path := t.TempDir() + "/clip.mp4"
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tt.truncate > 0 {
				if err := os.Truncate(path, tt.truncate); err != nil {
					t.Fatal(err)
				}
			}
			fdsBefore := openFDs(t)

			closed := make(chan *fileBody, 4)
			fc := newFileSendClient(&http.Client{Transport: &http.Transport{
				DialContext: (&net.Dialer{}).DialContext, WriteBufferSize: 64 << 10,
			}})
			fc.closed = func(fb *fileBody) { closed <- fb }
			c := &S3{eng: EngineOptions{StallTimeout: time.Minute}}
			sess := newSession()
			prog := &progress{s: sess}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = c.send(ctx, f, tt.off, tt.n, prog, nil, func(ctx context.Context, body io.ReadSeeker) error {
				for attempt := 1; ; attempt++ {
					if _, err := body.Seek(0, io.SeekStart); err != nil { // as the SDK rewinds
						return err
					}
					// Wrapped as the SDK wraps it: only the context says which part it is.
					req, err := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL, io.NopCloser(struct{ io.Reader }{body}))
					if err != nil {
						return err
					}
					req.ContentLength = tt.n
					resp, err := fc.Do(req)
					if err != nil {
						if attempt < 2 && tt.dropFirst {
							continue
						}
						return err
					}
					resp.Body.Close()
					return nil
				}
			})
			if tt.truncate > 0 {
				if err == nil {
					t.Fatal("sending a part the file no longer holds succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			mu.Lock()
			if !bytes.Equal(got, data[tt.off:tt.off+tt.n]) {
				t.Errorf("server got %d bytes, not the part's %d bytes at %d", len(got), tt.n, tt.off)
			}
			mu.Unlock()
			var read int64
			for range attemptsWanted(tt.dropFirst) {
				select {
				case fb := <-closed:
					read = fb.read.Load()
				case <-ctx.Done():
					t.Fatal("a body was never closed")
				}
			}
			if read >= tt.n {
				t.Errorf("all %d bytes went through Read: sendfile was not used", read)
			}
			prog.mu.Lock()
			done := prog.done
			prog.mu.Unlock()
			if done != tt.n {
				t.Errorf("progress %d, want %d (each byte once)", done, tt.n)
			}
			if after := openFDs(t); after > fdsBefore+2 { // +2: the keep-alive connection
				t.Errorf("open descriptors %d -> %d: a part's file was left open", fdsBefore, after)
			}
		})
	}
}

// TestFileSendStaleBody: the body of an attempt that net/http closes only
// after the retry began does not move the retry's position (the retry
// would otherwise send from the middle of the part).
func TestFileSendStaleBody(t *testing.T) {
	f := tempFile(t, 1<<20)
	fc := newFileSendClient(http.DefaultClient)
	b := &partBody{ctx: context.Background(), sr: io.NewSectionReader(f, 4096, 512<<10), prog: &progress{s: newSession()},
		timer: time.NewTimer(time.Hour), stall: time.Hour, file: f, base: 4096}
	first, err := b.fileBody(fc)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := io.CopyN(io.Discard, first, 100<<10); err != nil {
		t.Fatal(err)
	}
	first.report()
	if _, err := b.Seek(0, io.SeekStart); err != nil { // the SDK rewinds for its retry
		t.Fatal(err)
	}
	retry, err := b.fileBody(fc)
	if err != nil {
		t.Fatal(err)
	}
	defer retry.Close()
	first.report() // late: the first attempt's body is not closed yet
	b.mu.Lock()
	pos := b.pos
	b.mu.Unlock()
	if pos != 0 {
		t.Fatalf("a stale body moved the retry to %d", pos)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(retry, buf); err != nil {
		t.Fatal(err)
	}
	if at, _ := retry.f.Seek(0, io.SeekCurrent); at != 4096+10 {
		t.Fatalf("the retry reads at %d, want the part's start", at-10)
	}
}

// TestPutSendsBodiesByFile: through the SDK, against MinIO, the bodies of
// a multipart upload's parts and of a single PUT too large for the scan
// buffer go out by sendfile (an SDK that stopped passing the request
// context down would quietly bring back the copies).
func TestPutSendsBodiesByFile(t *testing.T) {
	for _, size := range []int64{3 * mib, 21 * mib} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			bucket := newBucket(t)
			c := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, MultipartThreshold: 8 * mib}})
			if c.fileSend == nil {
				t.Fatal("no sendfile client under the SDK")
			}
			var mu sync.Mutex
			var bodies, read, sent int64
			c.fileSend.closed = func(fb *fileBody) {
				mu.Lock()
				defer mu.Unlock()
				bodies++
				read += fb.read.Load()
				sent += fb.end - fb.base
			}
			src, _ := writeFile(t, t.TempDir(), "clip.mp4", size, 3)
			if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, &uploader.Checkpoint{}, newSession()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if sent < size {
				t.Fatalf("%d bodies of %d bytes in all went through the sendfile client, want the whole %d-byte file", bodies, sent, size)
			}
			if read > sent/4 {
				t.Errorf("%d of %d bytes were read and copied, not sent by sendfile", read, sent)
			}
		})
	}
}

func attemptsWanted(retried bool) int {
	if retried {
		return 2
	}
	return 1
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
