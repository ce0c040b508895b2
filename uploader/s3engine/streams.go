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
//   - As many parts at once as add throughput, up to the ceiling. An upload
//     starts at the level the destination settled on last time (two for
//     the first upload; eight towards a distant store) and doubles it while doubling pays (quadruples it
//     after a doubling that doubled the rate): the aggregate
//     rate of the bytes the parts send is measured over a short window once
//     every stream of a level is running, and a level is kept only if it is
//     at least streamGain faster than the last. A stream that adds nothing
//     (a loopback or LAN store, a shared bandwidth cap, a busy disk) only
//     adds bytes in flight; over a WAN, where each TCP connection is held
//     back by its window or by per-connection shaping, the level climbs in
//     a few steps (2, 4, 16) to where the link is full. A leap that does
//     not pay is followed by a try of the level in between.
//   - Parts in flight are staggered: a new part starts only once the most
//     recently started one has sent 1/limit of its bytes (1/(2*limit)
//     above two streams, where a full share would hold the level below
//     its limit). Parts that start together also end together, so a crash
//     near their end would lose nearly limit whole parts; staggered, they
//     end spread out.
//
// A level that shows no gain in its window is measured once more before it
// is given up (a busy machine slows single windows). Once settled, the
// rate keeps being watched over longer windows: a link that gets much
// faster or slower (a route change, shaping that kicks in) starts the
// probe again from the current level, and below the ceiling the level
// looks one doubling up now and then (after 4 s, backing off to 64 s
// while that does not pay), which finds a link that freed up without
// changing the current level's rate.
type streams struct {
	now   func() time.Time
	max   int
	learn func(level int) // told the settled level; may be nil

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced on every change
	limit    int
	inflight int
	youngest *partWatch // most recently started part still in flight
	// staggerMax, when set, bounds how long a part waits for the youngest
	// to cross its share (see farStagger).
	staggerMax time.Duration
	sent       int64 // body bytes sent by every part so far

	// Probing state.
	settled     bool
	announced   bool // release reported the settling
	winOpen     bool
	winStart    time.Time
	winSent     int64
	bestRate    float64 // bytes/s of the best level so far
	bestLevel   int
	firstRate   float64       // a first window of this level that showed no gain; 0: none
	upAt        time.Time     // when a settled level looks one doubling up
	upGap       time.Duration // the wait before that
	upFrom      int           // the level a look up started from; 0: not looking up
	noGain      int           // a level measured not to pay over bestLevel; 0: none
	settledRate float64
}

// Probing knobs.
const (
	streamStart = 2
	// streamStartFar is the first level towards a store measured far
	// away (see localRTT) when nothing was learned yet: twice what the
	// usual tools keep (four), since a distant link is nearly always held
	// back per connection. It applies once per destination: the level
	// learned then is kept, across restarts too.
	streamStartFar = 8
	// streamGain is how much faster a doubled level must be to be kept.
	// Doubling the streams of a per-connection-limited link nearly doubles
	// the rate; the margin keeps noise (a socket buffer filling as a part
	// starts) from growing the level on a link that is already full.
	streamGain = 1.3
	// streamLinear: a doubling whose rate grew at least this share of
	// the streams' growth counts as linear (the next step is x4).
	streamLinear = 0.8
	// streamWindow is how long a level is measured; streamWatch the window
	// used once settled, streamDrift the change that starts a new probe.
	streamWindow = 300 * time.Millisecond
	streamWatch  = 2 * time.Second
	streamDrift  = 1.5
	// streamUpFirst is how long a settled level waits before it looks
	// one doubling up (streamUpMax at most, after tries that did not pay).
	streamUpFirst = 4 * time.Second
	streamUpMax   = 64 * time.Second
	// farStagger caps the stagger towards a distant store: there a share
	// of a part can take a second to send on a thin per-connection link
	// (5 MiB/s), and waiting for it would take 30 s to fill 32 streams.
	farStagger = 25 * time.Millisecond
)

// newStreams returns the pacing of one upload: at most maxStreams parts in
// flight, starting with start (0: streamStart).
func newStreams(maxStreams, start int, now func() time.Time, learn func(int)) *streams {
	maxStreams = max(1, maxStreams)
	if start <= 0 {
		start = streamStart
	}
	s := &streams{now: now, max: maxStreams, learn: learn, limit: min(start, maxStreams), wake: make(chan struct{})}
	if s.limit == s.max && s.max <= streamStart {
		// Nothing to probe.
		s.settled, s.announced = true, true
	}
	return s
}

// partWatch follows how many bytes of a part were sent.
type partWatch struct {
	len       int64
	threshold int64 // bytes after which the next part may start
	started   time.Time
	sent      atomic.Int64
	crossed   atomic.Bool
	s         *streams
}

// sentBytes is called by the part's body as bytes go out.
func (w *partWatch) sentBytes(n int64) {
	crossed := w.sent.Add(n) >= w.threshold && w.crossed.CompareAndSwap(false, true)
	s := w.s
	s.mu.Lock()
	s.sent += n
	if crossed {
		s.signal()
	}
	s.tick()
	s.mu.Unlock()
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
		var timer <-chan time.Time
		if s.inflight < s.limit {
			y := s.youngest
			if y == nil || y.crossed.Load() {
				break
			}
			if s.staggerMax > 0 {
				wait := y.started.Add(s.staggerMax).Sub(s.now())
				if wait <= 0 {
					break
				}
				timer = time.After(wait)
			}
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-timer:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.inflight++
	share := int64(s.limit)
	if s.limit > streamStart {
		// More streams than a local store gets: half a share each, or
		// the stagger itself would hold the level below its limit (parts
		// do not end evenly spaced) and slow the climb.
		share *= 2
	}
	w := &partWatch{len: n, threshold: n / share, started: s.now(), s: s}
	if w.threshold <= 0 {
		w.crossed.Store(true)
	}
	s.youngest = w
	return w, nil
}

// release ends a part. settled reports that the probe settled while this
// part was in flight (for a log line).
func (s *streams) release(w *partWatch, ok bool) (settled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.youngest == w {
		s.youngest = nil
	}
	s.signal()
	if s.settled && !s.announced {
		s.announced = true
		return true
	}
	return false
}

// tick advances the probe; s.mu is held.
func (s *streams) tick() {
	now := s.now()
	if !s.winOpen {
		// Measure once (nearly) every stream of the level is running; the
		// stagger keeps the last one or two from starting at once.
		if s.inflight >= s.limit-s.limit/4 {
			s.winOpen, s.winStart, s.winSent = true, now, s.sent
		}
		return
	}
	el := now.Sub(s.winStart)
	win := streamWindow
	if s.settled {
		win = streamWatch
	}
	if el < win {
		return
	}
	rate := float64(s.sent-s.winSent) / el.Seconds()
	s.winOpen = false
	if s.settled {
		drift := rate > s.settledRate*streamDrift || rate*streamDrift < s.settledRate
		// Below the ceiling, look up once in a while even when nothing
		// moved: the level may have settled in a slow moment, or the
		// link may have freed up (other uploads ended), which leaves the
		// rate of this level as it was. Each try that does not pay waits
		// twice as long for the next one.
		up := !drift && s.limit < s.max && !now.Before(s.upAt)
		if drift || up {
			s.settled, s.announced = false, false
			s.bestRate, s.bestLevel, s.noGain = rate, s.limit, 0
			s.upFrom = 0
			if up {
				s.upFrom = s.limit
			}
			if s.limit < s.max {
				s.setLevel(min(s.limit*2, s.max))
			} else {
				s.settle(rate)
			}
		}
		return
	}
	// A level is kept when it beat the best by streamGain for each
	// doubling it is above it.
	need := streamGain
	if s.bestLevel > 0 && s.limit > 2*s.bestLevel {
		need = streamGain * streamGain
	}
	if s.bestLevel > 0 && rate < s.bestRate*need {
		if s.firstRate == 0 {
			// No gain in one window: measure the level once more before
			// giving it up. What disturbs a window (a busy CPU, another
			// upload, a socket buffer draining) mostly slows it, so one
			// slow window must not settle a WAN upload at a level that
			// leaves most of the link unused for the rest of the file.
			s.firstRate = rate
			return
		}
		rate = max(rate, s.firstRate)
	}
	s.firstRate = 0
	switch {
	case s.bestLevel == 0 || rate >= s.bestRate*need:
		step := 2
		if s.bestLevel == 0 && s.limit > streamStart {
			// The first step from a far or learned start: leap, the
			// level in between is tried if the leap does not pay.
			step = 4
		}
		if s.bestLevel > 0 && rate/s.bestRate >= streamLinear*float64(s.limit)/float64(s.bestLevel) {
			// The rate grew in step with the streams: each connection is
			// held back on its own, so leap further.
			step = 4
		}
		s.bestRate, s.bestLevel = rate, s.limit
		next := min(s.limit*step, s.max)
		if s.noGain > 0 && next >= s.noGain {
			// Between here and a level known not to pay: try the one in
			// the middle, if there is one.
			next = s.limit * 2
			if next >= s.noGain {
				s.settle(rate)
				return
			}
		}
		if s.limit < s.max {
			s.setLevel(next)
			return
		}
		s.settle(rate)
	case s.limit > 2*s.bestLevel:
		// A leap overshot: try the level halfway (in doublings) before
		// settling.
		s.noGain = s.limit
		s.setLevel(2 * s.bestLevel)
	default:
		s.limit = s.bestLevel
		s.settle(s.bestRate)
	}
}

func (s *streams) setLevel(l int) {
	s.firstRate = 0
	s.limit = l
	s.signal()
}

// settle ends probing at the current limit; s.mu is held.
func (s *streams) settle(rate float64) {
	s.settled, s.settledRate = true, rate
	switch {
	case s.upFrom > 0 && s.limit <= s.upFrom:
		s.upGap = min(2*s.upGap, streamUpMax) // looked up for nothing
	default:
		s.upGap = streamUpFirst
	}
	s.upFrom = 0
	s.upAt = s.now().Add(s.upGap)
	if s.learn != nil {
		s.learn(s.limit)
	}
}

// level reports the current limit and whether probing has ended.
func (s *streams) level() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit, s.settled
}
