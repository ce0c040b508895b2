// Package destinationtest is the behavioural contract every destination
// type must keep, run against each one (plain S3 on a real MinIO, every
// platform against its strict test server): interrupted at every
// Session.Save and resumed it delivers exactly once; 429 and 503 with
// Retry-After are waited out; a permanent 4xx fails with the platform's
// own message; a source changed during the upload is never delivered;
// Register twice is a no-op; no error carries a secret.
package destinationtest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// Env is one fresh destination and the handles the suite needs to judge it.
type Env struct {
	// New builds the destination. It is called again to resume, as a
	// restarted daemon would, so it must not reset what the platform or
	// store holds.
	New func(t *testing.T) uploader.Destination
	// Delivered counts the media (or objects) the platform holds for the
	// files of this Env: "exactly once" means 1 per file.
	Delivered func(t *testing.T) int
	// Fault makes the next n requests answer status, with Retry-After
	// when retryAfter is not "". status 0 ends the fault.
	Fault func(status int, retryAfter string, n int)
	// Refuse makes requests answer a permanent 4xx until undone (false);
	// Message is the platform's own text the error must carry.
	Refuse  func(on bool)
	Message string
	// Secrets must never appear in an error.
	Secrets []string
	// HonoursRetryAfter: the destination waits as long as Retry-After
	// asks (platform APIs). S3 has no Retry-After: its SDK backs off on
	// SlowDown/503 on its own, so only success is required there.
	HonoursRetryAfter bool
	// Size is the file size to test with (some platforms need a
	// multipart-sized file to exercise their resumable path).
	Size int
	// Name of the test file (its extension decides content types).
	Name string
	// BadToken builds the destination with API credentials the platform
	// refuses, for its token check (`watchfolder doctor`); nil for a type
	// without one (plain S3: doctor probes the bucket itself).
	BadToken func(t *testing.T) uploader.Destination
}

// WithRefusedCredentials wraps newEnv for a platform whose Refuse switches
// the API credentials New builds with: BadToken is New while refused.
func WithRefusedCredentials(newEnv func(t *testing.T) *Env) func(t *testing.T) *Env {
	return func(t *testing.T) *Env {
		e := newEnv(t)
		e.BadToken = func(t *testing.T) uploader.Destination {
			e.Refuse(true)
			defer e.Refuse(false)
			return e.New(t)
		}
		return e
	}
}

// Run runs the contract suite; newEnv returns a fresh Env per subtest.
func Run(t *testing.T, newEnv func(t *testing.T) *Env) {
	t.Run("InterruptedAtEverySave", func(t *testing.T) { interruptAtEverySave(t, newEnv, false) })
	t.Run("CancelledAfterEverySave", func(t *testing.T) { interruptAtEverySave(t, newEnv, true) })
	t.Run("RetryAfter429", func(t *testing.T) { retryAfter(t, newEnv(t), 429) })
	t.Run("RetryAfter503", func(t *testing.T) { retryAfter(t, newEnv(t), 503) })
	t.Run("Permanent4xx", func(t *testing.T) { permanent(t, newEnv(t)) })
	t.Run("SourceChanged", func(t *testing.T) { sourceChanged(t, newEnv(t)) })
	t.Run("RegisterTwice", func(t *testing.T) { registerTwice(t, newEnv(t)) })
	t.Run("TokenCheck", func(t *testing.T) { tokenCheck(t, newEnv(t)) })
}

// tokenCheck: a platform's token check passes with the credentials it
// accepts and fails, naming the refusal and no secret, with ones it
// refuses; it creates nothing.
func tokenCheck(t *testing.T, e *Env) {
	type checker interface {
		CheckToken(ctx context.Context) error
	}
	c, ok := e.New(t).(checker)
	if e.BadToken == nil {
		if ok {
			t.Fatal("the destination has a token check but the Env gives no BadToken to test it with")
		}
		return
	}
	if !ok {
		t.Fatal("BadToken is set but the destination has no CheckToken")
	}
	if err := c.CheckToken(ctxFor(t)); err != nil {
		t.Fatalf("token check with accepted credentials: %v", err)
	}
	err := e.BadToken(t).(checker).CheckToken(ctxFor(t))
	checkSecrets(t, e, err)
	if err == nil {
		t.Fatal("token check passed with credentials the platform refuses")
	}
	if n := e.Delivered(t); n != 0 {
		t.Errorf("token checks left %d media", n)
	}
}

// Session is an in-memory uploader.Session that keeps the last committed
// checkpoint, like the daemon's store.
type Session struct {
	mu    sync.Mutex
	saved []byte
	saves int
	// Hook runs on every Save; returning an error makes the Save fail
	// (before = true: not committed) or report failure after the commit
	// (before = false).
	Hook   func(n int, cp *uploader.Checkpoint) error
	Before bool
	bytes  int64
}

// Save commits a copy of cp.
func (s *Session) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	var hookErr error
	if s.Hook != nil {
		hookErr = s.Hook(s.saves, cp)
	}
	if hookErr != nil && s.Before {
		return hookErr
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	s.saved = b
	return hookErr
}

// Progress records bytes sent.
func (s *Session) Progress(n int64) {
	s.mu.Lock()
	s.bytes = n
	s.mu.Unlock()
}

// Last returns a copy of the last committed checkpoint.
func (s *Session) Last() *uploader.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := &uploader.Checkpoint{}
	if s.saved != nil {
		json.Unmarshal(s.saved, cp)
	}
	return cp
}

// Saves counts Save calls.
func (s *Session) Saves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves
}

var errCrash = errors.New("simulated crash")

// WriteSource writes size random bytes to dir/name and returns the Source.
func WriteSource(t *testing.T, name string, size int, job uint64) *uploader.Source {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return &uploader.Source{JobID: job, Folder: "news", Path: p, RelPath: name, Size: st.Size(),
		ModTime: st.ModTime(), Found: time.Now(), Meta: uploader.Metadata{}}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deliver runs Upload then Register once.
func deliver(ctx context.Context, d uploader.Destination, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	if err := d.Upload(ctx, src, cp, s); err != nil {
		return err
	}
	return d.Register(ctx, src, cp, s)
}

func (e *Env) file() (string, int) {
	name, size := e.Name, e.Size
	if name == "" {
		name = "contract clip.mp4"
	}
	if size == 0 {
		size = 64 << 10
	}
	return name, size
}

func checkSecrets(t *testing.T, e *Env, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range e.Secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error reveals a secret: %v", err)
		}
	}
}

// interruptAtEverySave stops the delivery at the k-th Save for k = 1, 2,
// ... (the process dying just before the commit, or, with after, just
// after it), resumes each time from what was committed with a newly built
// destination, and requires exactly one delivery in the end.
func interruptAtEverySave(t *testing.T, newEnv func(t *testing.T) *Env, after bool) {
	e := newEnv(t)
	name, size := e.file()
	src := WriteSource(t, name, size, 41)
	ctx := ctxFor(t)
	var committed *uploader.Checkpoint = &uploader.Checkpoint{}
	for k := 1; ; k++ {
		if k > 60 {
			t.Fatal("more than 60 saves: delivery does not converge")
		}
		s := &Session{Before: !after, Hook: func(n int, _ *uploader.Checkpoint) error {
			if n == k {
				return errCrash
			}
			return nil
		}}
		cp := cloneCP(committed)
		err := deliver(ctx, e.New(t), src, cp, s)
		checkSecrets(t, e, err)
		if s.Saves() >= k {
			if err == nil {
				t.Fatalf("save %d failed but the delivery reported success", k)
			}
			if s.saved != nil {
				committed = s.Last()
			}
			continue
		}
		// Fewer than k saves: this run went through untouched.
		if err != nil {
			t.Fatalf("after %d interruptions: %v", k-1, err)
		}
		if s.saved != nil {
			committed = s.Last()
		}
		break
	}
	// A final resume from the last commit must be a no-op.
	s := &Session{}
	if err := deliver(ctx, e.New(t), src, cloneCP(committed), s); err != nil {
		t.Fatalf("resume after done: %v", err)
	}
	if n := e.Delivered(t); n != 1 {
		t.Fatalf("delivered %d times, want exactly once", n)
	}
}

// retryAfter answers the next requests with status. A destination that
// honours Retry-After waits it out inside one delivery; one that does not
// (S3: the SDK's own backoff) may return a transient error, which the
// daemon retries: it must not be permanent, and the retry, resumed from
// what was committed, delivers exactly once.
func retryAfter(t *testing.T, e *Env, status int) {
	if e.Fault == nil {
		t.Skip("no fault injection for this destination")
	}
	name, size := e.file()
	src := WriteSource(t, name, size, 42)
	e.Fault(status, "1", 2)
	start := time.Now()
	s := &Session{}
	err := deliver(ctxFor(t), e.New(t), src, &uploader.Checkpoint{}, s)
	for try := 2; err != nil && !e.HonoursRetryAfter && try <= 3; try++ {
		if uploader.IsPermanent(err) {
			break
		}
		t.Logf("transient, retried as the daemon would: %v", err)
		err = deliver(ctxFor(t), e.New(t), src, s.Last(), s)
	}
	checkSecrets(t, e, err)
	if err != nil {
		t.Fatalf("%d with Retry-After not waited out: %v", status, err)
	}
	if el := time.Since(start); e.HonoursRetryAfter && el < time.Second {
		t.Errorf("done after %s: Retry-After: 1 not honoured", el)
	}
	if n := e.Delivered(t); n != 1 {
		t.Errorf("delivered %d times, want 1", n)
	}
}

func permanent(t *testing.T, e *Env) {
	name, size := e.file()
	src := WriteSource(t, name, size, 43)
	e.Refuse(true)
	start := time.Now()
	err := deliver(ctxFor(t), e.New(t), src, &uploader.Checkpoint{}, &Session{})
	e.Refuse(false)
	checkSecrets(t, e, err)
	if err == nil || !uploader.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent error", err)
	}
	if !strings.Contains(err.Error(), e.Message) {
		t.Errorf("error %q lacks the platform's message %q", err, e.Message)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("a permanent refusal took %s (retried?)", el)
	}
}

// sourceChanged rewrites the file (same name, other bytes, other size)
// right after the first commit: unless that commit already recorded the
// whole upload (a single PUT, sent and verified before the change), the
// old version must not be reported delivered, and the error must say the
// source changed.
func sourceChanged(t *testing.T, e *Env) {
	name, size := e.file()
	src := WriteSource(t, name, size, 44)
	doneAtFirst := false
	s := &Session{Hook: func(n int, cp *uploader.Checkpoint) error {
		if n == 1 {
			doneAtFirst = cp.Uploaded
			data := make([]byte, size+1)
			rand.Read(data)
			os.WriteFile(src.Path, data, 0o644)
			future := time.Now().Add(time.Minute)
			os.Chtimes(src.Path, future, future)
		}
		return nil
	}}
	err := deliver(ctxFor(t), e.New(t), src, &uploader.Checkpoint{}, s)
	checkSecrets(t, e, err)
	if doneAtFirst {
		t.Logf("the first commit recorded the finished upload; the change came after it")
		return
	}
	if !errors.Is(err, uploader.ErrSourceChanged) {
		t.Fatalf("err = %v, want ErrSourceChanged", err)
	}
	if s.Saves() > 0 && s.Last().Uploaded {
		t.Errorf("the changed source was recorded as uploaded")
	}
}

func registerTwice(t *testing.T, e *Env) {
	name, size := e.file()
	src := WriteSource(t, name, size, 45)
	ctx := ctxFor(t)
	s := &Session{}
	cp := &uploader.Checkpoint{}
	if err := deliver(ctx, e.New(t), src, cp, s); err != nil {
		t.Fatal(err)
	}
	first := fmt.Sprintf("%+v", *cp)
	before := e.Delivered(t)
	if err := e.New(t).Register(ctx, src, cp, s); err != nil {
		t.Fatalf("second Register: %v", err)
	}
	if got := fmt.Sprintf("%+v", *cp); got != first {
		t.Errorf("second Register changed the checkpoint:\n%s\n%s", first, got)
	}
	if n := e.Delivered(t); n != before || n != 1 {
		t.Errorf("delivered %d after the second Register (before %d)", n, before)
	}
}

func cloneCP(cp *uploader.Checkpoint) *uploader.Checkpoint {
	b, _ := json.Marshal(cp)
	out := &uploader.Checkpoint{}
	json.Unmarshal(b, out)
	return out
}
