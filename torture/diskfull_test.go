package torture

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// TestStateDiskFull puts state_dir on a tiny tmpfs and drops more files than
// their jobs fit in. The daemon must not corrupt state.db: after a SIGKILL
// the file passes Check, and with space again every file is delivered once.
func TestStateDiskFull(t *testing.T) {
	if P.diskFullJobs == 0 {
		t.Skip("long suite only (needs a tmpfs mount and a few hundred jobs)")
	}
	t.Parallel()
	stateDir := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(stateDir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", stateDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): disk-full behaviour not tested", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", stateDir).Run() })
	s := newSite(t, siteConfig{stateDir: stateDir, dests: []destSpec{{name: "archive", bucket: newBucket(t, "a")}}})
	e := newExpect()
	for i := range P.diskFullJobs {
		rel := fmt.Sprintf("full/clip-%04d.mp4", i)
		data := []byte(fmt.Sprintf("small file %d", i))
		s.drop(rel, data)
		e.delivered[rel] = sum(data)
	}
	s.start()
	s.waitFor("state disk full", 2*time.Minute, func() (bool, string) {
		return strings.Contains(s.logTail(1<<20), "no space left on device"), "no ENOSPC in the log yet"
	})
	time.Sleep(2 * time.Second) // let it run into the full disk for a while, by design
	s.kill()
	enospc := strings.Count(s.logTail(1<<22), "no space left on device")
	st, err := state.Open(filepath.Join(stateDir, "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("state.db after running out of space: %v", err)
	}
	problems, err := st.Check(context.Background())
	jobs, _ := st.List(context.Background(), state.Filter{})
	st.Close()
	if err != nil || len(problems) > 0 {
		t.Errorf("state.db after running out of space: Check: %v %v", err, problems)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=64m", stateDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	s.start()
	s.waitIdle(P.settle)
	s.stop()
	fig := s.verify(e)
	t.Logf("disk full: %d ENOSPC log lines, %d jobs recorded when full, then %s", enospc, len(jobs), fig)
}
