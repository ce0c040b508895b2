package daemon

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

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

// harness runs one in-process daemon against MinIO (through a proxy that
// counts object writes and can simulate an outage).
type harness struct {
	t         *testing.T
	dir       string
	inbox     string
	processed string
	failed    string
	bucket    string
	proxy     *testenv.Proxy
	cfg       *config.Config
	d         *Daemon
	logs      *syncBuffer
	cancel    context.CancelFunc
	done      chan error

	orphanGuard time.Duration
	wrap        func(dests map[string]uploader.Destination)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var bucketSeq struct {
	sync.Mutex
	n int
}

// hopts adjust the generated config.
type hopts struct {
	folderExtra string // appended to the [[folder]] table
	destExtra   string // appended to the [destination.archive] table
	retry       string // replaces the [retry] table body
	secret      string // S3 secret key (default: MinIO's)
	stableAfter string // default 300ms
	folderDests string // the folder's destinations list (default ["archive"])
	extraToml   string // appended at the end: more [destination.X], [[notify]]
	// wrap, when set, may replace destinations after New, before Run.
	wrap func(dests map[string]uploader.Destination)
}

// newHarness writes a config and starts the daemon.
func newHarness(t *testing.T, o hopts) *harness {
	t.Helper()
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("wf-daemon-%d", bucketSeq.n)
	bucketSeq.Unlock()
	minio.MakeBucket(t, bucket)
	if o.retry == "" {
		o.retry = "max_attempts = 3\ninitial_backoff = \"200ms\"\nmax_backoff = \"1s\""
	}
	if o.stableAfter == "" {
		o.stableAfter = "300ms"
	}
	if o.secret == "" {
		o.secret = minio.SecretKey
	}
	if !strings.Contains(o.folderExtra, "probe =") {
		o.folderExtra += "\nprobe = \"off\"\n" // test files are not media; probe tests set it
	}
	if o.folderDests == "" {
		o.folderDests = `["archive"]`
	}
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, inbox: filepath.Join(dir, "inbox"), bucket: bucket,
		proxy: testenv.NewProxy(t, minio.Endpoint), logs: &syncBuffer{}}
	h.processed = filepath.Join(h.inbox, "processed")
	h.failed = filepath.Join(h.inbox, "failed")
	if err := os.MkdirAll(h.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf(`
state_dir = %q
control_socket = %q
shutdown_timeout = "4s"
[log]
level = "debug"
[retry]
%s
[upload]
part_size = "5MiB"
[[folder]]
name = "news"
path = %q
destinations = %s
stable_after = %q
rescan_interval = "2s"
%s
[destination.archive]
type = "s3"
bucket = %q
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = %q
%s
%s
`, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"), o.retry, h.inbox, o.folderDests, o.stableAfter, o.folderExtra,
		bucket, h.proxy.URL, minio.AccessKey, o.secret, o.destExtra, o.extraToml)
	cfg, err := config.Parse([]byte(toml), "test.toml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	h.cfg = cfg
	h.wrap = o.wrap
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(ctx, Options{Config: h.cfg, Logger: log, Version: "test", OrphanGuard: h.orphanGuard})
	if err != nil {
		cancel()
		h.t.Fatalf("daemon: %v", err)
	}
	if h.wrap != nil {
		h.wrap(d.rt.Load().dests)
	}
	h.d, h.cancel, h.done = d, cancel, make(chan error, 1)
	go func() { h.done <- d.Run(ctx) }()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("daemon stopped with error: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Errorf("daemon did not stop within 15s")
	}
	h.cancel = nil
	if h.t.Failed() {
		h.t.Logf("daemon log:\n%s", tail(h.logs.String(), 80))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (h *harness) jobs() []*state.Job {
	h.t.Helper()
	jobs, err := h.d.Store().List(context.Background(), state.Filter{})
	if err != nil {
		h.t.Fatalf("list jobs: %v", err)
	}
	return jobs
}

// waitJobs waits until n jobs are in state st (all jobs when n < 0).
func (h *harness) waitState(st state.State, n int, timeout time.Duration) []*state.Job {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var in []*state.Job
		jobs := h.jobs()
		for _, j := range jobs {
			if j.State == st {
				in = append(in, j)
			}
		}
		if len(in) >= n {
			return in
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			for _, j := range jobs {
				fmt.Fprintf(&sb, "  job %d %s %s err=%q\n", j.ID, j.RelPath, j.State, j.Error)
			}
			h.t.Fatalf("timed out after %s waiting for %d jobs in %s; jobs:\n%s\nlog:\n%s", timeout, n, st, sb.String(), tail(h.logs.String(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func content(name string, size int) []byte {
	b := make([]byte, size)
	seed := uint32(len(name)) * 2654435761
	for i := range b {
		seed = seed*1664525 + 1013904223
		b[i] = byte(seed >> 24)
	}
	copy(b, name)
	return b
}
