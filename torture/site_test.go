package torture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

type params struct {
	long         bool
	crashKills   int
	crashFiles   int
	crashLarge   int // files over the multipart threshold among crashFiles
	outage       time.Duration
	manyFiles    int
	deepLevels   int
	faultFiles   int
	settle       time.Duration // how long a run may take to deliver everything
	diskFullJobs int
}

const (
	mib      = 1 << 20
	folder   = "news"
	partSize = 5 * mib
)

// seed returns the run's random seed (WF_TORTURE_SEED or the clock) and
// logs it so that a failing run can be repeated.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("WF_TORTURE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("WF_TORTURE_SEED=%q: %v", v, err)
		}
		s = n
	}
	t.Logf("seed %d (repeat with WF_TORTURE_SEED=%d)", s, s)
	return s
}

var bucketSeq atomic.Int64

var bucketClean = regexp.MustCompile(`[^a-z0-9]+`)

// newBucket creates a fresh bucket named after the test.
func newBucket(t *testing.T, tag string) string {
	t.Helper()
	name := bucketClean.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(name) > 30 {
		name = name[len(name)-30:]
	}
	b := strings.Trim(fmt.Sprintf("wf%d-%s-%s", bucketSeq.Add(1), tag, strings.Trim(name, "-")), "-")
	minio.MakeBucket(t, b)
	return b
}

// destSpec is one S3 destination of a site.
type destSpec struct {
	name     string
	bucket   string
	endpoint string // default: MinIO directly
}

type siteConfig struct {
	dests       []destSpec
	rawDests    string   // further [destination.X] tables (TOML)
	folderDests []string // default: every dests[i].name
	level       string   // log level, default "info"
	folderExtra string   // more keys in the [[folder]] table
	maxAttempts int      // default 50
	maxBackoff  string   // default "1s"
	env         []string // extra environment for the daemon and the CLI
	stateDir    string   // default <dir>/state
}

// site is one watched folder with its own state, config and daemon.
type site struct {
	t        *testing.T
	cfg      siteConfig
	dir      string
	inbox    string
	stage    string // outside the inbox, same filesystem: files are renamed in from here
	cfgPath  string
	stateDir string
	logPath  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

func newSite(t *testing.T, c siteConfig) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, cfg: c, dir: dir, inbox: filepath.Join(dir, "inbox"), stage: filepath.Join(dir, "stage"),
		cfgPath: filepath.Join(dir, "config.toml"), stateDir: c.stateDir, logPath: filepath.Join(dir, "daemon.log")}
	if s.stateDir == "" {
		s.stateDir = filepath.Join(dir, "state")
	}
	for _, d := range []string{s.inbox, s.stage} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if c.level == "" {
		c.level = "info"
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = 50
	}
	if c.maxBackoff == "" {
		c.maxBackoff = "1s"
	}
	names := c.folderDests
	if names == nil {
		for _, d := range c.dests {
			names = append(names, d.name)
		}
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `state_dir = %q
control_socket = %q
shutdown_timeout = "6s"
[log]
level = %q
[retry]
max_attempts = %d
initial_backoff = "100ms"
max_backoff = %q
[upload]
part_size = "5MiB"
multipart_threshold = "5MiB"
concurrency = 3
max_files = 4
[[folder]]
name = %q
path = %q
destinations = [%s]
stable_after = "300ms"
rescan_interval = "2s"
receipts = true
probe = "off"
%s
`, s.stateDir, filepath.Join(dir, "ctl.sock"), c.level, c.maxAttempts, c.maxBackoff, folder, s.inbox,
		strings.Join(quoted, ", "), c.folderExtra)
	for _, d := range c.dests {
		ep := d.endpoint
		if ep == "" {
			ep = minio.Endpoint
		}
		fmt.Fprintf(&b, `[destination.%s]
type = "s3"
bucket = %q
key = "{folder}/{relpath}"
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = "${WF_TEST_SECRET}"
`, d.name, d.bucket, ep, minio.AccessKey)
	}
	b.WriteString(c.rawDests)
	s.cfg = c
	if err := os.WriteFile(s.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		cmd, exited := s.cmd, s.exited
		s.mu.Unlock()
		if cmd != nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "wf-torture-logs", bucketClean.ReplaceAllString(strings.ToLower(t.Name()), "-")+".log")
			os.MkdirAll(filepath.Dir(keep), 0o755)
			if b, err := os.ReadFile(s.logPath); err == nil && os.WriteFile(keep, b, 0o644) == nil {
				t.Logf("full daemon log kept in %s", keep)
			}
			t.Logf("daemon log (tail):\n%s", s.logTail(40))
		}
	})
	return s
}

func (s *site) env() []string {
	env := append(os.Environ(), "WF_TEST_SECRET="+minio.SecretKey, "WATCHFOLDER_CONFIG="+s.cfgPath)
	return append(env, s.cfg.env...)
}

// start runs the daemon in the background; output is appended to daemon.log.
func (s *site) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("start: daemon already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.starts++
	fmt.Fprintf(logf, "=== torture: start %d\n", s.starts)
	cmd := exec.Command(binPath, "run")
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	s.cmd, s.exited = cmd, exited
}

// pid returns the running daemon's process id (0 when stopped).
func (s *site) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *site) kill() {
	s.t.Helper()
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatal("kill: daemon not running")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM and asserts a clean exit within shutdown_timeout.
func (s *site) stop() {
	s.t.Helper()
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		s.t.Errorf("daemon did not stop within 20s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		s.t.Errorf("daemon exit code %d after SIGTERM", code)
	}
}

// races returns the race reports in the daemon log.
func (s *site) races() []string {
	b, _ := os.ReadFile(s.logPath)
	blocks := strings.Split(string(b), "WARNING: DATA RACE")
	var out []string
	for _, blk := range blocks[1:] {
		if i := strings.Index(blk, "=================="); i >= 0 {
			blk = blk[:i]
		}
		out = append(out, blk)
	}
	return out
}

// checkRaces fails the test on any race report.
func (s *site) checkRaces() {
	s.t.Helper()
	for _, u := range s.races() {
		s.t.Errorf("DATA RACE in the daemon:%s", u)
	}
}

// cli runs a watchfolder command and returns stdout, stderr and exit code.
func (s *site) cli(args ...string) (string, string, int) {
	s.t.Helper()
	return testenv.RunCLI(s.t, binPath, s.env(), args...)
}

type destJSON struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	State     string `json:"state"`
	VendorID  string `json:"vendor_id"`
	Object    string `json:"object"`
	BytesDone int64  `json:"bytes_done"`
}

type jobJSON struct {
	ID           uint64     `json:"id"`
	Folder       string     `json:"folder"`
	Path         string     `json:"path"`
	RelPath      string     `json:"relpath"`
	Size         int64      `json:"size"`
	State        string     `json:"state"`
	Error        string     `json:"error"`
	Attempts     int        `json:"attempts"`
	Destinations []destJSON `json:"destinations"`
}

// list returns `list --json` (args filter), or an error while the daemon is
// starting or stopping (the database is locked and the socket not up).
func (s *site) list(args ...string) ([]jobJSON, error) {
	out, errOut, code := s.cli(append([]string{"list", "--json"}, args...)...)
	if code != 0 {
		return nil, fmt.Errorf("list --json: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var jobs []jobJSON
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		return nil, fmt.Errorf("list --json output: %v", err)
	}
	return jobs, nil
}

// waitFor polls cond until it holds or timeout passes (then the test fails
// with cond's last description of what it is still waiting for).
func (s *site) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 100 * time.Millisecond
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not reached after %s: %s", what, timeout, detail)
		}
		time.Sleep(interval)
		interval = min(interval*2, time.Second)
	}
}

// waitIdle waits until no job is unfinished (the daemon must be running).
func (s *site) waitIdle(timeout time.Duration) {
	s.t.Helper()
	s.waitFor("no unfinished jobs", timeout, func() (bool, string) {
		jobs, err := s.list("--state", "waiting,queued,uploading,registering,retry,moving")
		if err != nil {
			return false, err.Error()
		}
		if len(jobs) == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("%d unfinished, e.g. %s %s (%s)", len(jobs), jobs[0].RelPath, jobs[0].State, jobs[0].Error)
	})
}

// waitJob waits until the newest job for rel satisfies ok.
func (s *site) waitJob(rel string, timeout time.Duration, ok func(j jobJSON) bool) jobJSON {
	s.t.Helper()
	var got jobJSON
	s.waitFor("job "+rel, timeout, func() (bool, string) {
		jobs, err := s.list()
		if err != nil {
			return false, err.Error()
		}
		for _, j := range jobs { // newest first
			if j.RelPath == rel {
				got = j
				return ok(j), fmt.Sprintf("%s is %s (%s)", rel, j.State, j.Error)
			}
		}
		return false, "no job for " + rel
	})
	return got
}

func (s *site) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// drop writes data under the stage directory and renames it into the inbox
// at rel (creating directories): the file appears complete at once.
func (s *site) drop(rel string, data []byte) {
	s.t.Helper()
	tmp := filepath.Join(s.stage, fmt.Sprintf("f%d", stageSeq.Add(1)))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	dst := filepath.Join(s.inbox, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		s.t.Fatal(err)
	}
}

var stageSeq atomic.Int64

// content returns size pseudo-random bytes derived from r.
func content(r *rand.Rand, size int) []byte {
	b := make([]byte, size)
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < size; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func fileSum(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func objectSum(ctx context.Context, bucket, key string) (string, error) {
	out, err := minio.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, out.Body); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func listKeys(ctx context.Context, bucket string) (map[string]bool, error) {
	keys := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(minio.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys[aws.ToString(o.Key)] = true
		}
	}
	return keys, nil
}

func openUploads(ctx context.Context, bucket string) ([]string, error) {
	out, err := minio.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys, nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }
