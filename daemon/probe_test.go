package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/probe"
	"github.com/watchfolder/watchfolder/state"
)

// encode makes a short real MP4 (moov at the end) with ffmpeg.
func encode(t *testing.T, dir, name string, seconds string) []byte {
	t.Helper()
	p := filepath.Join(dir, name)
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (make test-deps installs it): %v\n%s", err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jobNamed(t *testing.T, jobs []*state.Job, name string) *state.Job {
	t.Helper()
	i := slices.IndexFunc(jobs, func(j *state.Job) bool { return j.RelPath == name })
	if i < 0 {
		t.Fatalf("no job for %s", name)
	}
	return jobs[i]
}

func TestProbeRequireStopsIncompleteExports(t *testing.T) {
	h := newHarness(t, hopts{folderExtra: `probe = "require"` + "\n" + `receipts = true`})
	whole := encode(t, t.TempDir(), "whole.mp4", "2")
	writeFile(t, filepath.Join(h.inbox, "whole.mp4"), whole)
	// A crashed export: the media data is there, the movie header never came.
	writeFile(t, filepath.Join(h.inbox, "cut.mp4"), whole[:bytes.LastIndex(whole, []byte("moov"))-4])
	writeFile(t, filepath.Join(h.inbox, "notes.mov"), content("notes", 2000))
	h.waitState(state.Done, 1, 30*time.Second)
	failed := h.waitState(state.Failed, 2, 30*time.Second)

	done := jobNamed(t, h.jobs(), "whole.mp4")
	facts := mediaFacts(done)
	if facts == nil || !facts.Checked || facts.Container != probe.MP4 || facts.Video == nil || facts.Video.Codec != "h264" ||
		facts.Video.Width != 160 || facts.Audio == nil || facts.Duration < 1900*time.Millisecond || facts.Duration > 2100*time.Millisecond {
		t.Fatalf("media facts on the delivered job: %+v", facts)
	}
	receipt, err := os.ReadFile(filepath.Join(h.processed, "whole.mp4"+ReceiptSuffix))
	if err != nil || !strings.Contains(string(receipt), `"container": "mp4"`) {
		t.Errorf("receipt lacks the media facts: %s %v", receipt, err)
	}
	if wf := webFacts(facts); len(wf) < 4 || wf[0].Value != "mp4" || wf[1].Name != "duration" || !strings.HasPrefix(wf[2].Value, "h264 160x120 25 fps") {
		t.Errorf("status page facts %+v", wf)
	}
	view, _ := json.Marshal(NewJobView(done, false))
	if !strings.Contains(string(view), `"duration_seconds":2`) {
		t.Errorf("list view lacks the duration: %s", view)
	}

	keys := minio.ListKeys(t, h.bucket)
	if len(keys) != 1 || !strings.HasSuffix(keys[0], "whole.mp4") {
		t.Errorf("objects %v: only the whole file may leave the building", keys)
	}
	for _, tc := range []struct{ name, reason string }{
		{"cut.mp4", "the export is incomplete: no movie header (moov); re-export the file"},
		{"notes.mov", "its contents are not MP4/MOV"},
	} {
		j := jobNamed(t, failed, tc.name)
		if !strings.Contains(j.Error, tc.reason) {
			t.Errorf("%s: error %q, want %q", tc.name, j.Error, tc.reason)
		}
		reason, err := os.ReadFile(filepath.Join(h.failed, tc.name+".error.txt"))
		if err != nil || !strings.Contains(string(reason), tc.reason) {
			t.Errorf("%s: reason file %q, %v", tc.name, reason, err)
		}
	}
	// The check is a committed step (the small whole.mp4 folds it into
	// its single final commit, as it does its upload).
	cut := jobNamed(t, failed, "cut.mp4")
	if !slices.ContainsFunc(cut.History, func(tr state.Transition) bool { return tr.From == state.Queued && tr.To == state.Probing }) {
		t.Errorf("no committed probing step in the history: %+v", cut.History)
	}
	if f := mediaFacts(cut); f == nil || f.Container != probe.MP4 || f.Checked {
		t.Errorf("facts of the failed job: %+v", f)
	}
	// An incomplete export gets one retry (a writer may have paused), a
	// file that is not what its name says fails at once.
	if a := jobNamed(t, failed, "cut.mp4").Attempts; a != 2 {
		t.Errorf("cut.mp4 attempts %d, want 2", a)
	}
	if a := jobNamed(t, failed, "notes.mov").Attempts; a != 1 {
		t.Errorf("notes.mov attempts %d, want 1", a)
	}
}

func TestProbeWarnDeliversAndNotes(t *testing.T) {
	h := newHarness(t, hopts{folderExtra: `probe = "warn"`})
	whole := encode(t, t.TempDir(), "whole.mp4", "1")
	writeFile(t, filepath.Join(h.inbox, "cut.mp4"), whole[:len(whole)/2])
	writeFile(t, filepath.Join(h.inbox, "take.ts"), content("take", 3000))
	jobs := h.waitState(state.Done, 2, 30*time.Second)
	cut := mediaFacts(jobNamed(t, jobs, "cut.mp4"))
	if cut == nil || !strings.Contains(cut.Problem, "the export is incomplete: the file ends inside the media data (mdat)") {
		t.Fatalf("cut.mp4 facts %+v: want the problem noted", cut)
	}
	ts := mediaFacts(jobNamed(t, jobs, "take.ts"))
	if ts == nil || ts.Checked || ts.Problem != "" {
		t.Fatalf("take.ts facts %+v: want unknown, not checked", ts)
	}
}

// A job the daemon left in probing (a crash between the probing commit and
// the next) is probed again and delivered after the restart.
func TestProbingJobResumesAfterRestart(t *testing.T) {
	h := newHarness(t, hopts{folderExtra: `probe = "require"`})
	h.proxy.SetDown(true)
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), encode(t, t.TempDir(), "clip.mp4", "1"))
	deadline := time.Now().Add(20 * time.Second)
	for len(h.jobs()) == 0 || h.jobs()[0].Attempts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("job never attempted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.stop()
	st, err := state.Open(filepath.Join(h.cfg.StateDir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := h.jobsFrom(st)[0].ID
	if _, err := st.Update(context.Background(), id, func(j *state.Job) error { j.State = state.Probing; return nil }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	h.proxy.SetDown(false)
	h.start()
	j := h.waitState(state.Done, 1, 20*time.Second)[0]
	if f := mediaFacts(j); f == nil || !f.Checked || f.Video == nil {
		t.Fatalf("facts after the restart: %+v", f)
	}
}

func (h *harness) jobsFrom(st *state.Store) []*state.Job {
	h.t.Helper()
	jobs, err := st.List(context.Background(), state.Filter{})
	if err != nil || len(jobs) == 0 {
		h.t.Fatalf("list jobs: %v (%d)", err, len(jobs))
	}
	return jobs
}
