package torture

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/mover"
)

// asEditor runs a shell command as uid 65534: the editor on the share,
// while the daemon runs as root.
func asEditor(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as editor: %s: %v\n%s", script, err, out)
	}
}

// openSiteToEditors lets uid 65534 write the site's inbox.
func openSiteToEditors(t *testing.T, s *site) {
	t.Helper()
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(s.inbox, 0o777); err != nil {
		t.Fatal(err)
	}
}

// TestEditorCannotRedirectFiling: an editor (another user) replaces the
// empty processed/ and failed/ with symlinks to a directory of their own
// and puts a symlink to a root-only file where a sidecar goes. The daemon
// (root) must never move, write or read through them: nothing appears in
// the editor's directory, the root-only file's content appears nowhere.
// Once the editor puts real directories back, everything is filed.
func TestEditorCannotRedirectFiling(t *testing.T) {
	t.Parallel()
	bucket := newBucket(t, "a")
	s := newSite(t, siteConfig{maxAttempts: 2, dests: []destSpec{{name: "archive", bucket: bucket}}})
	openSiteToEditors(t, s)
	outside, err := os.MkdirTemp("", "wf-editor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outside) })
	if err := os.Chmod(outside, 0o777); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(secret, []byte(`{"title": "ROOT-ONLY-SECRET"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	processed, failed := filepath.Join(s.inbox, "processed"), filepath.Join(s.inbox, "failed")
	s.waitFor("processed/ and failed/ made", 30*time.Second, func() (bool, string) {
		_, e1 := os.Stat(processed)
		_, e2 := os.Stat(failed)
		return e1 == nil && e2 == nil, fmt.Sprint(e1, e2)
	})
	asEditor(t, fmt.Sprintf(`set -e; cd %q
rmdir processed failed
ln -s %q processed; ln -s %q failed
printf 'good media bytes' > good.mp4
: > empty.mp4
ln -s %q clip.json
printf 'clip media bytes' > clip.mp4`, s.inbox, outside, outside, secret))

	s.waitFor("the daemon refusing the symlinks", 90*time.Second, func() (bool, string) {
		log, _ := os.ReadFile(s.logPath)
		n := strings.Count(string(log), mover.ErrSymlink.Error())
		return n >= 2, fmt.Sprintf("%d refusals logged", n)
	})
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the daemon wrote into the editor's directory: %v", ents)
	}
	jobsOut, _, _ := s.cli("list", "--json")
	log, _ := os.ReadFile(s.logPath)
	if strings.Contains(jobsOut+string(log), "ROOT-ONLY-SECRET") {
		t.Fatal("a root-only file was read through a sidecar symlink")
	}
	refusals := strings.Count(string(log), mover.ErrSymlink.Error())
	if !P.long {
		t.Logf("hostile fs: symlinked processed/ and failed/ refused (%d times), nothing written outside; repair phase: long suite only", refusals)
		s.stop()
		return
	}
	// The editor repairs the folder; the jobs waiting in moving are filed.
	asEditor(t, fmt.Sprintf(`set -e; cd %q; rm processed failed; mkdir processed failed`, s.inbox))
	s.waitIdle(3 * time.Minute)
	s.stop()
	for _, p := range []string{"processed/good.mp4", "failed/empty.mp4", "failed/empty.mp4" + daemon.ReasonSuffix, "failed/clip.mp4"} {
		if _, err := os.Lstat(filepath.Join(s.inbox, p)); err != nil {
			t.Errorf("after the repair: %v", err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the daemon wrote into the editor's directory: %v", ents)
	}
	t.Logf("hostile fs: symlinked processed/ and failed/ refused (%d times), nothing written outside, all filed after the repair", refusals)
}

// TestSecondDaemonOnOneFolderRefuses: a second daemon with its own state
// directory on a folder that a running daemon watches would upload every
// file again; it must refuse to start and name the holder.
func TestSecondDaemonOnOneFolderRefuses(t *testing.T) {
	t.Parallel()
	bucket := newBucket(t, "a")
	s := newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: bucket}}})
	s.start()
	lock := filepath.Join(s.inbox, daemon.FolderLockName)
	s.waitFor("the folder lock", 30*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(lock)
		return strings.Contains(string(b), fmt.Sprintf("pid %d ", s.pid())), string(b)
	})
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	other := regexp.MustCompile(`(?m)^state_dir = .*$`).ReplaceAllString(string(cfg), fmt.Sprintf("state_dir = %q", filepath.Join(s.dir, "state2")))
	other = regexp.MustCompile(`(?m)^control_socket = .*$`).ReplaceAllString(other, fmt.Sprintf("control_socket = %q", filepath.Join(s.dir, "ctl2.sock")))
	cfg2 := filepath.Join(s.dir, "config2.toml")
	if err := os.WriteFile(cfg2, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "run")
	cmd.Env = append(os.Environ(), "WF_TEST_SECRET="+minio.SecretKey, "WATCHFOLDER_CONFIG="+cfg2)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the second daemon ran on a watched folder:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "watched by another watchfolder") || !strings.Contains(string(out), fmt.Sprintf("pid %d", s.pid())) {
		t.Fatalf("second daemon: %v\n%s\nwant a refusal naming pid %d", err, out, s.pid())
	}
	s.drop("once.mp4", []byte("delivered by one daemon"))
	s.waitJob("once.mp4", time.Minute, func(j jobJSON) bool { return j.State == "done" })
	s.stop()
	t.Logf("hostile fs: second daemon on a watched folder refused: %s", strings.TrimSpace(lastLine(string(out))))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
