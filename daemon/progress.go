package daemon

import (
	"sync"
	"sync/atomic"
	"time"
)

// Rate and ETA come from a small window of (time, bytes) samples per job
// and destination: an average over the whole transfer would hide a stall,
// a single interval would jump with every part.
const (
	progressSamples  = 16
	progressInterval = 250 * time.Millisecond // 16 samples: a 4 s window
)

type sample struct {
	at    time.Time
	bytes int64
}

// progress is the live byte counter of one transfer plus its samples.
type progress struct {
	bytes atomic.Int64

	mu      sync.Mutex
	samples [progressSamples]sample
	n       int // samples recorded so far (ring position is n % len)
}

func newProgress() *progress { return &progress{} }

// set records n bytes done at now; a sample is kept at most every
// progressInterval so the window spans seconds, not calls.
func (p *progress) set(n int64, now time.Time) {
	p.bytes.Store(n)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n > 0 {
		last := p.samples[(p.n-1)%progressSamples]
		if now.Sub(last.at) < progressInterval {
			return
		}
	}
	p.samples[p.n%progressSamples] = sample{now, n}
	p.n++
}

// rate is bytes per second over the window ending now; 0 when unknown.
// A transfer that stopped moving decays to 0 as now moves on.
func (p *progress) rate(now time.Time) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return 0
	}
	oldest := p.samples[0]
	if p.n > progressSamples {
		oldest = p.samples[p.n%progressSamples]
	}
	cur := p.bytes.Load()
	dt := now.Sub(oldest.at).Seconds()
	if dt <= 0 || cur <= oldest.bytes {
		return 0
	}
	return float64(cur-oldest.bytes) / dt
}

// eta is the time left at rate for size-done bytes; 0 when unknown.
func eta(size, done int64, rate float64) time.Duration {
	if rate <= 0 || done >= size {
		return 0
	}
	return time.Duration(float64(size-done) / rate * float64(time.Second)).Round(time.Second)
}
