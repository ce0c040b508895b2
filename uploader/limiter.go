package uploader

import (
	"context"
	"sync"
	"time"
)

// Limiter is a bandwidth cap shared by all uploads. A nil *Limiter is no cap.
//
// It is a token bucket that lets the balance go negative: a caller takes the
// bytes it wants at once and then sleeps until the debt is paid. That keeps
// the long-run rate exact and serves concurrent readers in arrival order
// without a queue.
type Limiter struct {
	bytesPerSec int64
	burst       float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// limiterChunk bounds one Read through a limited reader so a low cap still
// yields steady progress (and feeds the stall watchdog) instead of long
// stop-and-go pauses.
const limiterChunk = 64 << 10

// NewLimiter returns a cap of bytesPerSec shared by everything that uses it;
// bytesPerSec <= 0 returns nil (no cap).
func NewLimiter(bytesPerSec int64) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	// A twentieth of a second of traffic, but never less than one read
	// chunk: small enough that the rate holds over short windows.
	burst := max(float64(bytesPerSec)/20, limiterChunk)
	return &Limiter{bytesPerSec: bytesPerSec, burst: burst, tokens: burst, last: time.Now()}
}

// Rate returns the cap in bytes per second (0: none).
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	return l.bytesPerSec
}

// WaitN blocks until n bytes may be sent or ctx is done.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*float64(l.bytesPerSec))
	l.last = now
	l.tokens -= float64(n)
	debt := l.tokens
	l.mu.Unlock()
	if debt >= 0 {
		return nil
	}
	wait := time.Duration(-debt / float64(l.bytesPerSec) * float64(time.Second))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		// Give the unsent bytes back so other uploads are not slowed by a
		// cancelled one.
		l.mu.Lock()
		l.tokens += float64(n)
		l.mu.Unlock()
		return ctx.Err()
	}
}
