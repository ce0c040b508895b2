// Package e2e runs the real watchfolder binary against MinIO and small fake
// platform servers (JW Player v2, Wistia, Blue Billywig) that enforce the
// contracts in uploader/<platform>: crash points between upload,
// registration and commit, fan-out to several destinations, sidecars, rate
// limits, and that no secret leaks into logs, CLI output or receipts.
package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	// WF_E2E_BIN runs a prebuilt binary instead (e.g. a known-good build
	// while the tree is mid-change); normally the tree is built with -race.
	if binPath = os.Getenv("WF_E2E_BIN"); binPath == "" {
		binPath, err = testenv.BuildWatchfolder(dir, true)
	}
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

// Secret values: distinctive so a leak is found by a plain substring search.
const (
	jwSecret     = "jw-v2-SECRET-5d1e0c77a9"
	wistiaToken  = "wistia-TOKEN-c0ffee4242"
	bbSecret     = "bb-SHARED-secret-77aa31"
	bbKeyID      = "17"
	minioEnvName = "WF_E2E_MINIO_SECRET"
)

// site is one daemon installation: a watched folder, a config, a state dir.
type site struct {
	t     *testing.T
	dir   string
	inbox string
	cfg   string
	log   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// dest is one [destination.NAME] table of the config.
type dest struct{ name, body string }

// newSite writes a config with one folder delivering to dests, in the given
// order. Paths are short (MkdirTemp under /tmp) so the control socket fits.
func newSite(t *testing.T, dests ...dest) *site {
	t.Helper()
	dir, err := os.MkdirTemp("", "wfe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &site{t: t, dir: dir, inbox: filepath.Join(dir, "in"), cfg: filepath.Join(dir, "c.toml"), log: filepath.Join(dir, "d.log")}
	if err := os.MkdirAll(s.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	var names []string
	var tables strings.Builder
	for _, d := range dests {
		names = append(names, fmt.Sprintf("%q", d.name))
		fmt.Fprintf(&tables, "\n[destination.%s]\n%s\n", d.name, d.body)
	}
	toml := fmt.Sprintf(`state_dir = %q
control_socket = %q
shutdown_timeout = "2s"
[log]
level = "debug"
[retry]
max_attempts = 6
initial_backoff = "100ms"
max_backoff = "500ms"
[upload]
part_size = "5MiB"
[[folder]]
name = "news"
path = %q
destinations = [%s]
stable_after = "150ms"
rescan_interval = "1s"
sidecar_wait = "2s"
receipts = true
probe = "off"
%s`, filepath.Join(dir, "state"), filepath.Join(dir, "ctl.sock"), s.inbox, strings.Join(names, ", "), tables.String())
	if err := os.WriteFile(s.cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	return s
}

// s3Table is the S3 part of a destination writing to MinIO through endpoint.
func s3Table(bucket, endpoint string) string {
	return fmt.Sprintf("bucket = %q\nendpoint = %q\npath_style = true\naccess_key_id = %q\nsecret_access_key = \"${%s}\"\n",
		bucket, endpoint, minio.AccessKey, minioEnvName)
}

func (s *site) env() []string {
	return append(os.Environ(),
		// The race runtime sleeps 1s at exit by default: CLI calls would
		// dominate the suite's time.
		"GORACE=atexit_sleep_ms=0",
		"WATCHFOLDER_CONFIG="+s.cfg,
		minioEnvName+"="+minio.SecretKey,
		"WF_E2E_JW="+jwSecret,
		"WF_E2E_WISTIA="+wistiaToken,
		"WF_E2E_BB="+bbSecret,
	)
}

// start runs `watchfolder run`; output is appended to the site's log.
func (s *site) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("daemon already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(binPath, "run")
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	s.cmd, s.done = cmd, done
	// Wait for the control socket before any CLI call: a CLI that finds no
	// socket reads state.db, and its read lock would make a starting daemon
	// give up (see TestDaemonStartsWhileCLIReads).
	sock := filepath.Join(s.dir, "ctl.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			s.t.Fatalf("daemon exited at start-up\n%s", s.tail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("control socket not answering 20s after start\n%s", s.tail())
		}
	}
}

// kill SIGKILLs the daemon (if running) and waits until it is gone.
func (s *site) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd, s.done = nil, nil
}

// stop sends SIGTERM and waits for a clean exit.
func (s *site) stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("daemon did not stop within 10s of SIGTERM")
	}
	if st := s.cmd.ProcessState; st != nil && st.ExitCode() != 0 {
		s.t.Errorf("daemon exit code %d after SIGTERM", st.ExitCode())
	}
	s.cmd, s.done = nil, nil
}

// cli runs a watchfolder command and returns stdout, stderr and exit code.
func (s *site) cli(args ...string) (string, string, int) {
	s.t.Helper()
	return testenv.RunCLI(s.t, binPath, s.env(), args...)
}

type destJSON struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	State    string `json:"state"`
	VendorID string `json:"vendor_id"`
	Object   string `json:"object"`
	Error    string `json:"error"`
}

type jobJSON struct {
	ID           uint64     `json:"id"`
	RelPath      string     `json:"relpath"`
	State        string     `json:"state"`
	Error        string     `json:"error"`
	Attempts     int        `json:"attempts"`
	Destinations []destJSON `json:"destinations"`
}

func (j jobJSON) dest(name string) destJSON {
	for _, d := range j.Destinations {
		if d.Name == name {
			return d
		}
	}
	return destJSON{}
}

// list returns `list --json` and its raw text.
func (s *site) list() ([]jobJSON, string) {
	s.t.Helper()
	out, errOut, code := s.cli("list", "--json")
	if code != 0 {
		s.t.Fatalf("list --json: exit %d: %s", code, errOut)
	}
	var jobs []jobJSON
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		s.t.Fatalf("list --json: %v\n%s", err, out)
	}
	return jobs, out
}

// job returns the single job for relpath (failing if there are several).
func (s *site) job(relpath string) (jobJSON, bool) {
	s.t.Helper()
	jobs, _ := s.list()
	var found []jobJSON
	for _, j := range jobs {
		if j.RelPath == relpath {
			found = append(found, j)
		}
	}
	if len(found) > 1 {
		s.t.Fatalf("%d jobs for %s: %+v", len(found), relpath, found)
	}
	if len(found) == 0 {
		return jobJSON{}, false
	}
	return found[0], true
}

// waitState polls `list` until relpath's job is in one of states.
func (s *site) waitState(relpath string, timeout time.Duration, states ...string) jobJSON {
	s.t.Helper()
	var last jobJSON
	waitFor(s.t, timeout, func() (bool, string) {
		j, ok := s.job(relpath)
		last = j
		if !ok {
			return false, "no job yet"
		}
		for _, st := range states {
			if j.State == st {
				return true, ""
			}
		}
		return false, fmt.Sprintf("job %+v", j)
	}, s.tail)
	return last
}

// tail is the end of the daemon log, for failure messages.
func (s *site) tail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return "daemon log (tail):\n" + strings.Join(lines, "\n")
}

// drop writes name (relative to the inbox) atomically: staged outside the
// folder, then renamed in, so the daemon sees only the finished file.
func (s *site) drop(name string, data []byte) {
	s.t.Helper()
	stage := filepath.Join(s.dir, "stage")
	os.MkdirAll(stage, 0o755)
	tmp := filepath.Join(stage, filepath.Base(name))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	dst := filepath.Join(s.inbox, name)
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Rename(tmp, dst); err != nil {
		s.t.Fatal(err)
	}
}

// receipt reads processed/<name>.receipt.json.
func (s *site) receipt(name string) receiptJSON {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.inbox, "processed", name+".receipt.json"))
	if err != nil {
		s.t.Fatalf("receipt: %v\n%s", err, s.tail())
	}
	var r receiptJSON
	if err := json.Unmarshal(b, &r); err != nil {
		s.t.Fatalf("receipt %s: %v", b, err)
	}
	return r
}

type receiptJSON struct {
	Path         string `json:"path"`
	SHA256       string `json:"sha256"`
	Destinations []struct {
		Name     string `json:"name"`
		VendorID string `json:"vendor_id"`
		Object   string `json:"object"`
	} `json:"destinations"`
}

func (r receiptJSON) vendorID(name string) string {
	for _, d := range r.Destinations {
		if d.Name == name {
			return d.VendorID
		}
	}
	return ""
}

// waitFor polls cond every 50ms until it holds or timeout passes; on timeout
// the test fails with cond's last description and extra().
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string), extra func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			more := ""
			if extra != nil {
				more = "\n" + extra()
			}
			t.Fatalf("not reached within %s: %s%s", timeout, desc, more)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recv waits for a signal from a fake, failing the test after timeout.
func recv[T any](t *testing.T, ch <-chan T, timeout time.Duration, what string, s *site) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("%s: nothing within %s\n%s", what, timeout, s.tail())
	}
	var zero T
	return zero
}

// media returns deterministic pseudo-random bytes for name.
func media(name string, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(len(name)), uint64(size)))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, name)
	return b
}

// assertNoSecrets checks the daemon log, list/show output, receipts and
// reason files for the account secrets and for any extra strings (tokens and
// signatures the fakes saw on the wire).
func (s *site) assertNoSecrets(extra ...string) {
	s.t.Helper()
	secrets := append([]string{jwSecret, wistiaToken, bbSecret, minio.SecretKey}, extra...)
	texts := map[string]string{}
	b, _ := os.ReadFile(s.log)
	texts["daemon log"] = string(b)
	jobs, raw := s.list()
	texts["list --json"] = raw
	for _, j := range jobs {
		out, _, _ := s.cli("show", fmt.Sprint(j.ID), "--json")
		texts[fmt.Sprintf("show %d --json", j.ID)] = out
		out, _, _ = s.cli("show", fmt.Sprint(j.ID))
		texts[fmt.Sprintf("show %d", j.ID)] = out
	}
	out, _, _ := s.cli("status", "--json")
	texts["status --json"] = out
	filepath.Walk(s.inbox, func(p string, fi os.FileInfo, err error) error {
		if err == nil && (strings.HasSuffix(p, ".receipt.json") || strings.HasSuffix(p, ".error.txt")) {
			b, _ := os.ReadFile(p)
			texts[p] = string(b)
		}
		return nil
	})
	if len(texts["daemon log"]) == 0 {
		s.t.Errorf("daemon log is empty: nothing was checked")
	}
	for where, text := range texts {
		for _, sec := range secrets {
			if sec != "" && strings.Contains(text, sec) {
				s.t.Errorf("secret %.6s... appears in %s", sec, where)
			}
		}
	}
}
