package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
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
