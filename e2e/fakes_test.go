package e2e

import (
	"context"
	"crypto/rand"
	"sync"
)

// hook is a crash point inside a test server (see the platforms' *test
// packages' On... hooks). Armed, it fires once: it signals hit
// and, if it blocks, holds the request until the client goes away (the
// daemon was killed) or release is closed.
type hook struct {
	mu      sync.Mutex
	armed   bool
	block   bool
	hit     chan struct{}
	release chan struct{}
}

func newHook(block bool) *hook {
	return &hook{armed: true, block: block, hit: make(chan struct{}, 1), release: make(chan struct{})}
}

func (h *hook) fire(ctx context.Context) {
	if h == nil {
		return
	}
	h.mu.Lock()
	armed := h.armed
	h.armed = false
	h.mu.Unlock()
	if !armed {
		return
	}
	h.hit <- struct{}{}
	if h.block {
		select {
		case <-ctx.Done():
		case <-h.release:
		}
	}
}

func randID(n int) string {
	const abc = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = abc[int(b[i])%len(abc)]
	}
	return string(b)
}

// uniqueBucket makes prefix unique in the shared MinIO (-count=N reuses it).
func uniqueBucket(prefix string) string { return prefix + "-" + randID(6) }
