package s3engine

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A request body is sent with sendfile(2) where it can be. net/http hands
// a body that exposes its file descriptor (syscall.Conn) to the kernel,
// which moves page-cache pages to the socket itself. Otherwise every byte
// is read into a buffer and written from it: two copies and two system
// calls per 32 KiB, about a third of the daemon's CPU in a profile of a
// 1 GiB upload (its CPU for that upload fell by a sixth to a fifth). The
// SDK wraps every body it is given, so the swap is done below it, in the
// HTTP client, for the bodies send marks in the context.

// errNoFileSend: the body cannot be sent with sendfile.
var errNoFileSend = errors.New("body not sendable from its file")

// fileSendKey marks a request context with its *partBody.
type fileSendKey struct{}

// fileSendPoll is how often a body sent by the kernel reports its
// progress (the file position); the stagger and the rate probe read it.
const fileSendPoll = 5 * time.Millisecond

// doer is the SDK's HTTP client interface.
type doer interface {
	Do(*http.Request) (*http.Response, error)
}

// fileSendClient gives a marked request a body net/http can send with
// sendfile: the part's bytes through a file description of its own. One
// goroutine polls the positions of every body in flight, rather than a
// ticker per body (32 parts in flight would wake 32 times as often).
type fileSendClient struct {
	next doer

	mu      sync.Mutex
	bodies  map[*fileBody]struct{}
	polling bool
	closed  func(*fileBody) // test hook: a body was closed
}

func newFileSendClient(next doer) *fileSendClient {
	return &fileSendClient{next: next, bodies: make(map[*fileBody]struct{})}
}

func (c *fileSendClient) Do(req *http.Request) (*http.Response, error) {
	b, _ := req.Context().Value(fileSendKey{}).(*partBody)
	if b == nil || req.Body == nil || req.Body == http.NoBody {
		return c.next.Do(req)
	}
	fb, err := b.fileBody(c)
	if err != nil {
		// No /proc, or not a regular file: the SDK's body sends the
		// same bytes, through a buffer.
		return c.next.Do(req)
	}
	req.Body, req.GetBody = fb, nil
	return c.next.Do(req)
}

func (c *fileSendClient) add(fb *fileBody) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodies[fb] = struct{}{}
	if !c.polling {
		c.polling = true
		go c.poll()
	}
}

func (c *fileSendClient) remove(fb *fileBody) {
	c.mu.Lock()
	delete(c.bodies, fb)
	c.mu.Unlock()
}

// poll reports the bodies' progress until none is left.
func (c *fileSendClient) poll() {
	t := time.NewTicker(fileSendPoll)
	defer t.Stop()
	var list []*fileBody
	for range t.C {
		c.mu.Lock()
		if len(c.bodies) == 0 {
			c.polling = false
			c.mu.Unlock()
			return
		}
		list = list[:0]
		for fb := range c.bodies {
			list = append(list, fb)
		}
		c.mu.Unlock()
		for _, fb := range list {
			fb.report()
		}
	}
}

// fileBody is a part's bytes from their own open file description, so the
// kernel's file position is this body's alone: sendfile sends from it,
// and its progress is read from it.
type fileBody struct {
	f    *os.File
	b    *partBody
	gen  uint64 // the partBody's attempt this body sends
	base int64  // file offset of the part's first byte
	end  int64  // file offset after its last byte
	c    *fileSendClient
	once sync.Once
	read atomic.Int64 // bytes served by Read rather than sendfile
}

// fileBody opens the part at its current position (0, or where a retry
// rewound it).
func (b *partBody) fileBody(c *fileSendClient) (*fileBody, error) {
	if b.file == nil || b.lim != nil {
		// A bandwidth limit paces every chunk through Read.
		return nil, errNoFileSend
	}
	f, err := reopen(b.file)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	start, gen := b.base+b.pos, b.gen
	b.mu.Unlock()
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	fb := &fileBody{f: f, b: b, gen: gen, base: b.base, end: b.base + b.sr.Size(), c: c}
	c.add(fb)
	return fb, nil
}

// Read serves what net/http does not send with sendfile: the first
// buffer's worth, or all of it when the connection is TLS or the
// transport wraps the body.
func (fb *fileBody) Read(p []byte) (int, error) {
	if err := fb.b.ctx.Err(); err != nil {
		return 0, err
	}
	// The position, not a count of our own: sendfile moves it too, and
	// net/http reads on after it to check the body ends where its length
	// says.
	pos, err := fb.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	rem := fb.end - pos
	if rem <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := fb.f.Read(p)
	fb.read.Add(int64(n))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank; the checksum would fail anyway
	}
	return n, err
}

// SyscallConn lets net/http's sendfile use the descriptor.
func (fb *fileBody) SyscallConn() (syscall.RawConn, error) { return fb.f.SyscallConn() }

// Close is called by net/http once the body is sent or abandoned.
func (fb *fileBody) Close() error {
	var err error
	fb.once.Do(func() {
		fb.c.remove(fb)
		fb.report()
		err = fb.f.Close()
		if fb.c.closed != nil {
			fb.c.closed(fb)
		}
	})
	return err
}

func (fb *fileBody) report() {
	if pos, err := fb.f.Seek(0, io.SeekCurrent); err == nil {
		fb.b.advanceTo(fb.gen, min(pos, fb.end)-fb.base)
	}
}

// withFileSend marks ctx so the part's body may be sent with sendfile.
func withFileSend(ctx context.Context, b *partBody) context.Context {
	if b.file == nil || b.lim != nil {
		return ctx
	}
	return context.WithValue(ctx, fileSendKey{}, b)
}
