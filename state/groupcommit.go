package state

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit queues single-job writes for Store.batch.
type groupCommit struct {
	mu      sync.Mutex
	pending []*commitReq
	running bool // a leader is committing; new writers only queue
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	done chan commitResult // buffered: the leader never blocks on an answer
}

// commitResult carries a writer's outcome back to its own goroutine,
// including a panic of its function, which is re-raised there rather than
// in the leader's goroutine.
type commitResult struct {
	err      error
	panicked bool
	value    any
}

// errPanicked rolls a group's transaction back when a member panicked.
var errPanicked = errors.New("writer panicked")

// batch is update for single-job writes, as a group commit: a writer that
// finds no commit under way commits at once (no added latency when the
// pipeline is quiet); writers that arrive while a commit is syncing queue
// up, and the next of them commits all their changes in one transaction
// (one fsync for many jobs on a slow disk). bbolt's own Batch would make
// every lone writer wait MaxBatchDelay for company instead. fn may run more
// than once (a group is re-run without a member that failed), which is why
// every writer decodes the job afresh inside the transaction.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	req := &commitReq{fn: fn, done: make(chan commitResult, 1)}
	s.gc.mu.Lock()
	s.gc.pending = append(s.gc.pending, req)
	lead := !s.gc.running
	s.gc.running = true
	s.gc.mu.Unlock()
	if lead {
		s.leadCommits()
	}
	r := <-req.done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// leadCommits commits queued writes until the queue is empty, taking all
// that are waiting at each round.
func (s *Store) leadCommits() {
	for {
		s.gc.mu.Lock()
		reqs := s.gc.pending
		s.gc.pending = nil
		if len(reqs) == 0 {
			s.gc.running = false
			s.gc.mu.Unlock()
			return
		}
		s.gc.mu.Unlock()
		s.commitGroup(reqs)
	}
}

// commitGroup runs reqs in one transaction. When one of them fails (or
// panics), the transaction is rolled back, that one runs alone to get its
// own answer, and the others are tried again together.
func (s *Store) commitGroup(reqs []*commitReq) {
	for len(reqs) > 0 {
		failed := -1
		var caught *commitResult
		err := s.update(func(tx *bolt.Tx) error {
			for i, q := range reqs {
				r := callRecovering(q.fn, tx)
				if r.panicked || r.err != nil {
					failed = i
					if r.panicked {
						caught = &r
						return errPanicked
					}
					return r.err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, q := range reqs {
				q.done <- commitResult{err: err} // nil, or the commit's own error
			}
			return
		}
		bad := reqs[failed]
		reqs = append(append([]*commitReq{}, reqs[:failed]...), reqs[failed+1:]...)
		if caught != nil {
			bad.done <- *caught
			continue
		}
		var solo commitResult
		solo.err = s.update(func(tx *bolt.Tx) error {
			solo = callRecovering(bad.fn, tx)
			if solo.panicked {
				return errPanicked
			}
			return solo.err
		})
		if solo.panicked {
			solo.err = nil
		}
		bad.done <- solo
	}
}

// callRecovering runs fn, turning a panic of the caller's own function
// into a result for its owner. Any other panic (bbolt on a damaged page)
// goes on to guard, which makes it an ErrCorrupt error for the whole group.
func callRecovering(fn func(*bolt.Tx) error, tx *bolt.Tx) (r commitResult) {
	defer func() {
		if v := recover(); v != nil {
			up, ok := v.(userPanic)
			if !ok {
				panic(v)
			}
			r = commitResult{panicked: true, value: up.v}
		}
	}()
	return commitResult{err: fn(tx)}
}
