package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// opsFolder is one [[folder]] with its own S3 destination.
type opsFolder struct{ name, bucket string }

// opsConfig writes a config with one folder and destination per entry
// (folder paths are <dir>/<name>) plus extra top-level TOML.
func opsConfig(t *testing.T, s *site, folders []opsFolder, extra string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `state_dir = %q
control_socket = %q
shutdown_timeout = "4s"
[retry]
max_attempts = 2
initial_backoff = "100ms"
max_backoff = "200ms"
[upload]
part_size = "5MiB"
%s
`, filepath.Join(s.dir, "state"), filepath.Join(s.dir, "ctl.sock"), extra)
	for _, f := range folders {
		p := filepath.Join(s.dir, f.name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, `
[[folder]]
name = %q
path = %q
destinations = ["d-%s"]
stable_after = "200ms"
rescan_interval = "2s"
receipts = true
probe = "off"
`, f.name, p, f.name)
	}
	for _, f := range folders {
		fmt.Fprintf(&b, `
[destination.d-%s]
type = "s3"
bucket = %q
key = "{folder}/{relpath}"
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = "${WF_TEST_SECRET}"
`, f.name, f.bucket, minio.Endpoint, minio.AccessKey)
	}
	if err := os.WriteFile(s.cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newOpsSite(t *testing.T, folders []opsFolder, extra string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, dir: dir, inbox: filepath.Join(dir, folders[0].name), cfg: filepath.Join(dir, "config.toml")}
	opsConfig(t, s, folders, extra)
	return s
}

// waitJob polls list --json until job id (or, with id 0, the job of
// relpath) is in state want.
func (s *site) waitJob(id uint64, relpath, want string, timeout time.Duration) jobJSON {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, j := range s.list() {
			if (id != 0 && j.ID == id) || (id == 0 && j.RelPath == relpath) {
				if j.State == want {
					return j
				}
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("job %d %s not %s after %s: %+v\nlog:\n%s", id, relpath, want, timeout, s.list(), s.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *site) stop(p *proc) {
	s.t.Helper()
	p.Process.Signal(syscall.SIGTERM)
	if code, ok := p.wait(15 * time.Second); !ok || code != 0 {
		s.t.Errorf("daemon exit %d (exited %v) after SIGTERM:\n%s", code, ok, s.log())
	}
}

func mustStatus(t *testing.T, s *site) map[string]any {
	t.Helper()
	out, errOut, code := s.cli("status", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d %s", code, errOut)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func TestRetryForgetPauseEndToEnd(t *testing.T) {
	minio.MakeBucket(t, "ops-news")
	lateBucket := fmt.Sprintf("ops-late-%d", time.Now().UnixNano()%1e6) // created only later
	s := newOpsSite(t, []opsFolder{{"news", "ops-news"}, {"late", lateBucket}}, "")
	cmd := s.start()
	late := filepath.Join(s.dir, "late")

	// A destination whose bucket does not exist fails the job for good.
	data := fill("sub/a.mp4", 200<<10)
	writeFile(t, filepath.Join(late, "sub", "a.mp4"), data)
	writeFile(t, filepath.Join(late, "sub", "a.json"), []byte(`{"title":"A"}`))
	failed := s.waitJob(0, "sub/a.mp4", "failed", 30*time.Second)
	if _, err := os.Stat(filepath.Join(late, "failed", "sub", "a.mp4.error.txt")); err != nil {
		t.Fatalf("no reason file: %v", err)
	}
	st := mustStatus(t, s)
	if fails, _ := st["recent_failures"].([]any); len(fails) != 1 || !strings.Contains(fmt.Sprint(fails), "NoSuchBucket") && !strings.Contains(strings.ToLower(fmt.Sprint(fails)), "bucket") {
		t.Errorf("status recent_failures = %v", st["recent_failures"])
	}

	// Exit codes of retry before the fix.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"retry", "999999"}, exitNotFound},
		{[]string{"retry", "abc"}, exitUsage},
		{[]string{"retry"}, exitUsage},
		{[]string{"forget", "999999"}, exitNotFound},
	} {
		if _, errOut, code := s.cli(tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
	}

	// Create the bucket, retry every failed job: same id, file back and delivered.
	minio.MakeBucket(t, lateBucket)
	out, errOut, code := s.cli("retry", "--failed", "--json")
	var res []struct {
		ID    uint64 `json:"id"`
		Path  string `json:"path"`
		Error string `json:"error"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || res[0].ID != failed.ID || res[0].Error != "" {
		t.Fatalf("retry --failed: exit %d %s %s", code, out, errOut)
	}
	done := s.waitJob(failed.ID, "", "done", 30*time.Second)
	if done.Attempts != 0 || done.RelPath != "sub/a.mp4" {
		t.Errorf("retried job = %+v, want attempts reset and the same relpath", done)
	}
	for _, p := range []string{"processed/sub/a.mp4", "processed/sub/a.json", "processed/sub/a.mp4.receipt.json"} {
		if _, err := os.Stat(filepath.Join(late, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(late, "failed", "sub", "a.mp4.error.txt")); !os.IsNotExist(err) {
		t.Errorf("reason file still there: %v", err)
	}
	if got := minio.GetObject(t, lateBucket, "late/sub/a.mp4"); !bytes.Equal(got, data) {
		t.Errorf("object differs: %d bytes", len(got))
	}
	if n := len(s.list()); n != 1 {
		t.Errorf("%d jobs after retry, want 1 (the same job)", n)
	}
	if _, errOut, code := s.cli("retry", strconv.FormatUint(failed.ID, 10)); code != exitError || !strings.Contains(errOut, "only failed jobs") {
		t.Errorf("retry of a done job: exit %d %s", code, errOut)
	}

	// Pause: a new file is recorded but waits queued until resume.
	if out, _, code := s.cli("pause", "news"); code != 0 || !strings.Contains(out, "news") {
		t.Fatalf("pause news: exit %d %s", code, out)
	}
	if _, errOut, code := s.cli("pause", "nosuch"); code != exitUsage {
		t.Errorf("pause of an unknown folder: exit %d %s", code, errOut)
	}
	writeFile(t, filepath.Join(s.inbox, "p.mp4"), fill("p", 100<<10))
	queued := s.waitJob(0, "p.mp4", "queued", 20*time.Second)
	// Several stable_after periods and worker turns: it must stay queued.
	time.Sleep(1500 * time.Millisecond)
	if j := s.waitJob(queued.ID, "", "queued", time.Second); j.State != "queued" {
		t.Fatalf("paused job moved on: %+v", j)
	}
	if p, _ := mustStatus(t, s)["paused"].([]any); len(p) != 1 || p[0] != "news" {
		t.Errorf("status paused = %v", p)
	}
	if _, errOut, code := s.cli("forget", strconv.FormatUint(queued.ID, 10)); code != exitError || !strings.Contains(errOut, "still in the pipeline") {
		t.Errorf("forget of a queued job: exit %d %s", code, errOut)
	}
	if out, _, code := s.cli("resume", "news", "--json"); code != 0 || !strings.Contains(out, `"paused": []`) {
		t.Errorf("resume --json: exit %d %s", code, out)
	}
	s.waitJob(queued.ID, "", "done", 30*time.Second)

	// Forget a finished job.
	id := strconv.FormatUint(queued.ID, 10)
	if out, errOut, code := s.cli("forget", id); code != 0 || !strings.Contains(out, "forgotten") {
		t.Errorf("forget: exit %d %s %s", code, out, errOut)
	}
	if _, _, code := s.cli("show", id); code != exitNotFound {
		t.Errorf("show of a forgotten job: exit %d", code)
	}

	// Pause survives a restart.
	if _, _, code := s.cli("pause"); code != 0 {
		t.Fatal("pause all failed")
	}
	s.stop(cmd)
	cmd = s.start()
	if p, _ := mustStatus(t, s)["paused"].([]any); len(p) != 1 || p[0] != "*" {
		t.Errorf("after restart, paused = %v", p)
	}
	if _, _, code := s.cli("resume"); code != 0 {
		t.Error("resume all failed")
	}
	s.stop(cmd)

	// Daemon stopped: commands that change state say so and exit 3.
	for _, args := range [][]string{{"retry", "1"}, {"retry", "--failed"}, {"forget", "1"}, {"pause"}, {"resume", "news"}, {"reload"}, {"status"}} {
		_, errOut, code := s.cli(args...)
		if code != exitNotRunning || !strings.Contains(errOut, "not running") {
			t.Errorf("%v with the daemon stopped: exit %d %q", args, code, errOut)
		}
	}
	if _, errOut, code := s.cli("show", "999999"); code != exitNotFound || !strings.Contains(errOut, "daemon not running") {
		t.Errorf("offline show of a missing job: exit %d %s", code, errOut)
	}
	out, _, code = s.cli("db", "check", "--json")
	if code != 0 || !strings.Contains(out, `"problems": []`) {
		t.Errorf("db check: exit %d %s", code, out)
	}

	// A damaged database: db check says so clearly and exits 1.
	bad := *s
	bad.cfg = filepath.Join(s.dir, "bad.toml")
	badState := filepath.Join(s.dir, "badstate")
	os.MkdirAll(badState, 0o700)
	os.WriteFile(filepath.Join(badState, "state.db"), bytes.Repeat([]byte("not a database "), 2000), 0o600)
	cfgText, _ := os.ReadFile(s.cfg)
	os.WriteFile(bad.cfg, bytes.Replace(cfgText, []byte(filepath.Join(s.dir, "state")), []byte(badState), 1), 0o600)
	_, errOut, code = bad.cli("db", "check", "--config", bad.cfg)
	if code != exitError || !strings.Contains(errOut, "damaged") {
		t.Errorf("db check of a damaged file: exit %d %s", code, errOut)
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The control socket refuses users outside its group even when its file
// mode would let them connect.
func TestSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs the CLI as another user and needs root (the CI runs as root)")
	}
	minio.MakeBucket(t, "ops-sock")
	s := newOpsSite(t, []opsFolder{{"news", "ops-sock"}}, "")
	s.start()
	// Let uid 65534 run the binary, reach the socket and read the
	// (secret-free) config.
	for _, p := range []string{filepath.Dir(s.dir), s.dir, filepath.Dir(binPath)} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(s.cfg, 0o644)
	sock := filepath.Join(s.dir, "ctl.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	os.Chmod(sock, 0o666) // a mistake the peer check must survive
	tests := []struct {
		name string
		cred *syscall.Credential
		ok   bool
	}{
		{"other user", &syscall.Credential{Uid: 65534, Gid: 65534}, false},
		{"other user again", &syscall.Credential{Uid: 65534, Gid: 65534}, false},
		{"primary group of the socket", &syscall.Credential{Uid: 65534, Gid: 0}, true},
		{"supplementary group of the socket", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{0}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binPath, "status", "--json")
			cmd.Env = []string{"WATCHFOLDER_CONFIG=" + s.cfg, "PATH=" + os.Getenv("PATH")}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tt.cred}
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			if tt.ok && (err != nil || !strings.Contains(out.String(), `"version"`)) {
				t.Errorf("allowed client: %v\n%s%s", err, out.String(), errb.String())
			}
			if !tt.ok && (err == nil || !strings.Contains(errb.String(), "permission denied") || !strings.Contains(errb.String(), "group")) {
				t.Errorf("refused client: err %v, stderr %q", err, errb.String())
			}
		})
	}
	if n := strings.Count(s.log(), "refused a client"); n != 1 {
		t.Errorf("refusal logged %d times, want once per uid", n)
	}
}

// notifyListener collects sd_notify datagrams.
type notifyListener struct {
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T, path string) *notifyListener {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifyListener{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// count is how many messages so far start with prefix.
func (n *notifyListener) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

func (n *notifyListener) wait(t *testing.T, prefix string, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for n.count(prefix) < atLeast {
		if time.Now().After(deadline) {
			n.mu.Lock()
			t.Fatalf("want %d x %q from sd_notify, got %q", atLeast, prefix, n.msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadNotifyMetricsWebhooks(t *testing.T) {
	minio.MakeBucket(t, "ops-reload")
	minio.MakeBucket(t, "ops-extra")
	const hookSecret = "hook-secret-0123456789"
	type got struct {
		body []byte
		sig  string
	}
	var mu sync.Mutex
	var received []got
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received = append(received, got{b, r.Header.Get("X-Watchfolder-Signature")})
		mu.Unlock()
	}))
	defer good.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer bad.Close()
	metricsAddr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf(`[metrics]
listen = %q
[[notify]]
url = %q
events = ["done"]
secret = "${WF_HOOK_SECRET}"
timeout = "2s"
[[notify]]
url = %q
timeout = "1s"
`, metricsAddr, good.URL+"/hook?token=t0k", bad.URL)
	folders := []opsFolder{{"news", "ops-reload"}}
	s := newOpsSite(t, folders, extra)
	notify := listenNotify(t, filepath.Join(s.dir, "notify.sock"))
	s.env2 = []string{"NOTIFY_SOCKET=" + filepath.Join(s.dir, "notify.sock"), "WATCHDOG_USEC=300000", "WF_HOOK_SECRET=" + hookSecret}
	cmd := s.start()
	notify.wait(t, "READY=1", 1)
	notify.wait(t, "WATCHDOG=1", 3)

	// Two files delivered although one hook keeps failing.
	for _, n := range []string{"one.mp4", "two.mp4"} {
		writeFile(t, filepath.Join(s.inbox, n), fill(n, 150<<10))
	}
	s.waitDone(2, 30*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	if len(received) != 2 {
		t.Fatalf("good hook got %d notifications, want 2", len(received))
	}
	for _, r := range received {
		mac := hmac.New(sha256.New, []byte(hookSecret))
		mac.Write(r.body)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); r.sig != want {
			t.Errorf("signature %q, want %q", r.sig, want)
		}
		var p struct {
			Event        string `json:"event"`
			Folder       string `json:"folder"`
			Path         string `json:"path"`
			RelPath      string `json:"relpath"`
			FinalPath    string `json:"final_path"`
			Size         int64  `json:"size"`
			SHA256       string `json:"sha256"`
			Destinations []struct {
				Name, Object string
			} `json:"destinations"`
			Timings struct {
				Found, Finished time.Time
				Duration        float64 `json:"duration_seconds"`
			} `json:"timings"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		if p.Event != "done" || p.Folder != "news" || p.Size != 150<<10 || len(p.SHA256) != 64 ||
			len(p.Destinations) != 1 || p.Destinations[0].Object != "s3://ops-reload/news/"+p.RelPath ||
			!strings.Contains(p.FinalPath, "processed") || p.Timings.Found.IsZero() || p.Timings.Finished.Before(p.Timings.Found) {
			t.Errorf("payload = %s", r.body)
		}
		for _, secret := range []string{hookSecret, minio.SecretKey, "t0k"} {
			if bytes.Contains(r.body, []byte(secret)) {
				t.Errorf("payload holds a secret: %s", r.body)
			}
		}
	}
	mu.Unlock()

	// Metrics: every documented series is there; bytes were counted.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"watchfolder_jobs", "watchfolder_uploaded_bytes_total", "watchfolder_upload_duration_seconds_bucket",
		"watchfolder_job_duration_seconds_bucket", "watchfolder_queue_depth", "watchfolder_jobs_in_flight",
		"watchfolder_watched_directories", "watchfolder_rescans_total", "watchfolder_event_overflows_total",
		"watchfolder_probe_fallbacks_total", "watchfolder_watch_errors_total", "watchfolder_build_info",
		"watchfolder_notify_sent_total", "watchfolder_start_time_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).Match(body) {
			t.Errorf("metrics lack %s", name)
		}
	}
	if m := regexp.MustCompile(`(?m)^watchfolder_uploaded_bytes_total\{destination="d-news"\} (\S+)`).FindSubmatch(body); m == nil || string(m[1]) != strconv.Itoa(2*150<<10) {
		t.Errorf("uploaded bytes: %q", m)
	}
	if !regexp.MustCompile(`(?m)^watchfolder_jobs\{folder="news",state="done"\} 2$`).Match(body) {
		t.Errorf("jobs gauge:\n%s", grepLines(body, "watchfolder_jobs{"))
	}

	// Reload with a new folder: it is watched and delivered, without a restart.
	before := notify.count("READY=1")
	folders = append(folders, opsFolder{"extra", "ops-extra"})
	opsConfig(t, s, folders, extra)
	cmd.Process.Signal(syscall.SIGHUP)
	notify.wait(t, "RELOADING=1", 1)
	notify.wait(t, "READY=1", before+1)
	writeFile(t, filepath.Join(s.dir, "extra", "x.mp4"), fill("x", 64<<10))
	s.waitJob(0, "x.mp4", "done", 30*time.Second)
	if got := minio.GetObject(t, "ops-extra", "extra/x.mp4"); len(got) != 64<<10 {
		t.Errorf("new folder's object: %d bytes", len(got))
	}

	// A bad config is refused, logged with all its errors; the old one
	// keeps working. (Unset secrets: the CLI, which resolves no secrets,
	// can still read this config.)
	cfgText, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, bytes.ReplaceAll(cfgText, []byte("${WF_TEST_SECRET}"), []byte("${WF_TEST_UNSET_SECRET}")), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	notify.wait(t, "RELOADING=1", 2)
	notify.wait(t, "READY=1", before+2)
	if _, errOut, code := s.cli("reload"); code != exitError || !strings.Contains(errOut, "WF_TEST_UNSET_SECRET") {
		t.Errorf("reload of a bad config: exit %d %s", code, errOut)
	}
	log := s.log()
	for _, want := range []string{"reload refused", "destination.d-news.secret_access_key", "destination.d-extra.secret_access_key"} {
		if !strings.Contains(log, want) {
			t.Errorf("refused reload: log lacks %q:\n%s", want, log)
		}
	}
	// A folder path that does not exist (a typo) is refused, never created.
	os.WriteFile(s.cfg, cfgText, 0o600)
	typo := filepath.Join(s.dir, "extra-typo")
	fixed, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, bytes.Replace(fixed, []byte(filepath.Join(s.dir, "extra")+`"`), []byte(typo+`"`), 1), 0o600)
	if _, errOut, code := s.cli("reload"); code != exitError || !strings.Contains(errOut, "does not exist") {
		t.Errorf("reload with a missing folder path: exit %d %s", code, errOut)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("reload created the mistyped folder: %v", err)
	}
	os.WriteFile(s.cfg, cfgText, 0o600)

	writeFile(t, filepath.Join(s.dir, "extra", "y.mp4"), fill("y", 64<<10))
	writeFile(t, filepath.Join(s.inbox, "three.mp4"), fill("three", 64<<10))
	s.waitJob(0, "y.mp4", "done", 30*time.Second)
	s.waitJob(0, "three.mp4", "done", 30*time.Second)

	s.stop(cmd)
	notify.wait(t, "STOPPING=1", 1)
}

func grepLines(b []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
