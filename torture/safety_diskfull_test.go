package torture

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStateDiskFullRecoversWithoutRestart runs the daemon with state_dir on
// a tiny tmpfs until commits fail with ENOSPC, drops more files while the
// disk is full, then gives the disk room again — without restarting the
// daemon. Every file, including those found while the disk was full, must
// be delivered exactly once: no job may be stranded by a failed commit.
func TestStateDiskFullRecoversWithoutRestart(t *testing.T) {
	t.Parallel()
	stateDir := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(stateDir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", stateDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): disk-full behaviour not tested", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", stateDir).Run() })
	s := newSite(t, siteConfig{stateDir: stateDir, dests: []destSpec{{name: "archive", bucket: newBucket(t, "full")}}})
	e := newExpect()
	drop := func(prefix string, n int) {
		for i := range n {
			rel := fmt.Sprintf("%s/clip-%04d.mp4", prefix, i)
			data := []byte(fmt.Sprintf("%s small file %d %s", prefix, i, strings.Repeat("x", i)))
			s.drop(rel, data)
			e.delivered[rel] = sum(data)
		}
	}
	drop("before", 150)
	s.start()
	pid := s.pid()
	s.waitFor("state disk full", 2*time.Minute, func() (bool, string) {
		return strings.Contains(s.logTail(1<<20), "no space left on device"), "no ENOSPC in the log yet"
	})
	// Files that appear while nothing can be recorded.
	drop("while-full", 20)
	time.Sleep(3 * time.Second) // the daemon runs into the full disk for a while, by design
	if out, err := exec.Command("mount", "-o", "remount,size=64m", stateDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	s.waitFor("every file has a finished job", P.settle, func() (bool, string) {
		jobs, err := s.list()
		if err != nil {
			return false, err.Error()
		}
		done := map[string]bool{}
		unfinished := 0
		for _, j := range jobs {
			if j.State == "done" {
				done[j.RelPath] = true
			} else {
				unfinished++
			}
		}
		for rel := range e.delivered {
			if !done[rel] {
				return false, fmt.Sprintf("%s not done (%d of %d done, %d unfinished jobs)", rel, len(done), len(e.delivered), unfinished)
			}
		}
		return unfinished == 0, fmt.Sprintf("%d unfinished jobs", unfinished)
	})
	if s.pid() != pid {
		t.Fatalf("the daemon was restarted (pid %d, now %d)", pid, s.pid())
	}
	enospc := strings.Count(s.logTail(1<<22), "no space left on device")
	s.stop()
	fig := s.verify(e)
	t.Logf("disk full: no restart, %d ENOSPC log lines, then %s", enospc, fig)
}
