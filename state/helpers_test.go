package state

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testClock is a clock that moves one second per reading, so every write in
// a test has a distinct, predictable time.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openTest opens a fresh store in a temp dir. Syncing is turned off: these
// tests exercise logic, not the disk, and fsyncs would dominate run time on
// shared CI machines. Durability tests reopen the file, which goes through
// the page cache either way.
func openTest(t testing.TB, clk *testClock) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	opts := Options{}
	if clk != nil {
		opts.Now = clk.Now
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.db.NoSync = true
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newJob(folder, rel string, st State) *Job {
	return &Job{
		Folder:  folder,
		RelPath: rel,
		Path:    "/srv/watch/" + folder + "/" + rel,
		Size:    1234,
		ModTime: time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC),
		Inode:   42,
		State:   st,
		Destinations: []Dest{
			{Name: "archive", Type: "s3", State: DestPending},
		},
	}
}

func mustCreate(t testing.TB, s *Store, jobs ...*Job) {
	t.Helper()
	if err := s.CreateMany(context.Background(), jobs); err != nil {
		t.Fatalf("CreateMany: %v", err)
	}
}

// setState returns an Update function that moves a job to st.
func setState(st State) func(*Job) error {
	return func(j *Job) error { j.State = st; return nil }
}

// mustHealthy fails the test when Check finds anything.
func mustHealthy(t testing.TB, s *Store) {
	t.Helper()
	problems, err := s.Check(context.Background())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, p := range problems {
		t.Errorf("Check: %s", p)
	}
}

func ids(jobs []*Job) []uint64 {
	out := make([]uint64, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}
