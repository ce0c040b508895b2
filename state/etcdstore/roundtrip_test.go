package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
	"github.com/watchfolder/watchfolder/state/storetest"
)

// TestRoundTrips covers the calls that fold several reads or writes into
// one etcd round trip: each must keep the answers and refusals of the
// calls it replaces.
func TestRoundTrips(t *testing.T) {
	e := etcdenv.Start(t, 3)
	t.Run("UpdateManyKept", func(t *testing.T) { testUpdateManyKept(t, opener(e, "/rt-kept")) })
	t.Run("UpdateManyChunks", func(t *testing.T) { testUpdateManyChunks(t, opener(e, "/rt-chunks")) })
	t.Run("UpdateManyFenced", func(t *testing.T) { testUpdateManyFenced(t, opener(e, "/rt-fenced")) })
	t.Run("ClaimGet", func(t *testing.T) { testClaimGet(t, opener(e, "/rt-claimget")) })
	t.Run("GetOwned", func(t *testing.T) { testGetOwned(t, opener(e, "/rt-owned")) })
	t.Run("LatestMany", func(t *testing.T) { testLatestMany(t, opener(e, "/rt-latest")) })
	t.Run("Indexed", func(t *testing.T) { testIndexed(t, opener(e, "/rt-indexed")) })
}

func create(t *testing.T, s *etcdstore.Store, rels ...string) []*state.Job {
	t.Helper()
	var jobs []*state.Job
	for _, rel := range rels {
		jobs = append(jobs, storetest.NewJob("f", rel, state.Queued))
	}
	if err := s.CreateMany(context.Background(), jobs); err != nil {
		t.Fatal(err)
	}
	return jobs
}

// UpdateMany stages the kept versions without reading them; a version
// another node changed since is caught by the compare and judged again on
// the current one, never refused for it.
func testUpdateManyKept(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "a", 0), open(t, "b", 0)
	jobs := create(t, a, "1.mp4", "2.mp4", "3.mp4")
	ids := []uint64{jobs[0].ID, jobs[1].ID, jobs[2].ID}
	// Node b moves job 2 on: a's kept version of it is stale.
	if _, err := b.Update(ctx, ids[1], func(j *state.Job) error { j.State = state.Uploading; return nil }); err != nil {
		t.Fatal(err)
	}
	calls := 0
	got, err := a.UpdateMany(ctx, ids, func(j *state.Job) error {
		calls++
		switch j.State {
		case state.Queued:
			j.State = state.Uploading
		case state.Uploading:
			j.State = state.Registering // legal only from the current version
		}
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateMany over a stale kept version: %v", err)
	}
	want := []state.State{state.Uploading, state.Registering, state.Uploading}
	for i, j := range got {
		if j.State != want[i] {
			t.Errorf("job %d: %s, want %s", j.ID, j.State, want[i])
		}
		cur, err := b.Get(ctx, j.ID)
		if err != nil || cur.State != want[i] {
			t.Errorf("stored job %d: %+v, %v", j.ID, cur, err)
		}
	}
	if calls < 6 {
		t.Errorf("fn ran %d times; the stale attempt should have been judged again", calls)
	}
	// fn refusing a kept version is asked again on a fresh read before
	// its refusal counts.
	if _, err := b.Update(ctx, ids[0], func(j *state.Job) error { j.Attempts = 7; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateMany(ctx, ids[:1], func(j *state.Job) error {
		if j.Attempts != 7 {
			return errors.New("stale")
		}
		return nil
	}); err != nil {
		t.Errorf("fn's refusal of a kept version was trusted: %v", err)
	}
	// A deleted job is reported, not recreated.
	if err := b.Delete(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateMany(ctx, ids, func(j *state.Job) error { return nil }); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("UpdateMany with a deleted job: %v, want ErrNotFound", err)
	}
}

// A batch holding a job whose claim was taken over commits nothing.
func testUpdateManyFenced(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "a", 2*time.Second), open(t, "b", 2*time.Second)
	jobs := create(t, a, "1.mp4", "2.mp4")
	for _, j := range jobs {
		if err := a.Claim(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	takeOver(t, a, b, jobs[1].ID)
	_, err := a.UpdateMany(ctx, []uint64{jobs[0].ID, jobs[1].ID}, func(j *state.Job) error { j.State = state.Uploading; return nil })
	if !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("UpdateMany with a lost claim: %v, want ErrFenced", err)
	}
	for _, j := range jobs {
		if cur, _ := b.Get(ctx, j.ID); cur == nil || cur.State != state.Queued {
			t.Errorf("job %d changed by a fenced batch: %+v", j.ID, cur)
		}
	}
}

// takeOver revokes a's lease (as when it expires) and lets b claim id.
func takeOver(t *testing.T, a, b *etcdstore.Store, id uint64) {
	t.Helper()
	ctx := context.Background()
	sess, err := a.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, id); err != nil {
		t.Fatalf("take-over claim: %v", err)
	}
}

func testClaimGet(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "a", 2*time.Second), open(t, "b", 2*time.Second)
	jobs := create(t, a, "1.mp4")
	id := jobs[0].ID
	j, err := a.ClaimGet(ctx, id)
	if err != nil || j.ID != id || j.State != state.Queued {
		t.Fatalf("ClaimGet = %+v, %v", j, err)
	}
	if !a.Holds(id) {
		t.Error("ClaimGet did not record the claim")
	}
	if _, err := b.ClaimGet(ctx, id); !errors.Is(err, etcdstore.ErrClaimed) {
		t.Errorf("second ClaimGet: %v, want ErrClaimed", err)
	}
	// Ours already: the job again, no error.
	if j, err := a.ClaimGet(ctx, id); err != nil || j.ID != id {
		t.Errorf("ClaimGet of a job held already = %+v, %v", j, err)
	}
	if _, err := a.ClaimGet(ctx, id+100); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("ClaimGet of a missing job: %v, want ErrNotFound", err)
	}
	// The claim taken with the read fences like any other.
	takeOver(t, a, b, id)
	if _, err := a.Update(ctx, id, func(j *state.Job) error { j.State = state.Uploading; return nil }); !errors.Is(err, etcdstore.ErrFenced) {
		t.Errorf("update after the take-over: %v, want ErrFenced", err)
	}
}

func testGetOwned(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "a", 2*time.Second), open(t, "b", 2*time.Second)
	jobs := create(t, a, "1.mp4", "2.mp4", "3.mp4")
	for _, j := range jobs[:2] {
		if err := a.Claim(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	j, held, err := a.GetOwned(ctx, jobs[0].ID)
	if err != nil || !held || j.ID != jobs[0].ID {
		t.Fatalf("GetOwned = %+v, %v, %v", j, held, err)
	}
	if _, held, err := a.GetOwned(ctx, jobs[2].ID); err != nil || held {
		t.Errorf("GetOwned of a job never claimed: held %v, %v", held, err)
	}
	if _, _, err := a.GetOwned(ctx, jobs[2].ID+100); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("GetOwned of a missing job: %v, want ErrNotFound", err)
	}
	takeOver(t, a, b, jobs[1].ID)
	got, heldBy, err := a.GetManyOwned(ctx, []uint64{jobs[0].ID, jobs[1].ID, jobs[2].ID, jobs[2].ID + 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("GetManyOwned found %d jobs, want 3", len(got))
	}
	// The lease is gone, so neither claim of a is still its own.
	if heldBy[jobs[0].ID] || heldBy[jobs[1].ID] || heldBy[jobs[2].ID] {
		t.Errorf("held after the lease was revoked: %v", heldBy)
	}
	if held, err := a.StillHeld(ctx, jobs[1].ID); err != nil || held {
		t.Errorf("StillHeld disagrees: %v, %v", held, err)
	}
}

func testLatestMany(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a := open(t, "a", 0)
	jobs := create(t, a, "old.mp4", "new.mp4")
	// old.mp4: a finished job and a newer unfinished one.
	if _, err := a.Update(ctx, jobs[0].ID, func(j *state.Job) error { j.State = state.Gone; return nil }); err != nil {
		t.Fatal(err)
	}
	again := create(t, a, "old.mp4")
	paths := []etcdstore.Path{{Folder: "f", RelPath: "old.mp4"}, {Folder: "f", RelPath: "new.mp4"}, {Folder: "f", RelPath: "none.mp4"}}
	got, err := a.LatestMany(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		want, err := a.Latest(ctx, p.Folder, p.RelPath)
		if errors.Is(err, state.ErrNotFound) {
			if got[p] != nil {
				t.Errorf("%s: LatestMany %d, Latest none", p.RelPath, got[p].ID)
			}
			continue
		}
		if err != nil || got[p] == nil || got[p].ID != want.ID {
			t.Errorf("%s: LatestMany %+v, Latest %+v (%v)", p.RelPath, got[p], want, err)
		}
	}
	if got[paths[0]] == nil || got[paths[0]].ID != again[0].ID {
		t.Errorf("old.mp4: want the unfinished job %d, got %+v", again[0].ID, got[paths[0]])
	}
}

func testIndexed(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a := open(t, "a", 0)
	jobs := create(t, a, "1.mp4", "2.mp4")
	if _, err := a.Update(ctx, jobs[1].ID, func(j *state.Job) error { j.State = state.Uploading; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := a.Indexed(ctx, state.Queued, state.Uploading, state.Retry)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != (etcdstore.Entry{ID: jobs[0].ID, Folder: "f", State: state.Queued}) ||
		got[1] != (etcdstore.Entry{ID: jobs[1].ID, Folder: "f", State: state.Uploading}) {
		t.Errorf("Indexed = %+v", got)
	}
	// 1.mp4's job was the path's first: no other job, without a read.
	j0, err := a.Get(ctx, jobs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	others, err := a.ForPathOthers(ctx, j0)
	if err != nil || len(others) != 0 {
		t.Errorf("ForPathOthers = %+v, %v", others, err)
	}
	// Once it finished, a new job of the path has an other: the old one.
	// The old one, retried and queued again, sees the new one too (its
	// history shows it finished once, so it cannot trust its creation).
	if _, err := a.Update(ctx, j0.ID, func(j *state.Job) error { j.State = state.Gone; return nil }); err != nil {
		t.Fatal(err)
	}
	again := create(t, a, "1.mp4")
	oth, err := a.ForPathOthers(ctx, again[0])
	if err != nil || len(oth) != 1 || oth[0].ID != j0.ID {
		t.Errorf("ForPathOthers of the second job = %+v, %v", oth, err)
	}
	if _, err := a.Update(ctx, again[0].ID, func(j *state.Job) error { j.State = state.Gone; return nil }); err != nil {
		t.Fatal(err)
	}
	back := *j0
	back.State = state.Queued
	back.History = append(back.History, state.Transition{To: state.Gone}, state.Transition{From: state.Gone, To: state.Queued})
	oth, err = a.ForPathOthers(ctx, &back)
	if err != nil || len(oth) != 1 || oth[0].ID != again[0].ID {
		t.Errorf("ForPathOthers of a job that finished once = %+v, %v", oth, err)
	}
	// Another node's store knows nothing of the path's history: it reads.
	b := open(t, "b", 0)
	j1, err := b.Get(ctx, jobs[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.ForPathOthers(ctx, j1); err != nil || len(got) != 0 {
		t.Errorf("ForPathOthers on another node = %+v, %v", got, err)
	}
}

// A batch of several transactions' worth: all committed, in order.
func testUpdateManyChunks(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a := open(t, "a", 0)
	var rels []string
	for i := range 70 {
		rels = append(rels, fmt.Sprintf("%02d.mp4", i))
	}
	jobs := create(t, a, rels...)
	var ids []uint64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	calls := 0
	got, err := a.UpdateMany(ctx, ids, func(j *state.Job) error {
		calls++
		j.State = state.Uploading
		return nil
	})
	if err != nil || len(got) != len(ids) || calls != len(ids) {
		t.Fatalf("UpdateMany of %d jobs: %d back, fn ran %d times, %v", len(ids), len(got), calls, err)
	}
	for i, j := range got {
		if j.ID != ids[i] || j.State != state.Uploading {
			t.Errorf("result %d: job %d in %s, want job %d uploading", i, j.ID, j.State, ids[i])
		}
	}
	counts, err := a.Counts(ctx)
	if err != nil || counts["f"][state.Uploading] != len(ids) {
		t.Errorf("Counts = %v, %v", counts, err)
	}
}
