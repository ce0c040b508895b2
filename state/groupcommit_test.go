package state

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Concurrent writers share commits; one writer's error or panic reaches
// only that writer, the others' changes are all committed, and nobody is
// left waiting.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTest(t, nil)
	ctx := context.Background()
	const n = 64
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = newJob("f", "clip"+string(rune('A'+i%26))+string(rune('a'+i/26))+".mp4", Queued)
	}
	if err := s.CreateMany(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, n)
	panics := make([]any, n)
	for i := range n {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			_, results[i] = s.Update(ctx, jobs[i].ID, func(j *Job) error {
				switch i {
				case 7:
					return errBoom
				case 13:
					panic("writer 13")
				}
				j.State = Uploading
				return nil
			})
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writers still waiting after 30s: a group commit lost a waiter")
	}
	for i := range n {
		got, err := s.Get(ctx, jobs[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 7:
			if !errors.Is(results[i], errBoom) || got.State != Queued {
				t.Errorf("failing writer: err %v, state %s", results[i], got.State)
			}
		case 13:
			if panics[i] != "writer 13" || got.State != Queued {
				t.Errorf("panicking writer: recovered %v, state %s", panics[i], got.State)
			}
		default:
			if results[i] != nil || panics[i] != nil || got.State != Uploading {
				t.Errorf("writer %d: err %v, panic %v, state %s", i, results[i], panics[i], got.State)
			}
		}
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("Check after concurrent writes: %v %v", problems, err)
	}
}
