// Package storetest is the behavioural contract of a job store, run
// against every backend (bbolt in package state's tests, etcd in
// etcdstore's): the same calls must give the same answers.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// Store is the part of a job store the contract covers.
type Store interface {
	Create(ctx context.Context, j *state.Job) error
	CreateMany(ctx context.Context, jobs []*state.Job) error
	Get(ctx context.Context, id uint64) (*state.Job, error)
	Update(ctx context.Context, id uint64, fn func(*state.Job) error) (*state.Job, error)
	UpdateMany(ctx context.Context, ids []uint64, fn func(*state.Job) error) ([]*state.Job, error)
	ForPath(ctx context.Context, folder, relpath string) ([]*state.Job, error)
	Latest(ctx context.Context, folder, relpath string) (*state.Job, error)
	List(ctx context.Context, f state.Filter) ([]*state.Job, error)
	Unfinished(ctx context.Context) ([]*state.Job, error)
	Counts(ctx context.Context) (map[string]map[state.State]int, error)
	Delete(ctx context.Context, id uint64) error
	Prune(ctx context.Context, olderThan time.Time, states []state.State) (int, error)
	OutboxAdd(ctx context.Context, hook, event string, body []byte) (uint64, error)
	OutboxDelete(ctx context.Context, id uint64) error
	Outbox(ctx context.Context) ([]state.OutboxEntry, error)
}

// Run runs the contract; open returns an empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"CreateRejects", testCreateRejects},
		{"UpdateErrors", testUpdateErrors},
		{"IndexesAndCounts", testIndexesAndCounts},
		{"Latest", testLatest},
		{"List", testList},
		{"Bulk", testBulk},
		{"Concurrent", testConcurrent},
		{"DeletePrune", testDeletePrune},
		{"Outbox", testOutbox},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// NewJob is a job as the daemon creates it.
func NewJob(folder, rel string, st state.State) *state.Job {
	return &state.Job{
		Folder: folder, RelPath: rel, Path: "/srv/watch/" + folder + "/" + rel,
		Size: 1234, ModTime: time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC), Inode: 42, State: st,
		Destinations: []state.Dest{{Name: "archive", Type: "s3", State: state.DestPending}},
	}
}

func mustCreate(t *testing.T, s Store, jobs ...*state.Job) {
	t.Helper()
	if err := s.CreateMany(context.Background(), jobs); err != nil {
		t.Fatalf("CreateMany: %v", err)
	}
}

func setState(st state.State) func(*state.Job) error {
	return func(j *state.Job) error { j.State = st; return nil }
}

func ids(jobs []*state.Job) []uint64 {
	out := make([]uint64, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func testRoundTrip(t *testing.T, s Store) {
	ctx := context.Background()
	j := NewJob("news", "sub/clip.mp4", state.Queued)
	j.Destinations[0].Checkpoint = []byte(`{"upload_id":"u1","parts":[{"n":1,"etag":"e"}]}`)
	mustCreate(t, s, j)
	if j.ID == 0 || len(j.History) != 1 || j.History[0].To != state.Queued || j.Created.IsZero() {
		t.Fatalf("created job = %+v", j)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("Get = %+v\nwant %+v", got, j)
	}
	upd, err := s.Update(ctx, j.ID, func(j *state.Job) error {
		j.State = state.Uploading
		j.Dest("archive").BytesDone = 1000
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	last := upd.History[len(upd.History)-1]
	if last.From != state.Queued || last.To != state.Uploading || upd.Dest("archive").BytesDone != 1000 {
		t.Fatalf("after update: %+v", upd)
	}
	got, err = s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, upd) {
		t.Fatalf("Get after update = %+v\nwant %+v", got, upd)
	}
	two := NewJob("news", "b.mp4", state.Waiting)
	mustCreate(t, s, two)
	if two.ID <= j.ID {
		t.Errorf("second id %d not above first %d", two.ID, j.ID)
	}
}

func testCreateRejects(t *testing.T, s Store) {
	ctx := context.Background()
	created := NewJob("f", "before.mp4", state.Queued)
	mustCreate(t, s, created)
	twice := NewJob("f", "twice.mp4", state.Queued)
	tests := []struct {
		name string
		job  *state.Job
		want string
	}{
		{"nil", nil, "nil"},
		{"already created", created, "already created"},
		{"empty folder", NewJob("", "a.mp4", state.Queued), "empty folder"},
		{"NUL", NewJob("f", "a\x00b.mp4", state.Queued), "NUL"},
		{"bad state", NewJob("f", "a.mp4", state.Done), "illegal"},
		{"twice", twice, "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := NewJob("f", "ok.mp4", state.Queued)
			batch := []*state.Job{ok, tt.job}
			if tt.job == twice {
				batch = append(batch, twice)
			}
			err := s.CreateMany(ctx, batch)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if ok.ID != 0 {
				t.Errorf("valid job got id %d from a refused batch", ok.ID)
			}
		})
	}
	all, err := s.List(ctx, state.Filter{})
	if err != nil || len(all) != 1 {
		t.Fatalf("List = %d jobs, %v; want 1", len(all), err)
	}
}

func testUpdateErrors(t *testing.T, s Store) {
	ctx := context.Background()
	j := NewJob("f", "a.mp4", state.Queued)
	mustCreate(t, s, j)
	sentinel := errors.New("worker says no")
	tests := []struct {
		name string
		id   uint64
		fn   func(*state.Job) error
		want error
		text string
	}{
		{"fn error", j.ID, func(j *state.Job) error { j.State = state.Uploading; return sentinel }, sentinel, "worker says no"},
		{"missing", j.ID + 999, setState(state.Uploading), state.ErrNotFound, "not found"},
		{"id changed", j.ID, func(j *state.Job) error { j.ID = 7777; return nil }, nil, "changed the id"},
		{"illegal", j.ID, setState(state.Done), state.ErrIllegalTransition, "queued -> done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Update(ctx, tt.id, tt.fn)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.text)
			}
			got, err := s.Get(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, j) {
				t.Fatalf("job changed by a failed update: %+v", got)
			}
		})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Update(cancelled, j.ID, setState(state.Uploading)); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with cancelled ctx: %v", err)
	}
}

func testIndexesAndCounts(t *testing.T, s Store) {
	ctx := context.Background()
	a, b, c := NewJob("news", "a.mp4", state.Queued), NewJob("news", "b.mp4", state.Waiting), NewJob("sport", "a.mp4", state.Queued)
	mustCreate(t, s, a, b, c)
	if _, err := s.Update(ctx, a.ID, setState(state.Uploading)); err != nil {
		t.Fatal(err)
	}
	// Renaming moves the path index.
	if _, err := s.Update(ctx, b.ID, func(j *state.Job) error { j.RelPath = "renamed.mp4"; return nil }); err != nil {
		t.Fatal(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[state.State]int{
		"news":  {state.Uploading: 1, state.Waiting: 1},
		"sport": {state.Queued: 1},
	}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("Counts = %v, want %v", counts, want)
	}
	if got, _ := s.ForPath(ctx, "news", "b.mp4"); len(got) != 0 {
		t.Errorf("old path still indexed: %v", ids(got))
	}
	if got, _ := s.ForPath(ctx, "news", "renamed.mp4"); len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("ForPath(renamed) = %v", ids(got))
	}
	up, err := s.List(ctx, state.Filter{States: []state.State{state.Uploading}})
	if err != nil || !slices.Equal(ids(up), []uint64{a.ID}) {
		t.Errorf("List(uploading) = %v, %v", ids(up), err)
	}
}

func testLatest(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.Latest(ctx, "f", "a.mp4"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Latest on empty: %v", err)
	}
	old := NewJob("f", "a.mp4", state.Queued)
	mustCreate(t, s, old)
	for _, st := range []state.State{state.Uploading, state.Moving, state.Failed} {
		if _, err := s.Update(ctx, old.ID, setState(st)); err != nil {
			t.Fatal(err)
		}
	}
	newer := NewJob("f", "a.mp4", state.Queued)
	mustCreate(t, s, newer)
	if got, err := s.Latest(ctx, "f", "a.mp4"); err != nil || got.ID != newer.ID {
		t.Fatalf("Latest = %v, %v; want %d", got, err, newer.ID)
	}
	for _, st := range []state.State{state.Uploading, state.Moving, state.Done} {
		if _, err := s.Update(ctx, newer.ID, setState(st)); err != nil {
			t.Fatal(err)
		}
	}
	// An operator retries the old failed job: it owns the path again.
	if _, err := s.Update(ctx, old.ID, setState(state.Queued)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Latest(ctx, "f", "a.mp4"); err != nil || got.ID != old.ID {
		t.Fatalf("Latest = %v, %v; want retried %d", got, err, old.ID)
	}
	all, err := s.ForPath(ctx, "f", "a.mp4")
	if err != nil || !slices.Equal(ids(all), []uint64{newer.ID, old.ID}) {
		t.Fatalf("ForPath = %v, %v", ids(all), err)
	}
	// "a.mp4" must not match "a.mp4.part" or "a.mp".
	mustCreate(t, s, NewJob("f", "a.mp4.part", state.Queued), NewJob("f", "a.mp", state.Queued))
	if all, _ := s.ForPath(ctx, "f", "a.mp4"); len(all) != 2 {
		t.Errorf("ForPath matched other paths: %v", ids(all))
	}
}

func testList(t *testing.T, s Store) {
	ctx := context.Background()
	var jobs []*state.Job
	for i := range 10 {
		folder := "news"
		if i%2 == 1 {
			folder = "sport"
		}
		jobs = append(jobs, NewJob(folder, fmt.Sprintf("c%d.mp4", i), state.Queued))
	}
	mustCreate(t, s, jobs...)
	for _, j := range jobs[:3] {
		if _, err := s.Update(ctx, j.ID, setState(state.Uploading)); err != nil {
			t.Fatal(err)
		}
	}
	desc := ids(jobs)
	slices.Reverse(desc)
	tests := []struct {
		name string
		f    state.Filter
		want []uint64
	}{
		{"all", state.Filter{}, desc},
		{"limit", state.Filter{Limit: 3}, desc[:3]},
		{"after", state.Filter{AfterID: desc[2], Limit: 2}, desc[3:5]},
		{"states merged", state.Filter{States: []state.State{state.Uploading, state.Queued}, Limit: 4}, desc[:4]},
		{"uploading", state.Filter{States: []state.State{state.Uploading}}, []uint64{jobs[2].ID, jobs[1].ID, jobs[0].ID}},
		{"folder", state.Filter{Folder: "sport", Limit: 2}, []uint64{jobs[9].ID, jobs[7].ID}},
		{"folder+state", state.Filter{Folder: "news", States: []state.State{state.Uploading}}, []uint64{jobs[2].ID, jobs[0].ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.f, ids(got), tt.want)
			}
		})
	}
	if _, err := s.List(ctx, state.Filter{States: []state.State{"bogus"}}); err == nil {
		t.Error("List accepted an unknown state")
	}
	un, err := s.Unfinished(ctx)
	if err != nil || !slices.Equal(ids(un), ids(jobs)) {
		t.Errorf("Unfinished = %v, %v; want oldest first %v", ids(un), err, ids(jobs))
	}
}

// testBulk creates more jobs than fit in one etcd transaction.
func testBulk(t *testing.T, s Store) {
	ctx := context.Background()
	const n = 300
	jobs := make([]*state.Job, n)
	for i := range jobs {
		jobs[i] = NewJob("burst", fmt.Sprintf("f%04d.mp4", i), state.Waiting)
	}
	mustCreate(t, s, jobs...)
	seen := map[uint64]bool{}
	for _, j := range jobs {
		if j.ID == 0 || seen[j.ID] {
			t.Fatalf("job %s: id %d (zero or duplicate)", j.RelPath, j.ID)
		}
		seen[j.ID] = true
	}
	upd, err := s.UpdateMany(ctx, ids(jobs), setState(state.Queued))
	if err != nil {
		t.Fatal(err)
	}
	if len(upd) != n || upd[n-1].State != state.Queued || upd[0].ID != jobs[0].ID {
		t.Fatalf("UpdateMany returned %d jobs", len(upd))
	}
	counts, err := s.Counts(ctx)
	if err != nil || counts["burst"][state.Queued] != n || len(counts["burst"]) != 1 {
		t.Fatalf("Counts = %v, %v", counts, err)
	}
	// One illegal change refuses the batch it is in.
	if _, err := s.UpdateMany(ctx, ids(jobs[:5]), setState(state.Done)); !errors.Is(err, state.ErrIllegalTransition) {
		t.Fatalf("UpdateMany illegal: %v", err)
	}
}

// testConcurrent: updates of one job from many goroutines are serialised,
// none is lost.
func testConcurrent(t *testing.T, s Store) {
	ctx := context.Background()
	j := NewJob("f", "hot.mp4", state.Queued)
	mustCreate(t, s, j)
	const workers, rounds = 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range rounds {
				_, err := s.Update(ctx, j.ID, func(j *state.Job) error {
					j.Attempts++
					if j.State == state.Uploading {
						j.State = state.Retry
					} else {
						j.State = state.Uploading
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != workers*rounds || got.State != state.Retry {
		t.Errorf("attempts %d state %s, want %d retry", got.Attempts, got.State, workers*rounds)
	}
	counts, _ := s.Counts(ctx)
	if !reflect.DeepEqual(counts, map[string]map[state.State]int{"f": {state.Retry: 1}}) {
		t.Errorf("Counts = %v", counts)
	}
}

func testDeletePrune(t *testing.T, s Store) {
	ctx := context.Background()
	a, b := NewJob("f", "a.mp4", state.Queued), NewJob("f", "b.mp4", state.Queued)
	mustCreate(t, s, a, b)
	if err := s.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, a.ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := s.Delete(ctx, a.ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Delete twice: %v", err)
	}
	if got, _ := s.ForPath(ctx, "f", "a.mp4"); len(got) != 0 {
		t.Errorf("path index kept: %v", ids(got))
	}
	for _, st := range []state.State{state.Uploading, state.Moving, state.Done} {
		if _, err := s.Update(ctx, b.ID, setState(st)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Prune(ctx, time.Now().Add(24*time.Hour), nil)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if counts, _ := s.Counts(ctx); len(counts) != 0 {
		t.Errorf("Counts after prune = %v", counts)
	}
}

func testOutbox(t *testing.T, s Store) {
	ctx := context.Background()
	id1, err := s.OutboxAdd(ctx, "h", "done", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.OutboxAdd(ctx, "h", "failed", []byte(`{"a":2}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Outbox(ctx)
	if err != nil || len(got) != 2 || got[0].ID != id1 || got[1].ID != id2 || got[1].Event != "failed" {
		t.Fatalf("Outbox = %+v, %v", got, err)
	}
	if err := s.OutboxDelete(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if err := s.OutboxDelete(ctx, id1); err != nil {
		t.Errorf("deleting a missing entry: %v", err)
	}
	if got, _ := s.Outbox(ctx); len(got) != 1 || got[0].ID != id2 {
		t.Errorf("Outbox after delete = %+v", got)
	}
}
