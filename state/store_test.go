package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestCreateGetUpdateRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	s := openTest(t, clk)

	j := newJob("news", "sub/clip.mp4", Queued)
	j.Destinations[0].Checkpoint = json.RawMessage(`{"upload_id":"u1","parts":[{"n":1,"etag":"e"}]}`)
	mustCreate(t, s, j)
	if j.ID != 1 {
		t.Fatalf("first id = %d, want 1", j.ID)
	}
	if j.Created.IsZero() || !j.Created.Equal(j.Updated) {
		t.Fatalf("Created %v Updated %v", j.Created, j.Updated)
	}
	if len(j.History) != 1 || j.History[0].To != Queued || j.History[0].From != "" {
		t.Fatalf("history after create = %+v", j.History)
	}

	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("Get = %+v\nwant %+v", got, j)
	}

	upd, err := s.Update(ctx, j.ID, func(j *Job) error {
		j.State = Uploading
		j.Dest("archive").State = DestUploading
		j.Dest("archive").BytesDone = 1000
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !upd.Updated.After(j.Updated) || !upd.Created.Equal(j.Created) {
		t.Errorf("Updated %v (was %v), Created %v (was %v)", upd.Updated, j.Updated, upd.Created, j.Created)
	}
	last := upd.History[len(upd.History)-1]
	if last.From != Queued || last.To != Uploading || !last.At.Equal(upd.Updated) {
		t.Errorf("last history entry = %+v", last)
	}
	got, err = s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, upd) {
		t.Fatalf("Get after Update = %+v\nwant %+v", got, upd)
	}
	if got.Dest("archive").BytesDone != 1000 || string(got.Destinations[0].Checkpoint) != string(j.Destinations[0].Checkpoint) {
		t.Errorf("destination not kept: %+v", got.Destinations[0])
	}

	// A same-state write still stamps Updated but adds no history.
	again, err := s.Update(ctx, j.ID, func(j *Job) error { j.Dest("archive").BytesDone = 2000; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(again.History) != len(upd.History) || !again.Updated.After(upd.Updated) {
		t.Errorf("same-state update: history %d (was %d), Updated %v (was %v)",
			len(again.History), len(upd.History), again.Updated, upd.Updated)
	}
	mustHealthy(t, s)
}

func TestCreateRejects(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	created := newJob("f", "done-before.mp4", Queued)
	mustCreate(t, s, created)
	twice := newJob("f", "twice.mp4", Queued) // passed twice in one batch

	tests := []struct {
		name string
		job  *Job
		want string
	}{
		{"nil", nil, "nil"},
		{"already created", created, "already created"},
		{"empty folder", newJob("", "a.mp4", Queued), "empty folder"},
		{"empty relpath", newJob("f", "", Queued), "empty relpath"},
		{"NUL in relpath", newJob("f", "a\x00b.mp4", Queued), "NUL"},
		{"NUL in folder", newJob("f\x00g", "a.mp4", Queued), "NUL"},
		{"bad state", newJob("f", "a.mp4", Done), "illegal"},
		{"same job twice", twice, "given twice"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := newJob("f", "ok.mp4", Queued)
			batch := []*Job{ok, tt.job}
			if tt.job == twice {
				batch = append(batch, twice)
			}
			err := s.CreateMany(ctx, batch)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			// All or nothing: the valid job was not created either.
			if ok.ID != 0 {
				t.Errorf("valid job got id %d from a failed CreateMany", ok.ID)
			}
		})
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Jobs != 1 || st.FileSize <= 0 || st.DataSize <= 0 || st.DataSize > st.FileSize {
		t.Errorf("Stats = %+v, want 1 job", st)
	}
}

func TestUpdateErrors(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	j := newJob("f", "a.mp4", Queued)
	mustCreate(t, s, j)
	sentinel := errors.New("worker says no")

	tests := []struct {
		name string
		id   uint64
		fn   func(*Job) error
		want error  // errors.Is target, or nil to check wantText only
		text string // substring of the error
	}{
		{"fn error", j.ID, func(j *Job) error { j.State = Uploading; j.Error = "x"; return sentinel }, sentinel, "worker says no"},
		{"missing job", 999, setState(Uploading), ErrNotFound, "job 999"},
		{"id changed", j.ID, func(j *Job) error { j.ID = 7; return nil }, nil, "changed the id"},
		{"relpath emptied", j.ID, func(j *Job) error { j.RelPath = ""; return nil }, nil, "empty relpath"},
		{"illegal", j.ID, setState(Done), ErrIllegalTransition, "queued -> done"},
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
	if _, err := s.Update(cancelled, j.ID, setState(Uploading)); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with cancelled ctx: %v", err)
	}
	if _, err := s.List(cancelled, Filter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("List with cancelled ctx: %v", err)
	}
}

func TestUpdatePassesOnCallerPanic(t *testing.T) {
	s := openTest(t, nil)
	j := newJob("f", "a.mp4", Queued)
	mustCreate(t, s, j)
	defer func() {
		if r := recover(); r != "caller bug" {
			t.Fatalf("recovered %v, want the caller's own panic", r)
		}
		// The transaction was rolled back: the store still works.
		if _, err := s.Update(context.Background(), j.ID, setState(Uploading)); err != nil {
			t.Fatalf("Update after a panicking fn: %v", err)
		}
	}()
	_, _ = s.Update(context.Background(), j.ID, func(*Job) error { panic("caller bug") })
	t.Fatal("panic was swallowed")
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, newTestClock())
	j := newJob("f", "a.mp4", Queued)
	mustCreate(t, s, j)

	steps := []struct {
		to    State
		err   string
		note  string
		wantN int // history length after the step
	}{
		{Uploading, "", "", 2},
		{Uploading, "", "archive: part 1 uploaded", 3}, // note only
		{Retry, "connection reset", "", 4},
		{Uploading, "", "", 5},
	}
	for i, st := range steps {
		got, err := s.Update(ctx, j.ID, func(j *Job) error {
			j.State, j.Error = st.to, st.err
			if st.note != "" {
				j.Note("archive", st.note)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if len(got.History) != st.wantN {
			t.Fatalf("step %d: history %d entries, want %d: %+v", i, len(got.History), st.wantN, got.History)
		}
		last := got.History[len(got.History)-1]
		switch {
		case st.note != "" && (last.Note != st.note || last.Dest != "archive" || last.From != ""):
			t.Errorf("step %d: note entry = %+v", i, last)
		case st.note == "" && (last.To != st.to || last.Error != st.err):
			t.Errorf("step %d: transition entry = %+v, want to %s error %q", i, last, st.to, st.err)
		}
	}

	// A job that retries forever: 301 transitions in one UpdateMany (the id
	// repeated), each seeing the previous one's write.
	const flips = 301
	batch := slices.Repeat([]uint64{j.ID}, flips)
	out, err := s.UpdateMany(ctx, batch, func(j *Job) error {
		if j.State == Uploading {
			j.State = Retry
		} else {
			j.State = Uploading
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := out[len(out)-1]
	if got.State != Retry { // odd number of flips from Uploading
		t.Fatalf("state after flips = %s", got.State)
	}
	if len(got.History) != MaxHistory {
		t.Fatalf("history length %d, want cap %d", len(got.History), MaxHistory)
	}
	if first := got.History[0]; first.From != "" || first.To != Queued {
		t.Errorf("first entry not kept: %+v", first)
	}
	if last := got.History[MaxHistory-1]; last.From != Uploading || last.To != Retry {
		t.Errorf("newest entry not kept: %+v", last)
	}
	if want := 5 + flips - MaxHistory; got.HistoryDropped != want {
		t.Errorf("HistoryDropped = %d, want %d", got.HistoryDropped, want)
	}
}

func TestNoteCap(t *testing.T) {
	j := &Job{State: Uploading}
	for i := range 250 {
		j.Note("d", fmt.Sprint(i))
	}
	if len(j.History) != MaxHistory || j.HistoryDropped != 50 {
		t.Fatalf("len %d dropped %d", len(j.History), j.HistoryDropped)
	}
	if j.History[0].Note != "0" || j.History[1].Note != "51" || j.History[MaxHistory-1].Note != "249" {
		t.Fatalf("kept %q, %q ... %q", j.History[0].Note, j.History[1].Note, j.History[MaxHistory-1].Note)
	}
	if j.History[0].To != Uploading || j.History[0].Dest != "d" {
		t.Fatalf("note entry = %+v", j.History[0])
	}
}

func TestIndexesAndCounts(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	var jobs []*Job
	for i := range 6 {
		jobs = append(jobs, newJob("news", fmt.Sprintf("n%d.mp4", i), Queued))
	}
	jobs = append(jobs, newJob("sport", "s0.mp4", Waiting), newJob("sport", "s1.mp4", Queued))
	mustCreate(t, s, jobs...)

	for _, id := range []uint64{1, 2, 3} {
		if _, err := s.Update(ctx, id, setState(Uploading)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdateMany(ctx, []uint64{1, 1, 1}, func(j *Job) error {
		j.State = map[State]State{Uploading: Registering, Registering: Moving, Moving: Done}[j.State]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, 7, setState(Gone)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}

	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[State]int{
		"news":  {Done: 1, Uploading: 1, Queued: 3},
		"sport": {Queued: 1},
	}
	if !reflect.DeepEqual(counts, want) {
		t.Fatalf("Counts = %v, want %v", counts, want)
	}
	for _, tt := range []struct {
		states []State
		want   []uint64
	}{
		{[]State{Queued}, []uint64{8, 6, 5, 4}},
		{[]State{Uploading, Done}, []uint64{3, 1}},
		{[]State{Gone, Waiting}, nil},
	} {
		got, err := s.List(ctx, Filter{States: tt.states})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("List(%v) = %v, want %v", tt.states, ids(got), tt.want)
		}
	}
	if _, err := s.Latest(ctx, "news", "n1.mp4"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Latest of a deleted job: %v", err)
	}
	mustHealthy(t, s)
}

func TestCheckFindsCorruption(t *testing.T) {
	ctx := context.Background()
	put := func(bucket string, k, v []byte) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put(k, v) }
	}
	del := func(bucket string, k []byte) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Delete(k) }
	}
	// rewrite changes job 1 behind the store's back (no index update).
	rewrite := func(fn func(*Job)) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b, _ := openBuckets(tx)
			j, err := b.get(1)
			if err != nil {
				return err
			}
			fn(j)
			data, _ := json.Marshal(j)
			return b.jobs.Put(idKey(1), data)
		}
	}
	tests := []struct {
		name    string
		corrupt func(*bolt.Tx) error
		want    []string
	}{
		{"idx_state entry missing", del(bucketIdxState, stateKey(Queued, 1)),
			[]string{"job 1: idx_state entry for state queued missing"}},
		{"idx_state stray state", put(bucketIdxState, stateKey(Uploading, 1), nil),
			[]string{"idx_state: uploading/1 but job 1 is queued"}},
		{"idx_state missing job", put(bucketIdxState, stateKey(Queued, 99), nil),
			[]string{"idx_state: queued/99 points to missing job 99"}},
		{"idx_state malformed", put(bucketIdxState, []byte("queued"), nil),
			[]string{`idx_state: malformed key "queued"`}},
		{"idx_path entry missing", del(bucketIdxPath, pathKey("f", "a.mp4", 1)),
			[]string{"job 1: idx_path entry for f/a.mp4 missing"}},
		{"idx_path other path", put(bucketIdxPath, pathKey("f", "zzz.mp4", 1), nil),
			[]string{"idx_path: f/zzz.mp4/1 but job 1 is f/a.mp4"}},
		{"count wrong", put(bucketCounts, countKey("f", Queued), idKey(5)),
			[]string{"counts: folder f state queued: stored 5, actual 2"}},
		{"count missing", del(bucketCounts, countKey("f", Queued)),
			[]string{"counts: folder f state queued: stored 0, actual 2"}},
		{"job undecodable", put(bucketJobs, idKey(1), []byte("{not json")),
			[]string{"job 1: cannot decode"}},
		{"state changed without index", rewrite(func(j *Job) { j.State = Uploading }), []string{
			"job 1: idx_state entry for state uploading missing",
			"idx_state: queued/1 but job 1 is uploading",
			"counts: folder f state queued: stored 2, actual 1",
			"counts: folder f state uploading: stored 0, actual 1",
		}},
		{"unknown state", rewrite(func(j *Job) { j.State = "lost" }), []string{"job 1: unknown state \"lost\""}},
		{"finished job still uploading", rewrite(func(j *Job) {
			j.State = Done
			j.Destinations[0].State = DestUploading
		}), []string{"job 1: done but destination archive is still uploading"}},
		{"schema", put(bucketMeta, []byte(keySchema), []byte("9")), []string{`meta: schema version "9"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, nil)
			mustCreate(t, s, newJob("f", "a.mp4", Queued), newJob("f", "b.mp4", Queued))
			mustHealthy(t, s)
			if err := s.db.Update(tt.corrupt); err != nil {
				t.Fatal(err)
			}
			problems, err := s.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("no problem mentions %q; got %q", w, problems)
				}
			}
		})
	}
}

func TestLatest(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	// Versions of a.mp4 interleaved with names that share its prefix, so a
	// wrong seek or prefix test picks the wrong job.
	mustCreate(t, s,
		newJob("f", "a.mp4", Queued),      // 1
		newJob("f", "a.mp4.part", Queued), // 2
		newJob("f", "a.mp4", Queued),      // 3
		newJob("g", "a.mp4", Queued),      // 4
		newJob("f", "a.mp", Queued),       // 5
		newJob("f", "a.mp4x", Queued),     // 6
	)
	tests := []struct {
		folder, rel string
		want        uint64 // 0: not found
	}{
		{"f", "a.mp4", 3},
		{"f", "a.mp4.part", 2},
		{"g", "a.mp4", 4},
		{"f", "a.mp", 5},
		{"f", "a.mp4x", 6},
		{"f", "b.mp4", 0},
		{"h", "a.mp4", 0},
		{"", "", 0},
	}
	for _, tt := range tests {
		got, err := s.Latest(ctx, tt.folder, tt.rel)
		switch {
		case tt.want == 0 && !errors.Is(err, ErrNotFound):
			t.Errorf("Latest(%s, %s): err = %v, want ErrNotFound", tt.folder, tt.rel, err)
		case tt.want != 0 && (err != nil || got.ID != tt.want):
			t.Errorf("Latest(%s, %s) = %v, %v; want id %d", tt.folder, tt.rel, got, err, tt.want)
		}
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	s := openTest(t, clk)

	// 30 jobs over two folders; every third is moved on, so the states mix.
	for i := range 30 {
		folder := "news"
		if i%2 == 1 {
			folder = "sport"
		}
		mustCreate(t, s, newJob(folder, fmt.Sprintf("c%02d.mp4", i), Queued))
	}
	for id := uint64(1); id <= 30; id++ {
		var st State
		switch id % 3 {
		case 0:
			st = Uploading
		case 1:
			continue
		case 2:
			st = Gone
		}
		if _, err := s.Update(ctx, id, setState(st)); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 30 || all[0].ID != 30 || all[29].ID != 1 {
		t.Fatalf("List{} = %v", ids(all))
	}
	since := all[14].Updated // some middle point in time

	// reference is the obvious implementation over every job.
	reference := func(f Filter) []uint64 {
		var out []uint64
		for _, j := range all {
			if (len(f.States) == 0 || slices.Contains(f.States, j.State)) &&
				(f.Folder == "" || j.Folder == f.Folder) &&
				(f.Since.IsZero() || !j.Updated.Before(f.Since)) &&
				(f.AfterID == 0 || j.ID < f.AfterID) &&
				(f.Limit == 0 || len(out) < f.Limit) {
				out = append(out, j.ID)
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    Filter
		n    int // expected count, as a check on the reference itself
	}{
		{"limit", Filter{Limit: 5}, 5},
		{"one state", Filter{States: []State{Queued}}, 10},
		{"two states merged", Filter{States: []State{Gone, Uploading}}, 20},
		{"repeated state", Filter{States: []State{Gone, Gone}}, 10},
		{"folder", Filter{Folder: "sport"}, 15},
		{"folder and state", Filter{Folder: "news", States: []State{Uploading}}, 5},
		{"since", Filter{Since: since}, 0},
		{"since and states", Filter{Since: since, States: []State{Queued, Uploading}}, 0},
		{"after id", Filter{AfterID: 11}, 10},
		{"after id, states, limit", Filter{AfterID: 20, States: []State{Queued, Gone}, Limit: 4}, 4},
		{"after id beyond all", Filter{AfterID: 1000, Limit: 3}, 3},
		{"after id 1", Filter{AfterID: 1}, 0},
		{"unknown folder", Filter{Folder: "none"}, 0},
		{"folder needs escaping", Filter{Folder: `ne"ws`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			want := reference(tt.f)
			if tt.n != 0 && len(want) != tt.n {
				t.Fatalf("reference gives %d jobs, test expects %d", len(want), tt.n)
			}
			if !slices.Equal(ids(got), want) {
				t.Fatalf("List(%+v) = %v, want %v", tt.f, ids(got), want)
			}
		})
	}

	t.Run("since is selective", func(t *testing.T) {
		// Guards the table above: a Since that keeps all or nothing would
		// not test the filter.
		if n := len(reference(Filter{Since: since})); n == 0 || n == len(all) {
			t.Fatalf("Since keeps %d of %d jobs", n, len(all))
		}
	})

	t.Run("pagination", func(t *testing.T) {
		f := Filter{States: []State{Queued, Uploading}, Limit: 7}
		var pages []uint64
		for range 10 {
			page, err := s.List(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			pages = append(pages, ids(page)...)
			f.AfterID = page[len(page)-1].ID
		}
		if want := reference(Filter{States: f.States}); !slices.Equal(pages, want) || len(pages) != 20 {
			t.Fatalf("paged = %v, want %v", pages, want)
		}
	})

	if _, err := s.List(ctx, Filter{States: []State{"bogus"}}); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown state in filter: %v", err)
	}
}

func TestUnfinishedSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var jobs []*Job
	for i := range 8 {
		jobs = append(jobs, newJob("f", fmt.Sprintf("%d.mp4", i), Queued))
	}
	mustCreate(t, s, jobs...)
	moves := map[uint64][]State{
		2: {Uploading},
		3: {Moving, Done},
		4: {Gone},
		5: {Moving, Failed},
		6: {Uploading, Retry},
		7: {Waiting},
		8: {Uploading, Registering},
	}
	for id, path := range moves {
		for _, st := range path {
			if _, err := s.Update(ctx, id, setState(st)); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, err := s.Get(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	un, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 6, 7, 8}; !slices.Equal(ids(un), want) {
		t.Fatalf("Unfinished = %v, want %v", ids(un), want)
	}
	if !reflect.DeepEqual(un[4], before) {
		t.Fatalf("job 8 after reopen = %+v\nwant %+v", un[4], before)
	}
	// Ids keep counting after a reopen.
	j := newJob("f", "new.mp4", Queued)
	mustCreate(t, s, j)
	if j.ID != 9 {
		t.Fatalf("id after reopen = %d, want 9", j.ID)
	}
	mustHealthy(t, s)

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 || dir.Mode().Perm() != 0o700 {
		t.Errorf("file mode %v, dir mode %v; want 0600 and 0700", info.Mode().Perm(), dir.Mode().Perm())
	}
}

// TestOpenLocking documents bbolt's flock behaviour as this package relies
// on it: one writer excludes everyone (including read-only opens, which take
// a shared lock); read-only opens share.
func TestOpenLocking(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	w, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, w, newJob("f", "a.mp4", Queued))

	for _, ro := range []bool{false, true} {
		start := time.Now()
		_, err := Open(path, Options{ReadOnly: ro})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open (read-only %v) while held: %v, want ErrLocked", ro, err)
		}
		if !strings.Contains(err.Error(), "is the daemon running") || !strings.Contains(err.Error(), path) {
			t.Errorf("error %q should explain and name the file", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("ErrLocked took %v", d)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	r1, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("second read-only open: %v", err)
	}
	defer r2.Close()
	if j, err := r2.Get(ctx, 1); err != nil || j.RelPath != "a.mp4" {
		t.Fatalf("read-only Get = %v, %v", j, err)
	}
	if err := r1.Create(ctx, newJob("f", "b.mp4", Queued)); err == nil {
		t.Fatal("Create on a read-only store succeeded")
	}
	// Read-only stores hold the file only during a read: a writer (the
	// daemon) opens while they are still open, and their reads then say
	// the database is in use.
	w2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("writer Open while read-only stores are open: %v", err)
	}
	defer w2.Close()
	if _, err := r1.Get(ctx, 1); !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only Get while the writer holds: %v, want ErrLocked", err)
	}
}

func TestOpenReadOnlyMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "state.db")
	_, err := Open(path, Options{ReadOnly: true})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only Open created the directory: %v", err)
	}
}

func TestOpenCorruptFile(t *testing.T) {
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i>>8)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", garbage},
		{"zeroes", make([]byte, 16<<10)},
		{"short text", []byte("this is not a database\n")},
	}
	for _, tt := range tests {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ro=%v", tt.name, ro), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "state.db")
				if err := os.WriteFile(path, tt.data, 0o600); err != nil {
					t.Fatal(err)
				}
				s, err := Open(path, Options{ReadOnly: ro})
				if err == nil {
					s.Close()
					t.Fatal("Open of a corrupt file succeeded")
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want ErrCorrupt naming %s", err, path)
				}
				// The lock was released: the file can be replaced and opened.
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if s, err := Open(path, Options{}); err != nil {
					t.Fatalf("Open after removing the corrupt file: %v", err)
				} else {
					s.Close()
				}
			})
		}
	}
}

// TestCorruptPage damages one page of a valid file: bbolt would panic (or
// fault) on it. The store must turn that into ErrCorrupt and keep the
// process alive.
func TestCorruptPage(t *testing.T) {
	const page = 4096
	// jobPage finds the leaf holding job 8 by a string in no index key.
	jobPage := func(data []byte) []int {
		var out []int
		for off := 2 * page; off+page <= len(data); off += page {
			if strings.Contains(string(data[off:off+page]), "/srv/needle-7/") {
				out = append(out, off/page)
			}
		}
		return out
	}
	// freelistPage reads the freelist page id from the newer meta page
	// (bbolt meta: 16-byte page header, then magic, version, page size,
	// flags, root bucket (16 bytes), freelist, pgid, txid).
	freelistPage := func(data []byte) []int {
		best, bestTx := 0, uint64(0)
		for _, m := range []int{0, page} {
			if tx := binary.LittleEndian.Uint64(data[m+64:]); tx >= bestTx {
				best, bestTx = int(binary.LittleEndian.Uint64(data[m+48:])), tx
			}
		}
		return []int{best}
	}
	tests := []struct {
		name     string
		pages    func([]byte) []int
		openFail bool // the damage is met while opening
	}{
		{"job leaf", jobPage, false},
		{"freelist", freelistPage, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "state.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var jobs []*Job
			for i := range 20 {
				j := newJob("f", fmt.Sprintf("%d.mp4", i), Queued)
				j.Path = fmt.Sprintf("/srv/needle-%d/clip.mp4", i)
				jobs = append(jobs, j)
			}
			mustCreate(t, s, jobs...)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pages := tt.pages(data)
			if len(pages) == 0 {
				t.Fatal("page to damage not found")
			}
			for _, p := range pages {
				// A header with a wrong page id and flags: bbolt asserts on it.
				copy(data[p*page:], []byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff})
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}

			s, err = Open(path, Options{})
			if tt.openFail {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Open: %v, want ErrCorrupt naming the file", err)
				}
				// The failed Open released its lock: trying again gives the
				// same answer, not ErrLocked.
				if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("second Open: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			if _, err := s.Get(ctx, 8); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Get of the damaged job: %v, want ErrCorrupt", err)
			}
			problems, err := s.Check(ctx)
			if err == nil && len(problems) == 0 {
				t.Fatal("Check found nothing wrong with a damaged page")
			}
			t.Logf("Check: %v %q", err, problems)
		})
	}
}

func TestBulk(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	s.db.NoSync = false // one real fsync per call is the point of the bulk API
	const n = 2000
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = newJob(fmt.Sprintf("f%d", i%3), fmt.Sprintf("clip-%04d.mp4", i), Waiting)
	}
	if err := s.CreateMany(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if j.ID != uint64(i+1) {
			t.Fatalf("job %d got id %d", i, j.ID)
		}
	}
	all := ids(jobs)
	out, err := s.UpdateMany(ctx, all, setState(Queued))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || out[n-1].ID != n || out[n-1].State != Queued {
		t.Fatalf("UpdateMany returned %d jobs, last %+v", len(out), out[n-1])
	}

	// One bad job rolls the whole batch back, and the error names it.
	_, err = s.UpdateMany(ctx, all, func(j *Job) error {
		if j.ID == 1500 {
			j.State = Done
		} else {
			j.State = Uploading
		}
		return nil
	})
	if !errors.Is(err, ErrIllegalTransition) || !strings.Contains(err.Error(), "job 1500") {
		t.Fatalf("err = %v", err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for folder, m := range counts {
		if len(m) != 1 || m[Queued] == 0 {
			t.Errorf("folder %s counts %v after a rolled back batch", folder, m)
		}
		total += m[Queued]
	}
	if total != n {
		t.Fatalf("queued total %d, want %d", total, n)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.UpdateMany(cancelled, all, setState(Uploading)); !errors.Is(err, context.Canceled) {
		t.Errorf("UpdateMany with cancelled ctx: %v", err)
	}
	if err := s.CreateMany(cancelled, []*Job{newJob("f", "x.mp4", Queued)}); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateMany with cancelled ctx: %v", err)
	}
	mustHealthy(t, s)
}

// TestConcurrent runs writers and readers together under the race detector.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	const workers, rounds = 4, 40
	jobs := make([]*Job, workers)
	for i := range jobs {
		jobs[i] = newJob("f", fmt.Sprintf("w%d.mp4", i), Queued)
	}
	mustCreate(t, s, jobs...)

	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for _, j := range jobs {
		wg.Go(func() {
			for range rounds {
				_, err := s.Update(ctx, j.ID, func(j *Job) error {
					j.Attempts++
					if j.State == Uploading {
						j.State = Retry
					} else {
						j.State = Uploading
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			for range rounds {
				if _, err := s.List(ctx, Filter{States: []State{Uploading, Retry}, Limit: 10}); err != nil {
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
	for _, j := range jobs {
		got, err := s.Get(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempts != rounds || got.State != Retry { // an even number of flips from Queued
			t.Errorf("job %d: attempts %d state %s", got.ID, got.Attempts, got.State)
		}
	}
	mustHealthy(t, s)
}

// A retried old job owns its path even though a newer job for the same
// path has finished: events for the file must reach the old job.
func TestLatestPrefersUnfinishedJob(t *testing.T) {
	s := openTest(t, nil)
	ctx := context.Background()
	old := &Job{Folder: "f", RelPath: "a.mp4", State: Queued}
	newer := &Job{Folder: "f", RelPath: "a.mp4", State: Queued}
	if err := s.CreateMany(ctx, []*Job{old, newer}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{old.ID, newer.ID} {
		if _, err := s.Update(ctx, id, func(j *Job) error { j.State = Moving; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Update(ctx, old.ID, func(j *Job) error { j.State = Failed; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, newer.ID, func(j *Job) error { j.State = Done; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Latest(ctx, "f", "a.mp4"); got == nil || got.ID != newer.ID {
		t.Fatalf("Latest with both finished = %+v, want the newer job %d", got, newer.ID)
	}
	if _, err := s.Update(ctx, old.ID, func(j *Job) error { j.State = Queued; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Latest(ctx, "f", "a.mp4"); got == nil || got.ID != old.ID {
		t.Fatalf("Latest after retrying the old job = %+v, want job %d", got, old.ID)
	}
}
