package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

// waitJob polls the store until cond holds for the newest job of relpath.
func (h *harness) waitJob(what, relpath string, timeout time.Duration, cond func(*state.Job) bool) *state.Job {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var last *state.Job
		for _, j := range h.jobs() {
			if j.RelPath == relpath {
				last = j
				break
			}
		}
		if last != nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			desc := "no job"
			if last != nil {
				desc = fmt.Sprintf("job %d %s err=%q dests=%+v", last.ID, last.State, last.Error, last.Destinations)
			}
			h.t.Fatalf("timed out after %s waiting for %s: %s\nlog:\n%s", timeout, what, desc, tail(h.logs.String(), 60))
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func (h *harness) jobsFor(relpath string) []*state.Job {
	var out []*state.Job
	for _, j := range h.jobs() {
		if j.RelPath == relpath {
			out = append(out, j)
		}
	}
	return out
}

// extraS3 is a [destination.NAME] table for a further S3 destination in
// its own new bucket, reached through endpoint. It returns the table and
// the bucket.
func extraS3(t *testing.T, name, endpoint string) (string, string) {
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("wf-daemon-%s-%d", name, bucketSeq.n)
	bucketSeq.Unlock()
	minio.MakeBucket(t, bucket)
	return fmt.Sprintf(`[destination.%s]
type = "s3"
bucket = %q
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = %q
`, name, bucket, endpoint, minio.AccessKey, minio.SecretKey), bucket
}

// #4: a small file (one request per destination, committed with the move)
// going to two destinations, one of them down: the destination that
// succeeded is recorded at once and its object is never sent again,
// however often the other is retried.
func TestFanOutSmallFileRecordsTheDestinationThatSucceeded(t *testing.T) {
	down := testenv.NewProxy(t, minio.Endpoint)
	down.SetDown(true)
	table, mirrorBucket := extraS3(t, "mirror", down.URL)
	h := newHarness(t, hopts{
		retry:       "max_attempts = 30\ninitial_backoff = \"100ms\"\nmax_backoff = \"300ms\"",
		folderDests: `["archive", "mirror"]`,
		extraToml:   table,
	})
	data := content("small", 10<<10)
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), data)
	j := h.waitJob("a few failed attempts", "clip.mp4", 30*time.Second, func(j *state.Job) bool {
		m := j.Dest("mirror")
		return m != nil && m.Attempts >= 3
	})
	a, m := j.Dest("archive"), j.Dest("mirror")
	if a.State != state.DestDone || a.Object != "s3://"+h.bucket+"/news/clip.mp4" {
		t.Fatalf("archive after its success: %+v, want done with its object", *a)
	}
	if m.Error == "" {
		t.Errorf("mirror's failed attempts left no error: %+v", *m)
	}
	if n := h.proxy.Writes(h.bucket + "/news/clip.mp4"); n != 1 {
		t.Fatalf("archive object written %d times while the mirror retried, want 1", n)
	}
	down.SetDown(false)
	j = h.waitJob("done", "clip.mp4", 30*time.Second, func(j *state.Job) bool { return j.State == state.Done })
	if n := h.proxy.Writes(h.bucket + "/news/clip.mp4"); n != 1 {
		t.Errorf("archive object written %d times in all, want 1", n)
	}
	if got := minio.GetObject(t, mirrorBucket, "news/clip.mp4"); !bytes.Equal(got, data) {
		t.Errorf("mirror object: %d bytes, want %d", len(got), len(data))
	}
	if j.Dest("mirror").NextAttempt != (time.Time{}) || j.Dest("mirror").Error != "" {
		t.Errorf("mirror done but still shows a retry: %+v", *j.Dest("mirror"))
	}
}

// stubDest is a destination whose Upload and Register run given functions
// (nil: succeed at once).
type stubDest struct {
	name     string
	upload   func(ctx context.Context, cp *uploader.Checkpoint) error
	register func(ctx context.Context) error
}

func (s *stubDest) Name() string { return s.name }
func (s *stubDest) Type() string { return "stub" }
func (s *stubDest) Upload(ctx context.Context, _ *uploader.Source, cp *uploader.Checkpoint, _ uploader.Session) error {
	if s.upload != nil {
		if err := s.upload(ctx, cp); err != nil {
			return err
		}
	}
	cp.Uploaded, cp.Object = true, "stub://"+s.name
	return nil
}
func (s *stubDest) Register(ctx context.Context, _ *uploader.Source, cp *uploader.Checkpoint, _ uploader.Session) error {
	if s.register != nil {
		if err := s.register(ctx); err != nil {
			return err
		}
	}
	cp.VendorID = s.name + "-id"
	return nil
}
func (s *stubDest) Abort(context.Context, *uploader.Checkpoint) error { return nil }

// gatedRegister wraps a destination so that its first Register waits for
// release (entered is closed when it starts waiting). It hides
// RegisterIsLocal, so the job takes the ordinary path.
type gatedRegister struct {
	uploader.Destination
	once     sync.Once
	entered  chan struct{}
	release  chan struct{}
	released atomic.Bool
}

func newGate(d uploader.Destination) *gatedRegister {
	return &gatedRegister{Destination: d, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedRegister) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Destination.Register(ctx, src, cp, s)
}

func (g *gatedRegister) open() {
	if g.released.CompareAndSwap(false, true) {
		close(g.release)
	}
}

func counterValue(t *testing.T, h *harness, dest, kind string) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.d.metrics.errors.WithLabelValues(dest, kind).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Issue 10, failure isolation: a destination that fails for good while its
// sibling is still at work (a platform's processing wait) is committed,
// logged and counted at once, not when the sibling ends; the sibling goes
// on, and the job's own state sums both once it has.
func TestDestinationFailureIsVisibleWhileSiblingWorks(t *testing.T) {
	var slow *gatedRegister
	table, _ := extraS3(t, "slow", minio.Endpoint)
	h := newHarness(t, hopts{
		folderDests: `["slow", "bad"]`,
		extraToml: table + `[destination.bad]
type = "s3"
bucket = "unused-bucket"
`,
		wrap: func(dests map[string]uploader.Destination) {
			slow = newGate(dests["slow"])
			dests["slow"] = slow
			dests["bad"] = &stubDest{name: "bad", upload: func(context.Context, *uploader.Checkpoint) error {
				return uploader.Permanent(errors.New("refused by the platform: media too short"))
			}}
		},
	})
	defer slow.open()
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), content("iso", 2<<20))
	<-slow.entered
	j := h.waitJob("bad recorded as failed", "clip.mp4", 10*time.Second, func(j *state.Job) bool {
		return j.Dest("bad").State == state.DestFailed
	})
	if j.State.Terminal() || j.State == state.Moving {
		t.Fatalf("job already %s while its sibling is still registering", j.State)
	}
	if b := j.Dest("bad"); !strings.Contains(b.Error, "media too short") || b.Attempts != 1 {
		t.Errorf("bad: %+v, want its reason and one attempt", *b)
	}
	if s := j.Dest("slow"); s.State != state.DestRegistering {
		t.Errorf("slow: %s, want registering (still at work)", s.State)
	}
	if v := counterValue(t, h, "bad", "permanent"); v != 1 {
		t.Errorf("permanent failures counted for bad = %v, want 1", v)
	}
	var line string
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `msg="destination failed"`) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no log line for bad's failure while slow works:\n%s", tail(h.logs.String(), 30))
	}
	if n := strings.Count(line, "destination="); n != 1 {
		t.Errorf("log line names the destination %d times: %s", n, line)
	}
	st, err := h.d.status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.InFlight) != 1 || st.InFlight[0].Destination != "slow" {
		t.Errorf("status in flight = %+v, want only slow", st.InFlight)
	}
	slow.open()
	j = h.waitJob("failed", "clip.mp4", 20*time.Second, func(j *state.Job) bool { return j.State == state.Failed })
	if s := j.Dest("slow"); s.State != state.DestDone || s.Object == "" {
		t.Errorf("slow after its sibling failed: %+v, want done with its object", *s)
	}
	if !strings.Contains(j.Error, "destination bad: ") || strings.Contains(j.Error, "destination slow") {
		t.Errorf("job error %q should name bad's failure only", j.Error)
	}
}

// Issue 10: a destination whose attempt fails while its sibling is still at
// work shows its error and next attempt at once, and is tried again at that
// time within the same round instead of waiting for the sibling.
func TestFailedDestinationRetriesWhileSiblingWorks(t *testing.T) {
	var slow *gatedRegister
	var calls atomic.Int32
	table, _ := extraS3(t, "slow", minio.Endpoint)
	h := newHarness(t, hopts{
		retry:       "max_attempts = 5\ninitial_backoff = \"300ms\"\nmax_backoff = \"1s\"",
		folderDests: `["slow", "flaky"]`,
		extraToml: table + `[destination.flaky]
type = "s3"
bucket = "unused-bucket"
`,
		wrap: func(dests map[string]uploader.Destination) {
			slow = newGate(dests["slow"])
			dests["slow"] = slow
			dests["flaky"] = &stubDest{name: "flaky", upload: func(context.Context, *uploader.Checkpoint) error {
				if calls.Add(1) <= 2 {
					return errors.New("503 Service Unavailable")
				}
				return nil
			}}
		},
	})
	defer slow.open()
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), content("flaky", 2<<20))
	<-slow.entered
	j := h.waitJob("flaky waiting for its next attempt", "clip.mp4", 10*time.Second, func(j *state.Job) bool {
		return !j.Dest("flaky").NextAttempt.IsZero()
	})
	if f := j.Dest("flaky"); !strings.Contains(f.Error, "503") {
		t.Errorf("flaky: %+v, want its error with the next attempt", *f)
	}
	v := NewJobView(j, false)
	for _, dv := range v.Destinations {
		if dv.Name == "flaky" && (dv.NextAttempt == nil || dv.Error == "") {
			t.Errorf("list --json view of flaky: %+v, want error and next_attempt", dv)
		}
	}
	j = h.waitJob("flaky done while slow still registers", "clip.mp4", 10*time.Second, func(j *state.Job) bool {
		return j.Dest("flaky").State == state.DestDone
	})
	if s := j.Dest("slow"); s.State != state.DestRegistering {
		t.Fatalf("slow: %s, want still registering", s.State)
	}
	if f := j.Dest("flaky"); f.Attempts != 2 || f.Error != "" || !f.NextAttempt.IsZero() {
		t.Errorf("flaky after its retry: %+v, want 2 failed attempts, no error left", *f)
	}
	slow.open()
	h.waitJob("done", "clip.mp4", 20*time.Second, func(j *state.Job) bool { return j.State == state.Done })
}

// #2: a file rewritten in place with the same size and mtime after its
// bytes were read (rsync --inplace, touch -d) must not count as delivered
// with the old bytes while processed/ holds the new ones.
func TestRewriteInPlaceWithSameSizeAndMtimeIsNotDeliveredStale(t *testing.T) {
	var gate *gatedRegister
	h := newHarness(t, hopts{wrap: func(dests map[string]uploader.Destination) {
		gate = newGate(dests["archive"])
		dests["archive"] = gate
	}})
	defer gate.open()
	path := filepath.Join(h.inbox, "clip.mp4")
	old := content("old version", 2<<20)
	writeFile(t, path, old)
	<-gate.entered // the old bytes are uploaded
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	fresh := content("new version", 2<<20)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fresh, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	gate.open()
	h.waitJob("the new version delivered", "clip.mp4", 30*time.Second, func(j *state.Job) bool { return j.State == state.Done })
	if got := minio.GetObject(t, h.bucket, "news/clip.mp4"); !bytes.Equal(got, fresh) {
		t.Errorf("object holds the old version (%v), processed/ the new one", bytes.Equal(got, old))
	}
	if got, err := os.ReadFile(filepath.Join(h.processed, "clip.mp4")); err != nil || !bytes.Equal(got, fresh) {
		t.Errorf("processed file: %v", err)
	}
}

// #3: the exact version already delivered, moved back into the folder by
// hand (same inode) or copied back with its mtime (another inode, same
// SHA-256), is never uploaded again: its job records the earlier delivery
// and the file is filed into processed/. A changed mtime makes it a new
// version, uploaded as usual.
func TestDeliveredFileMovedBackIsNotUploadedAgain(t *testing.T) {
	h := newHarness(t, hopts{})
	data := content("delivered", 100<<10)
	in := filepath.Join(h.inbox, "clip.mp4")
	key := h.bucket + "/news/clip.mp4"
	writeFile(t, in, data)
	first := h.waitJob("first delivery", "clip.mp4", 20*time.Second, func(j *state.Job) bool { return j.State == state.Done })
	waitDone := func(n int) *state.Job {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			jobs := h.jobsFor("clip.mp4")
			done := 0
			for _, j := range jobs {
				if j.State == state.Done {
					done++
				}
			}
			if done >= n {
				return jobs[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d done jobs for clip.mp4, want %d\nlog:\n%s", done, n, tail(h.logs.String(), 40))
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	checkSkipped := func(j *state.Job, how string) {
		t.Helper()
		if n := h.proxy.Writes(key); n != 1 {
			t.Fatalf("%s: object written %d times, want 1", how, n)
		}
		noted := false
		for _, e := range j.History {
			noted = noted || strings.Contains(e.Note, "delivered already by job")
		}
		if !noted || j.Dest("archive").Object != first.Dest("archive").Object || j.SHA256 != first.SHA256 {
			t.Errorf("%s: job %d does not record the earlier delivery: %+v", how, j.ID, j)
		}
		if _, err := os.Stat(in); !os.IsNotExist(err) {
			t.Errorf("%s: file left in the folder: %v", how, err)
		}
	}

	// Moved back by hand: same inode, size, mtime.
	if err := os.Rename(filepath.Join(h.processed, "clip.mp4"), in); err != nil {
		t.Fatal(err)
	}
	checkSkipped(waitDone(2), "moved back")

	// Copied back keeping the mtime: another inode, same bytes.
	src := filepath.Join(h.processed, "clip.mp4")
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(h.dir, "copy.tmp")
	writeFile(t, tmp, data)
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, in); err != nil {
		t.Fatal(err)
	}
	checkSkipped(waitDone(3), "copied back")

	// Touched: a new version, sent again.
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, in); err != nil {
		t.Fatal(err)
	}
	waitDone(4)
	if n := h.proxy.Writes(key); n != 2 {
		t.Errorf("a new mtime: object written %d times in all, want 2", n)
	}
}

// #10: a notification still queued when the daemon stops is kept in the
// state database and sent after the restart.
func TestQueuedNotificationIsSentAfterRestart(t *testing.T) {
	var up atomic.Bool
	var mu sync.Mutex
	var failedTries int
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !up.Load() {
			failedTries++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got = append(got, string(b))
	}))
	defer srv.Close()
	h := newHarness(t, hopts{extraToml: fmt.Sprintf("[[notify]]\nurl = %q\nevents = [\"done\"]\n", srv.URL+"/hook")})
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), content("notify", 10<<10))
	j := h.waitJob("done", "clip.mp4", 20*time.Second, func(j *state.Job) bool { return j.State == state.Done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := failedTries
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hook was never tried")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.stop() // while the notification waits for its next try
	up.Store(true)
	h.start()
	deadline = time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		var body string
		if n > 0 {
			body = got[0]
		}
		mu.Unlock()
		if n > 0 {
			if !strings.Contains(body, fmt.Sprintf(`"job":%d`, j.ID)) || !strings.Contains(body, `"event":"done"`) {
				t.Fatalf("notification after restart: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notification queued at shutdown was not sent after the restart\nlog:\n%s", tail(h.logs.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Sent once: nothing is left in the outbox.
	deadline = time.Now().Add(5 * time.Second)
	for {
		left, err := h.d.Store().Outbox(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d entries after delivery", len(left))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// #13: a refused peer's connection is closed after its 403 (not kept alive).
func TestControlRefusalClosesTheConnection(t *testing.T) {
	d := &Daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	gate := &peerGate{selfUID: 1000, sockGID: 1000, log: func(string, ...any) {}, warned: map[uint32]bool{}}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peer{uid: 65534, gid: 65534}))
	d.controlHandler(gate).ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || rec.Header().Get("Connection") != "close" {
		t.Fatalf("refused peer: %d, Connection %q; want 403 and close", rec.Code, rec.Header().Get("Connection"))
	}
}

// #13: connections beyond the caps are closed at accept, and a closed
// connection frees its slot.
func TestControlConnectionCaps(t *testing.T) {
	for _, tt := range []struct {
		name    string
		allowed bool
		limit   int
	}{
		{"allowed user", true, ctlMaxPerUID},
		{"refused user", false, ctlMaxRefusedPerID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ctl.sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var capped atomic.Int32
			lim := newLimitListener(ln, func(peer) bool { return tt.allowed }, func(peer) { capped.Add(1) })
			accepted := make(chan net.Conn, 1000)
			go func() {
				for {
					c, err := lim.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			var clients []net.Conn
			defer func() {
				for _, c := range clients {
					c.Close()
				}
			}()
			for range tt.limit + 3 {
				c, err := net.Dial("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
			}
			var held []net.Conn
			timeout := time.After(5 * time.Second)
			for len(held) < tt.limit {
				select {
				case c := <-accepted:
					held = append(held, c)
				case <-timeout:
					t.Fatalf("accepted %d connections, want %d", len(held), tt.limit)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for capped.Load() < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := capped.Load(); n != 3 {
				t.Fatalf("%d connections closed over the cap, want 3", n)
			}
			select {
			case <-accepted:
				t.Fatal("a connection over the cap was handed on")
			default:
			}
			// One closed: a new one is accepted.
			held[0].Close()
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			select {
			case c := <-accepted:
				c.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("no slot freed by closing a connection")
			}
			for _, c := range held[1:] {
				c.Close()
			}
		})
	}
}

// Issue 10: each attribute once per line, however many layers add it.
func TestLogLinesCarryEachAttributeOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(dedupeAttrs(slog.NewTextHandler(&buf, nil)))
	log.With("destination", "jw").With("destination", "jw", "type", "jwplayer").
		Warn("upload failed", "destination", "jw", "job", 7)
	line := buf.String()
	for _, k := range []string{"destination=", "type=", "job="} {
		if n := strings.Count(line, k); n != 1 {
			t.Errorf("%s appears %d times: %s", k, n, line)
		}
	}
}

// #21 through the daemon: a zero-byte state.db is refused with a message
// saying how to recover, and left as it is.
func TestDaemonRefusesEmptyStateDB(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf("state_dir = %q\ncontrol_socket = %q\n[[folder]]\nname = \"n\"\npath = %q\ndestinations = [\"a\"]\n[destination.a]\ntype = \"s3\"\nbucket = \"b-b\"\nregion = \"us-east-1\"\n",
		dir, filepath.Join(dir, "c.sock"), filepath.Join(dir, "in"))
	os.MkdirAll(filepath.Join(dir, "in"), 0o755)
	cfg, err := parseTestConfig(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "empty") || !strings.Contains(err.Error(), "db check") {
		t.Fatalf("New with an empty state.db: %v", err)
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Fatalf("state.db was changed: %v", err)
	}
}

func parseTestConfig(text string) (*config.Config, error) {
	return config.Parse([]byte(text), "test.toml")
}

func (h *harness) control() *http.Client {
	sock := h.cfg.ControlSocket
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// Issue 12: an online backup through the control socket is a consistent,
// openable copy; prune deletes finished jobs older than asked.
func TestControlBackupAndPrune(t *testing.T) {
	h := newHarness(t, hopts{})
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), content("backup", 10<<10))
	h.waitState(state.Done, 1, 20*time.Second)
	c := h.control()
	resp, err := c.Get("http://watchfolder/v1/db/backup")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) != resp.ContentLength {
		t.Fatalf("backup: %d, %d bytes of %d, %v", resp.StatusCode, len(body), resp.ContentLength, err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(path, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	jobs, err := st.List(context.Background(), state.Filter{})
	st.Close()
	if err != nil || len(jobs) != 1 || jobs[0].State != state.Done {
		t.Fatalf("backup holds %v (%v), want the done job", jobs, err)
	}

	resp, err = c.Post("http://watchfolder/v1/db/prune?older_than=1h", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"pruned": 0`) {
		t.Fatalf("prune of nothing old: %d %s", resp.StatusCode, b)
	}
	time.Sleep(10 * time.Millisecond)
	resp, err = c.Post("http://watchfolder/v1/db/prune?older_than=1ms&state=done", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"pruned": 1`) || len(h.jobs()) != 0 {
		t.Fatalf("prune: %d %s, %d jobs left", resp.StatusCode, b, len(h.jobs()))
	}
	resp, err = c.Post("http://watchfolder/v1/db/prune?older_than=1ms&state=queued", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("prune of queued jobs: %d, want 400", resp.StatusCode)
	}
}

// #18: a reader holding state.db (a CLI paging its output) makes the
// daemon wait for it with a clear message, not refuse to start.
func TestDaemonWaitsForAReaderHoldingTheDatabase(t *testing.T) {
	h := newHarness(t, hopts{})
	h.stop()
	r, err := bolt.Open(filepath.Join(h.dir, "state", "state.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(700 * time.Millisecond)
		r.Close()
	}()
	h.start() // fails the test if New gives up
	if !strings.Contains(h.logs.String(), "state database is locked by another process; waiting for it") {
		t.Errorf("no message while waiting for the lock:\n%s", tail(h.logs.String(), 10))
	}
}
