package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

var (
	binPath string
	minio   *testenv.MinIO
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wf-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath, err = testenv.BuildWatchfolder(dir, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	minio, err = testenv.StartMinIO()
	if err != nil {
		fmt.Fprintln(os.Stderr, "minio:", err)
		os.Exit(1)
	}
	code := m.Run()
	minio.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

type site struct {
	t      *testing.T
	dir    string
	inbox  string
	cfg    string
	bucket string
	env2   []string // extra environment for the daemon and the CLI
}

func newSite(t *testing.T, bucket, folderExtra string) *site {
	t.Helper()
	minio.MakeBucket(t, bucket)
	dir := t.TempDir()
	s := &site{t: t, dir: dir, inbox: filepath.Join(dir, "inbox"), cfg: filepath.Join(dir, "config.toml"), bucket: bucket}
	if err := os.MkdirAll(s.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf(`
state_dir = %q
control_socket = %q
shutdown_timeout = "5s"
[retry]
max_attempts = 10
initial_backoff = "200ms"
max_backoff = "1s"
[upload]
part_size = "5MiB"
[[folder]]
name = "news"
path = %q
destinations = ["archive"]
stable_after = "200ms"
rescan_interval = "2s"
probe = "off"
%s
[destination.archive]
type = "s3"
bucket = %q
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = "${WF_TEST_SECRET}"
`, filepath.Join(dir, "state"), filepath.Join(dir, "ctl.sock"), s.inbox, folderExtra, bucket, minio.Endpoint, minio.AccessKey)
	if err := os.WriteFile(s.cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *site) env() []string {
	return append(append(os.Environ(), "WF_TEST_SECRET="+minio.SecretKey, "WATCHFOLDER_CONFIG="+s.cfg), s.env2...)
}

// proc is a running daemon; exited is closed once it has been reaped.
type proc struct {
	*exec.Cmd
	exited chan struct{}
}

// wait waits for the daemon to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.exited:
		return p.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// start runs the daemon; its output goes to a log file in the site dir.
func (s *site) start() *proc {
	s.t.Helper()
	logf, err := os.OpenFile(filepath.Join(s.dir, "daemon.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(binPath, "run")
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	p := &proc{Cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.exited) }()
	s.t.Cleanup(func() { cmd.Process.Kill(); <-p.exited })
	// The control socket listens before recovery starts: once it is there
	// the CLI talks to this daemon rather than finding no database yet.
	sock := filepath.Join(s.dir, "ctl.sock")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			return p
		}
		select {
		case <-p.exited:
			s.t.Fatalf("daemon exited at start:\n%s", s.log())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("control socket %s did not answer:\n%s", sock, s.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs a watchfolder command and returns stdout, stderr and exit code.
func (s *site) cli(args ...string) (string, string, int) {
	s.t.Helper()
	return testenv.RunCLI(s.t, binPath, s.env(), args...)
}

type jobJSON struct {
	ID           uint64 `json:"id"`
	Folder       string `json:"folder"`
	Path         string `json:"path"`
	RelPath      string `json:"relpath"`
	Size         int64  `json:"size"`
	State        string `json:"state"`
	Error        string `json:"error"`
	Attempts     int    `json:"attempts"`
	Destinations []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		State    string `json:"state"`
		VendorID string `json:"vendor_id"`
		Object   string `json:"object"`
	} `json:"destinations"`
}

func (s *site) list() []jobJSON {
	s.t.Helper()
	out, errOut, code := s.cli("list", "--json")
	if code != 0 {
		s.t.Fatalf("list --json exit %d: %s", code, errOut)
	}
	var jobs []jobJSON
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		s.t.Fatalf("list --json output: %v\n%s", err, out)
	}
	return jobs
}

func (s *site) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "daemon.log"))
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func (s *site) waitDone(n int, timeout time.Duration) []jobJSON {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		jobs := s.list()
		done := 0
		for _, j := range jobs {
			if j.State == "done" {
				done++
			}
		}
		if done >= n {
			return jobs
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d jobs done after %s: %+v\nlog:\n%s", done, n, timeout, jobs, s.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fill(name string, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(len(name)), uint64(size)))
	b := make([]byte, size)
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	copy(b, name)
	return b
}

// Kill the real daemon with SIGKILL several times while it works; after the
// last restart every file must be done exactly once, with the right bytes.
func TestSIGKILLAndRestartDeliversEverythingOnce(t *testing.T) {
	s := newSite(t, "e2e-kill", "")
	want := map[string][]byte{}
	for i := range 24 {
		size := 64<<10 + i*4099
		if i%6 == 0 {
			size = 12<<20 + i // multipart: 3 parts of 5 MiB
		}
		name := fmt.Sprintf("dir%d/clip-%02d.mp4", i%3, i)
		want[name] = fill(name, size)
	}
	stage := filepath.Join(s.dir, "stage")
	for name, data := range want {
		p := filepath.Join(stage, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := s.start()
	for name := range want {
		dst := filepath.Join(s.inbox, name)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.Rename(filepath.Join(stage, name), dst); err != nil {
			t.Fatal(err)
		}
	}
	kills := 0
	for _, after := range []time.Duration{700 * time.Millisecond, 1200 * time.Millisecond, 900 * time.Millisecond} {
		time.Sleep(after) // a random-ish moment mid-run, by design
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, ok := cmd.wait(10 * time.Second); !ok {
			t.Fatal("killed daemon did not exit")
		}
		kills++
		cmd = s.start()
	}
	jobs := s.waitDone(len(want), 120*time.Second)
	doneByPath := map[string]int{}
	for _, j := range jobs {
		if j.State == "done" {
			doneByPath[j.RelPath]++
			if len(j.Destinations) != 1 || j.Destinations[0].Object != "s3://e2e-kill/news/"+j.RelPath {
				t.Errorf("job %d destinations = %+v", j.ID, j.Destinations)
			}
		} else if j.State != "gone" {
			t.Errorf("job %d (%s) ended %s: %s", j.ID, j.RelPath, j.State, j.Error)
		}
	}
	for name, data := range want {
		if doneByPath[name] != 1 {
			t.Errorf("%s done %d times, want exactly 1", name, doneByPath[name])
		}
		if got := minio.GetObject(t, s.bucket, "news/"+name); !bytes.Equal(got, data) {
			t.Errorf("%s: object differs (%d bytes, want %d)", name, len(got), len(data))
		}
		if _, err := os.Stat(filepath.Join(s.inbox, "processed", name)); err != nil {
			t.Errorf("%s not in processed: %v", name, err)
		}
	}
	keys := minio.ListKeys(t, s.bucket)
	if len(keys) != len(want) {
		t.Errorf("bucket holds %d objects, want %d", len(keys), len(want))
	}
	filepath.Walk(filepath.Join(s.inbox, "processed"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(fi.Name(), " (1)") {
			t.Errorf("duplicate in processed: %s", p)
		}
		return nil
	})
	uploads, err := minio.Client().ListMultipartUploads(context.Background(), &s3ListUploads{Bucket: &s.bucket})
	if err == nil && len(uploads.Uploads) > 0 {
		t.Errorf("%d multipart uploads left open", len(uploads.Uploads))
	}
	t.Logf("kills: %d, files: %d, done jobs: %d", kills, len(want), len(doneByPath))

	// Graceful stop: SIGTERM exits 0 within shutdown_timeout.
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	code, ok := cmd.wait(10 * time.Second)
	if !ok || code != 0 || time.Since(start) > 6*time.Second {
		t.Errorf("SIGTERM: exit code %d (exited %v) after %s, want 0 within shutdown_timeout", code, ok, time.Since(start))
	}
	// Daemon stopped: list reads the database directly.
	_, errOut, code := s.cli("list", "--json")
	if code != 0 || !strings.Contains(errOut, "daemon not running") {
		t.Errorf("offline list: exit %d, stderr %q", code, errOut)
	}
}

type s3ListUploads = s3.ListMultipartUploadsInput
