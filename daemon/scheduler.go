package daemon

import (
	"context"
	"sync"
	"time"
)

// scheduler hands job ids to workers in FIFO order, each id at most once at
// a time, and holds delayed ids (retry backoff) on timers.
type scheduler struct {
	mu      sync.Mutex
	queue   []uint64
	queued  map[uint64]bool // in queue or running
	again   map[uint64]bool // pushed while running: run once more after
	timers  map[uint64]*time.Timer
	wake    chan struct{}
	stop    chan struct{} // closed by close(); wake is never closed
	closed  bool
	running map[uint64]bool
}

func newScheduler() *scheduler {
	return &scheduler{queued: map[uint64]bool{}, again: map[uint64]bool{},
		timers: map[uint64]*time.Timer{}, running: map[uint64]bool{},
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

func (s *scheduler) push(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushLocked(id)
}

func (s *scheduler) pushLocked(id uint64) {
	if s.closed {
		return
	}
	if t, ok := s.timers[id]; ok {
		t.Stop()
		delete(s.timers, id)
	}
	if s.running[id] {
		s.again[id] = true
		return
	}
	if s.queued[id] {
		return
	}
	s.queued[id] = true
	s.queue = append(s.queue, id)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pushAt queues id at time at (at once if at has passed).
func (s *scheduler) pushAt(id uint64, at time.Time) {
	delay := time.Until(at)
	if delay <= 0 {
		s.push(id)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The job may still be running (a worker schedules its own retry):
	// the timer fires later and pushLocked copes with every case.
	if s.closed {
		return
	}
	if t, ok := s.timers[id]; ok {
		t.Stop()
	}
	s.timers[id] = time.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.timers, id)
		s.pushLocked(id)
	})
}

// next blocks until a job is available or ctx is done / the scheduler is
// closed (ok false).
func (s *scheduler) next(ctx context.Context) (uint64, bool) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, false
		}
		if len(s.queue) > 0 {
			id := s.queue[0]
			s.queue = s.queue[1:]
			s.running[id] = true
			more := len(s.queue) > 0
			s.mu.Unlock()
			if more { // let another worker pick the next one
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			return id, true
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, false
		case <-s.stop:
			return 0, false
		case <-s.wake:
		}
	}
}

// done marks id finished by its worker; re-queues it if pushed meanwhile.
func (s *scheduler) done(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, id)
	delete(s.queued, id)
	if s.again[id] {
		delete(s.again, id)
		s.pushLocked(id)
	}
}

// tracked reports whether id is queued, running or waiting on a timer.
func (s *scheduler) tracked(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, timed := s.timers[id]
	return s.queued[id] || s.running[id] || timed
}

// depth is the number of jobs waiting for a worker.
func (s *scheduler) depth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

func (s *scheduler) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
}

func (s *scheduler) stopTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
}
