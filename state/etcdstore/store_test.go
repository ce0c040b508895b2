package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
	"github.com/watchfolder/watchfolder/state/storetest"
)

// opener opens stores of one prefix in e, as the nodes of one watchfolder
// cluster; each test takes its own prefix, as several clusters sharing one
// etcd would.
func opener(e *etcdenv.Etcd, prefix string) func(t *testing.T, node string, ttl time.Duration) *etcdstore.Store {
	return func(t *testing.T, node string, ttl time.Duration) *etcdstore.Store {
		t.Helper()
		s, err := etcdstore.Open(context.Background(), clientv3.Config{Endpoints: e.Endpoints},
			etcdstore.Options{Prefix: prefix, Node: node, LeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

// TestEtcdStore starts one 3-member cluster for all the store's tests
// (starting one costs seconds).
func TestEtcdStore(t *testing.T) {
	e := etcdenv.Start(t, 3)
	t.Run("Contract", func(t *testing.T) { testContract(t, e) })
	t.Run("ClaimFencing", func(t *testing.T) { testClaimFencing(t, opener(e, "/fencing")) })
	t.Run("ClaimExpires", func(t *testing.T) { testClaimExpires(t, opener(e, "/expires")) })
	t.Run("OtherNodesWrites", func(t *testing.T) { testOtherNodesWrites(t, opener(e, "/stale")) })
	t.Run("CreateRace", func(t *testing.T) { testCreateRace(t, opener(e, "/race")) })
	t.Run("ActiveMark", func(t *testing.T) { testActiveMark(t, opener(e, "/active")) })
	t.Run("FinishReleasesClaim", func(t *testing.T) { testFinishReleasesClaim(t, opener(e, "/finish")) })
}

// A node's kept version of a job goes stale when another node writes it:
// its next update must be judged on the current version, not refused.
func testOtherNodesWrites(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "a", 0), open(t, "b", 0)
	j := storetest.NewJob("f", "x.mp4", state.Queued)
	if err := a.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Update(ctx, j.ID, func(j *state.Job) error { j.State = state.Uploading; return nil }); err != nil {
		t.Fatal(err)
	}
	// Queued -> registering would be illegal; uploading -> registering is not.
	got, err := a.Update(ctx, j.ID, func(j *state.Job) error {
		if j.State != state.Uploading {
			return fmt.Errorf("saw %s", j.State)
		}
		j.State = state.Registering
		return nil
	})
	if err != nil || got.State != state.Registering || len(got.History) != 3 {
		t.Fatalf("update after another node's write: %+v, %v", got, err)
	}
	// And a real refusal still comes back.
	if _, err := b.Update(ctx, j.ID, func(j *state.Job) error { j.State = state.Done; return nil }); !errors.Is(err, state.ErrIllegalTransition) {
		t.Errorf("registering -> done: %v, want ErrIllegalTransition", err)
	}
	if err := b.Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, j.ID, func(j *state.Job) error { j.Attempts++; return nil }); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("update of a job deleted by another node: %v, want ErrNotFound", err)
	}
}

func testContract(t *testing.T, e *etcdenv.Etcd) {
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := etcdstore.Open(context.Background(), clientv3.Config{Endpoints: e.Endpoints},
			etcdstore.Options{Prefix: fmt.Sprintf("/contract%d", n.Add(1)), Node: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// A node whose claim was taken over commits nothing more for the job.
func testClaimFencing(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a := open(t, "node-a", 2*time.Second)
	b := open(t, "node-b", 2*time.Second)

	j := storetest.NewJob("f", "clip.mp4", state.Queued)
	if err := a.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, j.ID); !errors.Is(err, etcdstore.ErrClaimed) {
		t.Fatalf("second claim: %v, want ErrClaimed", err)
	}
	if _, err := a.Update(ctx, j.ID, func(j *state.Job) error { j.State = state.Uploading; return nil }); err != nil {
		t.Fatalf("holder's update: %v", err)
	}
	claims, err := b.Claims(ctx)
	if err != nil || claims[j.ID] != "node-a" {
		t.Fatalf("Claims = %v, %v", claims, err)
	}

	// Node a is cut off: its lease is revoked (as when it expires), and
	// node b takes the job over.
	sess, err := a.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, j.ID); err != nil {
		t.Fatalf("take-over claim: %v", err)
	}
	_, err = a.Update(ctx, j.ID, func(j *state.Job) error { j.State = state.Registering; return nil })
	if !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("fenced node's update: %v, want ErrFenced", err)
	}
	if held, err := a.StillHeld(ctx, j.ID); err != nil || held {
		t.Errorf("StillHeld on the old holder = %v, %v", held, err)
	}
	got, err := b.Update(ctx, j.ID, func(j *state.Job) error { j.State = state.Registering; return nil })
	if err != nil || got.State != state.Registering {
		t.Fatalf("new holder's update: %v, %v", got, err)
	}
	// A node that never claimed the job (an operator's command) may
	// still change it: only claim holders are fenced.
	if err := b.Release(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, j.ID); err != nil { // not ours: no-op
		t.Fatal(err)
	}
	if claims, _ := a.Claims(ctx); len(claims) != 0 {
		t.Errorf("claims left: %v", claims)
	}
}

// With a lease TTL, a dead node's claim disappears by itself.
func testClaimExpires(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a := open(t, "node-a", time.Second)
	b := open(t, "node-b", time.Second)
	j := storetest.NewJob("f", "clip.mp4", state.Queued)
	if err := a.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	sess, _ := a.Session(ctx)
	sess.Orphan() // keep-alives stop, as when the process dies
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.Claim(ctx, j.ID)
		if err == nil {
			break
		}
		if !errors.Is(err, etcdstore.ErrClaimed) || time.Now().After(deadline) {
			t.Fatalf("claim after the holder died: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nodes, err := b.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "node-b" {
		t.Errorf("Nodes = %+v, %v", nodes, err)
	}
}

// Two nodes that both believe they are a folder's scanner (an election
// handing over) create jobs for the same new files at the same moment:
// every file gets exactly one job, and the loser is told why.
func testCreateRace(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	const nodes, rounds = 2, 20
	stores := make([]*etcdstore.Store, nodes)
	for i := range stores {
		stores[i] = open(t, fmt.Sprintf("node-%d", i), 0)
	}
	for r := range rounds {
		// A single create and a batch (the burst path) each round.
		rel := fmt.Sprintf("clip-%02d.mp4", r)
		batch := []string{fmt.Sprintf("burst-%02d-a.mp4", r), fmt.Sprintf("burst-%02d-b.mp4", r), rel + ".xml"}
		errs := make([]error, nodes)
		made := make([][]*state.Job, nodes)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range stores {
			made[i] = []*state.Job{storetest.NewJob("f", rel, state.Queued)}
			for _, b := range batch {
				made[i] = append(made[i], storetest.NewJob("f", b, state.Queued))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if r%2 == 0 {
					errs[i] = s.Create(ctx, made[i][0])
					if err := s.CreateMany(ctx, made[i][1:]); err != nil {
						errs[i] = errors.Join(errs[i], err)
					}
					return
				}
				errs[i] = s.CreateMany(ctx, made[i])
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, etcdstore.ErrActive) {
				t.Fatalf("round %d node %d: %v", r, i, err)
			}
		}
		for k, p := range append([]string{rel}, batch...) {
			jobs, err := stores[0].ForPath(ctx, "f", p)
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs) != 1 {
				t.Fatalf("round %d: %s has %d jobs, want 1", r, p, len(jobs))
			}
			// The winner's job has its id; the loser's was left untouched.
			winners := 0
			for i := range stores {
				if id := made[i][k].ID; id != 0 {
					winners++
					if id != jobs[0].ID {
						t.Errorf("round %d: %s: node %d got id %d, stored %d", r, p, i, id, jobs[0].ID)
					}
				} else if !errors.Is(errs[i], etcdstore.ErrActive) {
					t.Errorf("round %d: %s refused on node %d without ErrActive: %v", r, p, i, errs[i])
				}
			}
			if winners != 1 {
				t.Errorf("round %d: %s: %d nodes think they created it", r, p, winners)
			}
		}
	}
}

// The active mark lives as long as the job is unfinished: a finished job
// lets a new version of the file in, a retried one takes the mark again,
// a deleted one gives it up, and a batch naming a path twice makes one job.
func testActiveMark(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	s := open(t, "n", 0)
	set := func(id uint64, st state.State) {
		t.Helper()
		if _, err := s.Update(ctx, id, func(j *state.Job) error { j.State = st; return nil }); err != nil {
			t.Fatalf("job %d -> %s: %v", id, st, err)
		}
	}
	first := storetest.NewJob("f", "a.mp4", state.Queued)
	if err := s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, storetest.NewJob("f", "a.mp4", state.Waiting)); !errors.Is(err, etcdstore.ErrActive) {
		t.Fatalf("second job while the first is unfinished: %v, want ErrActive", err)
	}
	set(first.ID, state.Moving)
	set(first.ID, state.Failed)
	second := storetest.NewJob("f", "a.mp4", state.Queued)
	if err := s.Create(ctx, second); err != nil {
		t.Fatalf("new version after the first failed: %v", err)
	}
	// An operator retries the failed job while the new one runs: the retry
	// is not refused, and the mark stays with the new job.
	set(first.ID, state.Queued)
	set(second.ID, state.Gone)
	if err := s.Create(ctx, storetest.NewJob("f", "a.mp4", state.Queued)); err != nil {
		t.Fatalf("create after the mark's holder finished: %v", err)
	}

	// Delete gives the mark up; a rename moves it.
	d := storetest.NewJob("f", "d.mp4", state.Queued)
	if err := s.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, d.ID, func(j *state.Job) error { j.RelPath = "e.mp4"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, storetest.NewJob("f", "e.mp4", state.Queued)); !errors.Is(err, etcdstore.ErrActive) {
		t.Errorf("create on a renamed job's new path: %v, want ErrActive", err)
	}
	if err := s.Create(ctx, storetest.NewJob("f", "d.mp4", state.Queued)); err != nil {
		t.Errorf("create on a renamed job's old path: %v", err)
	}
	if err := s.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, storetest.NewJob("f", "e.mp4", state.Queued)); err != nil {
		t.Errorf("create after the holder was deleted: %v", err)
	}

	x, y, z := storetest.NewJob("f", "x.mp4", state.Queued), storetest.NewJob("f", "x.mp4", state.Queued), storetest.NewJob("f", "z.mp4", state.Queued)
	err := s.CreateMany(ctx, []*state.Job{x, y, z})
	if !errors.Is(err, etcdstore.ErrActive) || x.ID == 0 || y.ID != 0 || z.ID == 0 {
		t.Errorf("batch with a path twice: %v; ids %d %d %d, want x and z created", err, x.ID, y.ID, z.ID)
	}
}

// The transition that finishes a job gives up its claim in the same
// transaction; a node that lost the claim cannot finish the job.
func testFinishReleasesClaim(t *testing.T, open func(*testing.T, string, time.Duration) *etcdstore.Store) {
	ctx := context.Background()
	a, b := open(t, "node-a", 0), open(t, "node-b", 0)
	jobs := []*state.Job{storetest.NewJob("f", "one.mp4", state.Queued), storetest.NewJob("f", "two.mp4", state.Queued)}
	if err := a.CreateMany(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if err := a.Claim(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		for _, st := range []state.State{state.Uploading, state.Moving} {
			if _, err := a.Update(ctx, j.ID, func(j *state.Job) error { j.State = st; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := a.Update(ctx, jobs[0].ID, func(j *state.Job) error { j.State = state.Done; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateMany(ctx, []uint64{jobs[1].ID}, func(j *state.Job) error { j.State = state.Failed; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if a.Holds(j.ID) {
			t.Errorf("job %d: still held after it finished", j.ID)
		}
	}
	if claims, err := b.Claims(ctx); err != nil || len(claims) != 0 {
		t.Errorf("claims left after the jobs finished: %v, %v", claims, err)
	}

	// Fenced: the holder's lease is gone and another node holds the job.
	c := storetest.NewJob("f", "three.mp4", state.Queued)
	if err := a.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, c.ID, func(j *state.Job) error { j.State = state.Moving; return nil }); err != nil {
		t.Fatal(err)
	}
	sess, err := a.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, c.ID, func(j *state.Job) error { j.State = state.Done; return nil }); !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("finish by a node that lost the claim: %v, want ErrFenced", err)
	}
	if claims, _ := b.Claims(ctx); claims[c.ID] != "node-b" {
		t.Errorf("new holder's claim touched: %v", claims)
	}
}
