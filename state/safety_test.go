package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A zero-byte or truncated state.db is refused with a message that says
// what is wrong and how to recover; bbolt would otherwise initialise the
// empty file as a new database (the daemon starting with no history) or
// read beyond the end of the truncated one.
func TestOpenRefusesEmptyOrTruncatedFile(t *testing.T) {
	ctx := context.Background()
	// A real database with some jobs, to cut short.
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		j := newJob("f", "clip-"+strings.Repeat("x", 100)+string(rune('a'+i%26))+".mp4", Queued)
		j.RelPath += "-" + time.Duration(i).String()
		if err := s.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"zero bytes", nil, "is empty (0 bytes)"},
		{"one page", full[:page], "truncated"},
		{"meta pages only", full[:2*page], "truncated"},
		{"half", full[:len(full)/2/page*page], "truncated"},
	}
	for _, tt := range tests {
		for _, ro := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := Open(path, Options{ReadOnly: ro})
			if err == nil {
				st.Close()
				t.Fatalf("%s (read-only %v): Open succeeded", tt.name, ro)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s (read-only %v): %v, want ErrCorrupt", tt.name, ro, err)
			}
			for _, w := range []string{tt.want, path, "db check", "backup"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s (read-only %v): error %q does not say %q", tt.name, ro, err, w)
				}
			}
			// The file is left exactly as it was: nothing was initialised.
			if after, _ := os.ReadFile(path); len(after) != len(tt.data) {
				t.Errorf("%s (read-only %v): file is now %d bytes, was %d", tt.name, ro, len(after), len(tt.data))
			}
		}
	}
	// The intact file still opens.
	st, err := Open(good, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("intact file: %v", err)
	}
	st.Close()
}

// A reader that keeps its Store open (`watchfolder list | less` with the
// daemon stopped) does not keep the daemon from opening the database.
func TestReadOnlyStoreHoldsNoLockBetweenReads(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	w, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Create(ctx, newJob("f", "a.mp4", Queued)); err != nil {
		t.Fatal(err)
	}
	w.Close()

	r, err := Open(path, Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if jobs, err := r.List(ctx, Filter{}); err != nil || len(jobs) != 1 {
		t.Fatalf("List = %d jobs, %v", len(jobs), err)
	}
	// The reader is still open (its output is being paged).
	start := time.Now()
	w, err = Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("daemon's Open while a reader is open: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("daemon's Open waited %v for the reader", d)
	}
	if _, err := r.Get(ctx, 1); !errors.Is(err, ErrLocked) {
		t.Errorf("reader's Get while the daemon holds the file: %v, want ErrLocked", err)
	}
	w.Close()
	if _, err := r.Get(ctx, 1); err != nil {
		t.Errorf("reader's Get after the daemon stopped: %v", err)
	}
}

func TestForPathNewestFirst(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	var ids []uint64
	for range 3 {
		j := newJob("f", "a.mp4", Queued)
		if err := s.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	if err := s.Create(ctx, newJob("f", "a.mp4.other", Queued)); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.ForPath(ctx, "f", "a.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 3 || jobs[0].ID != ids[2] || jobs[2].ID != ids[0] {
		t.Fatalf("ForPath = %d jobs (first %v), want 3 newest first", len(jobs), jobs)
	}
}

func TestOutboxSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.OutboxAdd(ctx, "hook-a", "done", []byte(`{"job":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.OutboxAdd(ctx, "hook-b", "failed", []byte(`{"job":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.OutboxDelete(ctx, a); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != b || got[0].Hook != "hook-b" || got[0].Event != "failed" || string(got[0].Body) != `{"job":2}` {
		t.Fatalf("outbox after reopen = %+v", got)
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("Check with an outbox: %v %v", problems, err)
	}
}

// Only commits the disk refused count as write failures, not changes the
// caller's own function rejected.
func TestWriteFailuresCountsRefusedCommits(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	j := newJob("f", "a.mp4", Queued)
	if err := s.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, j.ID, func(*Job) error { return errors.New("no") }); err == nil {
		t.Fatal("Update with a failing fn succeeded")
	}
	if n := s.WriteFailures(); n != 0 {
		t.Fatalf("WriteFailures after a refused fn = %d, want 0", n)
	}
	// A database whose file can no longer grow: writes fail in commit.
	s.db.MaxSize = 1
	big := strings.Repeat("x", 1<<20)
	if _, err := s.Update(ctx, j.ID, func(j *Job) error { j.Error = big; return nil }); err == nil {
		t.Fatal("Update beyond MaxSize succeeded")
	}
	if n := s.WriteFailures(); n == 0 {
		t.Fatal("WriteFailures after a failed commit = 0")
	}
}

func TestPruneRemovesOldFinishedJobsOnly(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	s := openTest(t, clk)
	mk := func(rel string, to State) *Job {
		j := newJob("f", rel, Queued)
		if err := s.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		if to == Queued {
			return j
		}
		for _, st := range []State{Uploading, Moving, to} {
			if to == Gone && st != Gone {
				continue
			}
			var err error
			if j, err = s.Update(ctx, j.ID, func(j *Job) error { j.State = st; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		return j
	}
	// More than one prune batch, made in a few transactions.
	var oldDone []*Job
	for i := range pruneBatch + 200 {
		oldDone = append(oldDone, newJob("f", fmt.Sprintf("old-%d.mp4", i), Queued))
	}
	if err := s.CreateMany(ctx, oldDone); err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(oldDone))
	for i, j := range oldDone {
		ids[i] = j.ID
	}
	for _, st := range []State{Uploading, Moving, Done} {
		if _, err := s.UpdateMany(ctx, ids, func(j *Job) error { j.State = st; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	oldFailed := mk("old-failed.mp4", Failed)
	oldActive := mk("old-active.mp4", Queued)
	cutoff := clk.Now()
	newDone := mk("new.mp4", Done)

	if _, err := s.Prune(ctx, cutoff, []State{Queued}); err == nil {
		t.Fatal("Prune of queued jobs accepted")
	}
	n, err := s.Prune(ctx, cutoff, []State{Done, Gone})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(oldDone) {
		t.Fatalf("pruned %d, want %d", n, len(oldDone))
	}
	for _, j := range []*Job{oldFailed, oldActive, newDone} {
		if _, err := s.Get(ctx, j.ID); err != nil {
			t.Errorf("job %s (%s) is gone: %v", j.RelPath, j.State, err)
		}
	}
	if _, err := s.Get(ctx, oldDone[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("old done job still there: %v", err)
	}
	counts, _ := s.Counts(ctx)
	if counts["f"][Done] != 1 || counts["f"][Failed] != 1 || counts["f"][Queued] != 1 {
		t.Errorf("counts after prune: %v", counts["f"])
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("Check after prune: %v %v", problems, err)
	}
}

func TestBackupIsAConsistentOpenableCopy(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	for i := range 50 {
		if err := s.Create(ctx, newJob("f", fmt.Sprintf("a-%d.mp4", i), Queued)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	var size int64
	n, err := s.Backup(ctx, &buf, func(sz int64) { size = sz })
	if err != nil {
		t.Fatal(err)
	}
	if n != size || int64(buf.Len()) != n {
		t.Fatalf("backup wrote %d bytes, announced %d, buffer %d", n, size, buf.Len())
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer c.Close()
	jobs, err := c.List(ctx, Filter{})
	if err != nil || len(jobs) != 50 {
		t.Fatalf("backup holds %d jobs (%v), want 50", len(jobs), err)
	}
	if problems, err := c.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("Check of the backup: %v %v", problems, err)
	}
}

// ErrLocked names the process holding the lock, so an operator knows what
// to stop (a forgotten `watchfolder list | less`, another daemon).
func TestErrLockedNamesTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// flock(1) from util-linux holds an exclusive lock while sleep runs.
	cmd := exec.Command("flock", "--exclusive", path, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st *Store
		st, err = Open(path, Options{})
		if st != nil {
			st.Close() // flock has not taken the lock yet
		}
		if errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while flock holds the file: %v", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) || !strings.Contains(err.Error(), "writing") {
		t.Fatalf("error %q does not name the holder (pid %d)", err, cmd.Process.Pid)
	}
}

// A first start writes the new database under a temporary name and links
// it in only once it is complete and synced, so a power cut during it
// leaves either no state.db (the next start creates one) or a whole one,
// never the 0-byte file that is refused as truncated. A temporary file
// left by such a cut is removed.
func TestNewDatabaseAppearsWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	stale := filepath.Join(dir, ".state.db.new-123")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hooked := false
	st, err := Open(path, Options{beforeLink: func(tmp string) {
		hooked = true
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists before the new database is complete (lstat: %v)", path, err)
		}
		if err := checkFile(tmp); err != nil {
			t.Errorf("the database about to be linked is not whole: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !hooked {
		t.Fatal("the new database was not made under a temporary name")
	}
	if err := st.Create(context.Background(), &Job{Folder: "f", RelPath: "a.mp4", Path: "/w/a.mp4", State: Queued}); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".state.db.new-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
