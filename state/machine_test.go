package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// specTransitions is the table from the design, written out independently of
// CanTransition so that a change to either shows up here.
func specTransitions() map[State][]State {
	return map[State][]State{
		Waiting:     {Queued, Gone, Moving},
		Queued:      {Probing, Uploading, Waiting, Gone, Moving, Retry},
		Probing:     {Uploading, Moving, Retry, Waiting, Gone},
		Uploading:   {Registering, Moving, Retry, Waiting, Gone},
		Registering: {Moving, Retry, Waiting, Gone},
		Retry:       {Queued, Probing, Uploading, Moving, Gone, Waiting},
		Moving:      {Done, Failed},
		Failed:      {Queued},
		Done:        nil,
		Gone:        nil,
	}
}

func TestCanTransitionMatchesSpec(t *testing.T) {
	if got := len(AllStates()); got != len(specTransitions()) {
		t.Fatalf("AllStates has %d states, spec has %d", got, len(specTransitions()))
	}
	for _, from := range AllStates() {
		for _, to := range AllStates() {
			want := from == to || slices.Contains(specTransitions()[from], to)
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	for _, bad := range []State{"", "bogus", "DONE"} {
		if CanTransition(bad, Queued) || CanTransition(Queued, bad) || CanTransition(bad, bad) {
			t.Errorf("unknown state %q transitions", bad)
		}
	}
}

func TestAllStatesIsACopy(t *testing.T) {
	a := AllStates()
	a[0] = "changed"
	if AllStates()[0] != Waiting {
		t.Fatal("AllStates returned shared storage")
	}
}

// pathTo returns a sequence of legal states leading from Queued to st.
func pathTo(st State) []State {
	prev := map[State]State{Queued: ""}
	queue := []State{Queued}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == st {
			break
		}
		for _, next := range specTransitions()[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	var path []State
	for cur := st; cur != Queued; cur = prev[cur] {
		path = append([]State{cur}, path...)
	}
	return path
}

// TestStoreTransitions drives a job into every state and tries every target
// through Update: the store must accept exactly the legal ones, and a refusal
// must name the job and both states and leave the job untouched.
func TestStoreTransitions(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	for _, from := range AllStates() {
		for _, to := range AllStates() {
			t.Run(fmt.Sprintf("%s->%s", from, to), func(t *testing.T) {
				j := newJob("f", fmt.Sprintf("%s-%s.mp4", from, to), Queued)
				mustCreate(t, s, j)
				for _, st := range pathTo(from) {
					if _, err := s.Update(ctx, j.ID, setState(st)); err != nil {
						t.Fatalf("driving to %s: %v", from, err)
					}
				}
				_, err := s.Update(ctx, j.ID, setState(to))
				legal := from == to || slices.Contains(specTransitions()[from], to)
				if legal {
					if err != nil {
						t.Fatalf("legal transition refused: %v", err)
					}
				} else {
					if !errors.Is(err, ErrIllegalTransition) {
						t.Fatalf("err = %v, want ErrIllegalTransition", err)
					}
					for _, want := range []string{fmt.Sprintf("job %d", j.ID), string(from), string(to)} {
						if !strings.Contains(err.Error(), want) {
							t.Errorf("error %q does not name %q", err, want)
						}
					}
				}
				got, err := s.Get(ctx, j.ID)
				if err != nil {
					t.Fatal(err)
				}
				want := from
				if legal {
					want = to
				}
				if got.State != want {
					t.Fatalf("state after update = %s, want %s", got.State, want)
				}
			})
		}
	}
	mustHealthy(t, s)
}

func TestCreateStates(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, nil)
	for _, st := range append(AllStates(), "bogus") {
		err := s.Create(ctx, newJob("f", "create-"+string(st)+".mp4", st))
		if ok := st == Waiting || st == Queued; ok != (err == nil) {
			t.Errorf("Create in %s: err = %v", st, err)
		}
		if err != nil && !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("Create in %s: err = %v, want ErrIllegalTransition", st, err)
		}
	}
	mustHealthy(t, s)
}
