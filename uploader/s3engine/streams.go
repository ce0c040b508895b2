package s3engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// streams decides when a multipart upload's next part may be sent. Two
// rules, both about what a crash throws away (the bytes of parts that were
// being sent) without costing throughput:
//
//   - As many parts at once as add throughput, up to Concurrency. An upload
//     starts with two streams and probes one more at a time: each level is
//     measured over a few parts and kept only if it is at least
//     streamGain (25 %) faster than the last. A stream that adds nothing (a
//     loopback or LAN store, a bandwidth cap, a busy disk) only adds bytes
//     in flight; on a long fat link, where each TCP stream is limited by
//     its window, the upload climbs to Concurrency.
//   - Parts in flight are staggered: a new part starts only once the most
//     recently started one has sent 1/limit of its bytes. Parts that start
//     together also end together, so a crash near their end would lose
//     nearly limit whole parts; staggered, the parts in flight add up to
//     about limit/2 parts at any moment. Parts that drifted into step are
//     pulled apart again.
type streams struct {
	now func() time.Time
	max int

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced on every change
	limit    int
	inflight int
	youngest *partWatch // most recently started part still in flight

	// Probing state.
	settled   bool
	warmup    int       // completions still to skip at this level
	measured  int       // completions counted at this level
	bytes     int64     // bytes of those completions
	since     time.Time // when measuring at this level began
	bestRate  float64   // bytes/s of the best level so far
	bestLevel int
}

// Probing knobs: how many parts per stream a level is measured over, and
// how much faster a level must be to be kept.
const (
	streamProbeParts = 3
	streamGain       = 1.25
	streamStart      = 2
)

func newStreams(maxStreams int, now func() time.Time) *streams {
	maxStreams = max(1, maxStreams)
	s := &streams{now: now, max: maxStreams, limit: min(streamStart, maxStreams), wake: make(chan struct{})}
	s.settled = s.limit == s.max
	// The first parts include the ramp-up (connections, the stagger):
	// measured, they would make the next level look faster than it is.
	s.warmup = s.limit
	s.since = now()
	return s
}

// partWatch follows how many bytes of a part were sent.
type partWatch struct {
	len       int64
	threshold int64 // bytes after which the next part may start
	sent      atomic.Int64
	crossed   atomic.Bool
	s         *streams
}

// sentBytes is called by the part's body as bytes go out.
func (w *partWatch) sentBytes(n int64) {
	if w.sent.Add(n) >= w.threshold && w.crossed.CompareAndSwap(false, true) {
		w.s.mu.Lock()
		w.s.signal()
		w.s.mu.Unlock()
	}
}

// signal wakes waiters; s.mu is held.
func (s *streams) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// acquire waits until a part of n bytes may start and returns its watch.
func (s *streams) acquire(ctx context.Context, n int64) (*partWatch, error) {
	s.mu.Lock()
	for {
		if s.inflight < s.limit && (s.youngest == nil || s.youngest.crossed.Load()) {
			break
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.inflight++
	w := &partWatch{len: n, threshold: n / int64(s.limit), s: s}
	if w.threshold <= 0 {
		w.crossed.Store(true)
	}
	s.youngest = w
	return w, nil
}

// release ends a part; ok reports whether it was sent (it counts towards
// the rate of the current level). settled reports that this part ended the
// probe.
func (s *streams) release(w *partWatch, ok bool) (settled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.youngest == w {
		s.youngest = nil
	}
	was := s.settled
	if ok {
		s.completed(w.len)
	}
	s.signal()
	return s.settled && !was
}

// completed feeds the probe; s.mu is held.
func (s *streams) completed(n int64) {
	if s.settled {
		return
	}
	if s.warmup > 0 {
		// Parts started at the previous level: skip them.
		s.warmup--
		if s.warmup == 0 {
			s.since = s.now()
		}
		return
	}
	s.measured++
	s.bytes += n
	if s.measured < streamProbeParts*s.limit {
		return
	}
	elapsed := s.now().Sub(s.since).Seconds()
	rate := float64(s.bytes) / max(elapsed, 1e-9)
	switch {
	case s.bestLevel == 0 || rate >= s.bestRate*streamGain:
		s.bestRate, s.bestLevel = rate, s.limit
		if s.limit < s.max {
			s.setLevel(s.limit + 1)
			return
		}
		s.settled = true
	default:
		s.limit = s.bestLevel
		s.settled = true
	}
}

// setLevel moves to a new level and starts measuring it once the parts in
// flight (started under the old one) have finished.
func (s *streams) setLevel(l int) {
	s.limit = l
	s.measured, s.bytes = 0, 0
	s.warmup = s.inflight
	s.since = s.now()
}

// level reports the current limit and whether probing has ended.
func (s *streams) level() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit, s.settled
}
