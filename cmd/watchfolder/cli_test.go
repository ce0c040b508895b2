package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCheckPrintsEffectiveConfigWithoutSecrets(t *testing.T) {
	s := newSite(t, "cli-check", "")
	out, errOut, code := s.cli("check", "--config", s.cfg)
	if code != 0 {
		t.Fatalf("check exit %d: %s", code, errOut)
	}
	for _, want := range []string{"stable_after", "part_size", "[destination.archive]", "redacted env:WF_TEST_SECRET"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, minio.SecretKey) {
		t.Error("check printed the secret")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		toml string
		want []string
	}{
		{"unknown key", `
[[folder]]
name = "a"
path = "/srv/a"
destinations = ["x"]
stabel_after = "5s"
[destination.x]
type = "s3"
bucket = "b-ok"
`, []string{"stabel_after", "unknown key"}},
		{"several at once", `
[[folder]]
name = "a"
path = "relative"
destinations = ["nope"]
stable_after = "soon"
`, []string{"folder[0].path", "nope", "stable_after"}},
		{"missing bucket", `
[[folder]]
name = "a"
path = "/srv/a"
destinations = ["x"]
[destination.x]
type = "s3"
`, []string{"destination.x.bucket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".toml")
			if err := os.WriteFile(p, []byte(tt.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			s := &site{t: t, cfg: p}
			_, errOut, code := s.cli("check", "--config", p)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error output lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestListShowVersionAgainstRunningDaemon(t *testing.T) {
	s := newSite(t, "cli-list", "")
	s.start()
	data := fill("one", 300<<10)
	if err := os.WriteFile(filepath.Join(s.inbox, "one.mp4"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	jobs := s.waitDone(1, 30*time.Second)
	j := jobs[0]
	if j.Folder != "news" || j.Size != int64(len(data)) || j.Destinations[0].Object != "s3://cli-list/news/one.mp4" ||
		j.Destinations[0].State != "done" || j.Destinations[0].Type != "s3" {
		t.Errorf("list --json job = %+v", j)
	}

	out, errOut, code := s.cli("show", strconv.FormatUint(j.ID, 10), "--json")
	if code != 0 {
		t.Fatalf("show exit %d: %s", code, errOut)
	}
	var full struct {
		ID      uint64
		History []struct{ To string }
	}
	if err := json.Unmarshal([]byte(out), &full); err != nil || full.ID != j.ID || len(full.History) < 4 {
		t.Errorf("show --json = %s (%v)", out, err)
	}
	out, _, code = s.cli("show", filepath.Join(s.inbox, "one.mp4"))
	if code != 0 || !strings.Contains(out, "s3://cli-list/news/one.mp4") || !strings.Contains(out, "History:") {
		t.Errorf("show PATH: exit %d\n%s", code, out)
	}
	_, _, code = s.cli("show", "999999")
	if code != exitNotFound {
		t.Errorf("show of a missing job: exit %d, want %d", code, exitNotFound)
	}
	out, _, code = s.cli("list", "--state", "done")
	if code != 0 || !strings.Contains(out, "one.mp4") {
		t.Errorf("list text: exit %d\n%s", code, out)
	}
	_, errOut, code = s.cli("list", "--state", "bogus")
	if code != exitUsage || !strings.Contains(errOut, "bogus") {
		t.Errorf("list --state bogus: exit %d, %s", code, errOut)
	}
	out, _, code = s.cli("status")
	if code != 0 || !strings.Contains(out, "news:") || !strings.Contains(out, "done 1") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	// Read-only commands need no secrets: run list without the variable.
	noSecret := exec.Command(binPath, "list", "--json")
	noSecret.Env = []string{"WATCHFOLDER_CONFIG=" + s.cfg, "PATH=" + os.Getenv("PATH")}
	if out, err := noSecret.CombinedOutput(); err != nil || !strings.Contains(string(out), "one.mp4") {
		t.Errorf("list without the secret's variable: %v\n%s", err, out)
	}
	out, _, code = s.cli("version")
	if code != 0 || !strings.HasPrefix(out, "watchfolder ") {
		t.Errorf("version: exit %d %q", code, out)
	}
	if _, _, code = s.cli("frobnicate"); code != exitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
}
