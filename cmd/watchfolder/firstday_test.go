package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
)

func TestCLIConventions(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	writeFile(t, cfg, []byte(fmt.Sprintf(`state_dir = %q
control_socket = %q
[[folder]]
name = "news"
path = %q
destinations = ["a"]
[destination.a]
type = "s3"
bucket = "abc"
`, filepath.Join(dir, "state"), filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "news"))))
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // substring expected on stdout
		stderr   string // substring expected on stderr
		noStdout bool
	}{
		{"--version", []string{"--version"}, exitOK, "watchfolder ", "", false},
		{"help on stdout", []string{"--help"}, exitOK, "usage: watchfolder", "", false},
		{"help COMMAND", []string{"help", "list"}, exitOK, "--since", "", false},
		{"sub --help on stdout", []string{"status", "--help"}, exitOK, "--interval", "", false},
		{"usage error on stderr", []string{"list", "--bogus"}, exitUsage, "", "--state", true},
		{"global flag before the command", []string{"--config", cfg, "list", "--folder", "nosuch"}, exitUsage, "", `no folder "nosuch"`, true},
		{"global flag with =", []string{"--config=" + cfg, "pause", "nosuch"}, exitUsage, "", `no folder "nosuch"`, true},
		{"flag after arguments", []string{"forget", "--state", "done", "--folder", "nosuch", "--config", cfg}, exitUsage, "", `no folder "nosuch"`, true},
		{"unknown folder in forget", []string{"forget", "--config", cfg, "--state", "done", "--folder", "x"}, exitUsage, "", "folders: news", true},
		{"days in --since", []string{"list", "--config", cfg, "--since", "7x"}, exitUsage, "", "7d", true},
		{"forget refuses unfinished states", []string{"forget", "--config", cfg, "--state", "uploading"}, exitUsage, "", "not finished", true},
		{"forget needs ids or --state", []string{"forget", "--config", cfg}, exitUsage, "", "--state", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runMain(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) || (tc.noStdout && out != "") {
				t.Errorf("%v: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, out, errOut)
			}
		})
	}
	if out, _, code := runMain("--config", cfg, "__complete", "folders"); code != exitOK || out != "news\n" {
		t.Errorf("folder completion: exit %d, %q", code, out)
	}
	// --since 7d is taken (the daemon is not running and there is no
	// database yet: that is the error, not the duration).
	if _, errOut, _ := runMain("list", "--config", cfg, "--since", "7d"); strings.Contains(errOut, "since") {
		t.Errorf("--since 7d refused: %s", errOut)
	}
}

func TestParseAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"0.5d", 12 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"24h", 24 * time.Hour, true},
		{"d", 0, false},
		{"-1d", 0, false},
		{"7days", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		got, err := parseAge(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseAge(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestResolveRef(t *testing.T) {
	cwd, _ := os.Getwd()
	cfg := &config.Config{Folders: []config.Folder{{Name: "news", Path: "/srv/news", ProcessedDir: "/srv/news/processed", FailedDir: "/srv/done/failed"}}}
	tests := []struct{ in, want string }{
		{"12", "12"},
		{"/srv/news/a/b.mp4", "/srv/news/a/b.mp4"},
		{"/srv/news/processed/a/b.mp4", "/srv/news/a/b.mp4"},
		{"/srv/done/failed/c.mp4", "/srv/news/c.mp4"},
		{"clip.mp4", filepath.Join(cwd, "clip.mp4")},
	}
	for _, tc := range tests {
		if got := resolveRef(cfg, tc.in); got != tc.want {
			t.Errorf("resolveRef(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestJournalPriorities(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "debug"}, &buf, true)
	log.With("job", 1).Error("upload failed", "path", "a.mp4")
	log.Warn("slow")
	log.Info("delivered")
	log.Debug("detail")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"<3>", "<4>", "<6>", "<7>"}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s", buf.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]+"level=") || strings.Contains(l, "time=") {
			t.Errorf("line %d = %q, want prefix %s and no time", i, l, want[i])
		}
	}
	buf.Reset()
	newLogger(config.Log{}, &buf, false).Error("x")
	if strings.HasPrefix(buf.String(), "<") {
		t.Errorf("outside the journal a line has a priority prefix: %q", buf.String())
	}
}

func TestJournalStreamMatchesStderrOnly(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "JOURNAL_STREAM" {
				return v
			}
			return ""
		}
	}
	if !journalStream(env(fmt.Sprintf("%d:%d", st.Dev, st.Ino)), f) {
		t.Error("matching JOURNAL_STREAM not recognised")
	}
	if journalStream(env(fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)), f) || journalStream(env(""), f) {
		t.Error("JOURNAL_STREAM of another stream taken for ours")
	}
}

// run refuses a folder path that does not exist, and does not create it.
func TestRunRefusesMissingFolder(t *testing.T) {
	s := newSite(t, "first-missing", "")
	missing := filepath.Join(s.dir, "typo")
	cfg, _ := os.ReadFile(s.cfg)
	writeFile(t, s.cfg, bytes.Replace(cfg, []byte(fmt.Sprintf("path = %q", s.inbox)), []byte(fmt.Sprintf("path = %q", missing)), 1))
	_, errOut, code := s.cli("run")
	if code != exitError || !strings.Contains(errOut, missing) || !strings.Contains(errOut, "does not exist") {
		t.Errorf("run: exit %d\n%s", code, errOut)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("run created the missing folder")
	}
}

// Credentials the store refuses fail the start, with no secret in the text.
func TestRunRefusesBadCredentials(t *testing.T) {
	s := newSite(t, "first-creds", "")
	env := append(s.env(), "WF_TEST_SECRET=not-the-secret")
	_, errOut, code := testenvRun(t, env, "run")
	if code != exitError || !strings.Contains(errOut, "refuses the credentials") {
		t.Errorf("run: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, "not-the-secret") {
		t.Error("the secret is in the error text")
	}
	// doctor says the same, with the destination bit of its exit code.
	out, _, code := testenvRun(t, env, "doctor", "--user", "root", "--json")
	var rep struct {
		Problems []struct{ Class, Message string }
	}
	json.Unmarshal([]byte(out), &rep)
	if code != doctorDestination || len(rep.Problems) != 1 || rep.Problems[0].Class != "destination" {
		t.Errorf("doctor: exit %d\n%s", code, out)
	}
}

func testenvRun(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit", args)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func TestDoctor(t *testing.T) {
	s := newSite(t, "first-doctor", "")
	// A healthy setup: exit 0, and the probe object is gone again.
	out, errOut, code := s.cli("doctor", "--user", "root")
	if code != exitOK || !strings.Contains(out, "ok:") {
		t.Fatalf("doctor: exit %d\n%s%s", code, out, errOut)
	}
	if keys := minio.ListKeys(t, s.bucket); len(keys) != 0 {
		t.Errorf("doctor left objects behind: %v", keys)
	}
	// A folder the service user cannot write.
	if err := os.Chmod(s.inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	out, _, code = s.cli("doctor", "--user", "nobody", "--offline")
	if code != doctorFolder || !strings.Contains(out, "cannot write") {
		t.Errorf("doctor --user nobody: exit %d\n%s", code, out)
	}
	// A folder that is not there.
	if err := os.Rename(s.inbox, s.inbox+".moved"); err != nil {
		t.Fatal(err)
	}
	out, _, code = s.cli("doctor", "--user", "root", "--offline", "--json")
	if code != doctorFolder || !strings.Contains(out, "does not exist") {
		t.Errorf("doctor, missing folder: exit %d\n%s", code, out)
	}
}

func TestDBBackupOffline(t *testing.T) {
	s := newSite(t, "first-backup", "")
	stateDir := filepath.Join(s.dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(stateDir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	j := &state.Job{Folder: "news", RelPath: "a.mp4", Path: filepath.Join(s.inbox, "a.mp4"), Size: 3, State: state.Waiting}
	if err := st.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	st.Close()
	dst := filepath.Join(s.dir, "copy.db")
	out, errOut, code := s.cli("db", "backup", dst)
	if code != exitOK || !strings.Contains(out, "backed up") {
		t.Fatalf("db backup: exit %d\n%s%s", code, out, errOut)
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	cp, err := state.Open(dst, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	got, err := cp.Get(ctx, j.ID)
	if err != nil || got.RelPath != "a.mp4" {
		t.Errorf("job in the copy: %+v, %v", got, err)
	}
}

func TestShowByRelativeAndFiledPath(t *testing.T) {
	s := newSite(t, "first-show", "")
	s.start()
	writeFile(t, filepath.Join(s.inbox, "sub", "clip.mp4"), fill("sub/clip.mp4", 1000))
	jobs := s.waitDone(1, 30*time.Second)
	for _, tc := range []struct{ dir, ref string }{
		{s.inbox, "sub/clip.mp4"},
		{filepath.Join(s.inbox, "processed"), "sub/clip.mp4"},
		{"/", filepath.Join(s.inbox, "processed", "sub", "clip.mp4")},
	} {
		cmd := exec.Command(binPath, "show", tc.ref, "--json")
		cmd.Env, cmd.Dir = s.env(), tc.dir
		out, err := cmd.Output()
		var v struct{ ID uint64 }
		json.Unmarshal(out, &v)
		if err != nil || v.ID != jobs[0].ID {
			t.Errorf("show %s from %s: %v\n%s", tc.ref, tc.dir, err, out)
		}
	}

	// Completion offers the job ids.
	if out, _, code := s.cli("__complete", "jobs"); code != exitOK || !strings.Contains(out, fmt.Sprint(jobs[0].ID)) {
		t.Errorf("job completion: exit %d, %q", code, out)
	}

	// An online backup while the daemon runs.
	dst := filepath.Join(s.dir, "online.db")
	out, errOut, code := s.cli("db", "backup", "--json", dst)
	if code != exitOK || !strings.Contains(out, `"online": true`) {
		t.Fatalf("db backup (online): exit %d\n%s%s", code, out, errOut)
	}
	cp, err := state.Open(dst, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Get(t.Context(), jobs[0].ID); err != nil {
		t.Errorf("job %d not in the online copy: %v", jobs[0].ID, err)
	}
	cp.Close()

	// Retention: a dry run names the job, the real run forgets it.
	out, _, code = s.cli("forget", "--state", "done", "--older-than", "1ms", "--dry-run", "--json")
	if code != exitOK || !strings.Contains(out, fmt.Sprint(jobs[0].ID)) {
		t.Errorf("forget --dry-run: exit %d\n%s", code, out)
	}
	out, errOut, code = s.cli("forget", "--state", "done", "--older-than", "1ms")
	if code != exitOK || !strings.Contains(out, "1 jobs forgotten") {
		t.Errorf("forget --state done: exit %d\n%s%s", code, out, errOut)
	}
	if left := s.list(); len(left) != 0 {
		t.Errorf("jobs left after forget: %+v", left)
	}
}
