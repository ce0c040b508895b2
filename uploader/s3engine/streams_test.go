package s3engine

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// A fake clock the probe reads.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// link is a simulated network: the aggregate rate (bytes/s) of n parts in
// flight.
type link func(n int) float64

// perConn is a link where each connection is capped (TCP window, shaping)
// and the whole at total (0: no cap).
func perConn(conn, total float64) link {
	return func(n int) float64 {
		r := conn * float64(n)
		if total > 0 {
			r = min(r, total)
		}
		return r
	}
}

// simulate sends parts of part bytes through st over a fake clock for d,
// the link's rate shared by the parts in flight, and returns the level at
// the end. at, when set, switches the link at a time.
func simulate(t *testing.T, st *streams, clk *fakeClock, part int64, d time.Duration, l link, at time.Duration, l2 link) int {
	t.Helper()
	done, cancel := context.WithCancel(context.Background())
	cancel() // acquire must not wait: the loop is the only goroutine
	const dt = 5 * time.Millisecond
	type inflight struct {
		w    *partWatch
		left int64
	}
	var parts []*inflight
	start := clk.t
	for clk.t.Sub(start) < d {
		for {
			w, err := st.acquire(done, part)
			if err != nil {
				break
			}
			parts = append(parts, &inflight{w: w, left: part})
		}
		clk.t = clk.t.Add(dt)
		cur := l
		if l2 != nil && clk.t.Sub(start) >= at {
			cur = l2
		}
		each := int64(cur(len(parts)) / float64(len(parts)) * dt.Seconds())
		for _, p := range parts {
			n := min(each, p.left)
			p.left -= n
			p.w.sentBytes(n)
		}
		kept := parts[:0]
		for _, p := range parts {
			if p.left == 0 {
				st.release(p.w, true)
				continue
			}
			kept = append(kept, p)
		}
		parts = kept
	}
	got, _ := st.level()
	return got
}

// The probe doubles the parts in flight while that adds throughput and
// settles where it stops adding: on a loopback store it stays at two, on a
// per-connection-limited WAN link it climbs to the ceiling within seconds.
func TestStreamsProbe(t *testing.T) {
	const part = 16 << 20
	const mb = 1 << 20
	tests := []struct {
		name     string
		max      int
		start    int
		link     link
		within   time.Duration
		want     int
		wantLrnd int
	}{
		{"flat (loopback, busy disk)", 16, 0, perConn(400*mb, 400*mb), 10 * time.Second, 2, 2},
		{"WAN, 20 MiB/s per connection", 16, 0, perConn(20*mb, 0), 3 * time.Second, 16, 16},
		{"WAN with a 120 MiB/s uplink", 16, 0, perConn(20*mb, 120*mb), 6 * time.Second, 8, 8},
		{"WAN, 5 MiB/s per connection", 32, 0, perConn(5*mb, 0), 20 * time.Second, 32, 32},
		{"learned level", 16, 8, perConn(20*mb, 0), 3 * time.Second, 16, 16},
		{"far start leaps to the ceiling", 32, streamStartFar, perConn(20*mb, 0), 2 * time.Second, 32, 32},
		{"far start on a 60 MiB/s uplink", 32, streamStartFar, perConn(20*mb, 60*mb), 6 * time.Second, 8, 8},
		{"ceiling 2", 2, 0, perConn(20*mb, 0), 2 * time.Second, 2, 0},
		{"ceiling 1", 1, 0, perConn(20*mb, 0), 2 * time.Second, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(0, 0)}
			learned := 0
			st := newStreams(tt.max, tt.start, clk.now, func(l int) { learned = l })
			got := simulate(t, st, clk, part, tt.within, tt.link, 0, nil)
			_, settled := st.level()
			// A settled level below the ceiling looks one doubling up now
			// and then; the end may fall in such a look.
			looking := !settled && got == 2*tt.want && learned == tt.want
			if got != tt.want && !looking {
				t.Fatalf("level %d after %s (settled %v, learned %d), want %d", got, tt.within, settled, learned, tt.want)
			}
			if !settled && !looking {
				t.Errorf("not settled")
			}
			if learned != tt.wantLrnd {
				t.Errorf("learned %d, want %d", learned, tt.wantLrnd)
			}
		})
	}
}

// A link that changes during a long upload is found by the settled level:
// shaping that cuts each connection to a fifth changes the rate and starts
// the probe again; a link that frees up without changing the settled
// level's rate (other uploads that shared it ended) is found by its looks
// upwards.
func TestStreamsFollowLinkChanges(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name          string
		before, after link
		at            time.Duration
	}{
		{"per-connection shaping kicks in", perConn(200*mb, 200*mb), perConn(10*mb, 0), 10 * time.Second},
		{"the uplink's sum cap goes away", perConn(20*mb, 80*mb), perConn(20*mb, 0), 8 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(0, 0)}
			st := newStreams(16, 0, clk.now, nil)
			if got := simulate(t, st, clk, 16<<20, 30*time.Second, tt.before, tt.at, tt.after); got != 16 {
				t.Fatalf("level %d after the link changed, want 16", got)
			}
		})
	}
}

// A part may start only once the most recently started one has sent
// 1/limit of its bytes, so parts in flight stay out of step. A context
// that is already done shows whether acquire would wait.
func TestStreamsStaggerParts(t *testing.T) {
	const part = 16 << 20
	st := newStreams(4, 0, time.Now, nil) // starts at 2 streams
	done, cancel := context.WithCancel(context.Background())
	cancel()

	first, err := st.acquire(done, part)
	if err != nil {
		t.Fatalf("first part must start at once: %v", err)
	}
	if _, err := st.acquire(done, part); err == nil {
		t.Fatal("second part started while the first had sent nothing")
	}
	first.sentBytes(part/2 - 1)
	if _, err := st.acquire(done, part); err == nil {
		t.Fatal("second part started before the first had sent half")
	}
	first.sentBytes(1)
	second, err := st.acquire(done, part)
	if err != nil {
		t.Fatalf("second part must start once the first sent half: %v", err)
	}
	second.sentBytes(part)
	if _, err := st.acquire(done, part); err == nil {
		t.Fatal("a third part started with two streams busy")
	}
	st.release(first, true)
	if _, err := st.acquire(done, part); err != nil {
		t.Fatalf("a part must start when a stream is free and the youngest is past its share: %v", err)
	}
}

// A waiting acquire wakes when the part ahead of it crosses its share.
func TestStreamsWaiterWakes(t *testing.T) {
	const part = 1 << 20
	st := newStreams(2, 0, time.Now, nil)
	first, err := st.acquire(context.Background(), part)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := st.acquire(ctx, part)
		got <- err
	}()
	first.sentBytes(part / 2)
	if err := <-got; err != nil {
		t.Fatalf("waiting acquire: %v", err)
	}
}

// A busy machine makes some measuring windows slow (another process takes
// the CPU for a few hundred milliseconds). One slow window must not settle
// a per-connection-limited WAN upload at a level that leaves most of the
// link unused: the level is measured again before it is given up.
func TestStreamsProbeSurvivesSlowWindows(t *testing.T) {
	const mb = 1 << 20
	for seed := range uint64(40) {
		clk := &fakeClock{t: time.Unix(0, 0)}
		rng := rand.New(rand.NewPCG(seed, 17))
		// Dips of half the rate, 250 ms long, starting at random moments.
		var dipUntil time.Time
		noisy := func(n int) float64 {
			if clk.t.After(dipUntil) && rng.Float64() < 0.03 {
				dipUntil = clk.t.Add(250 * time.Millisecond)
			}
			r := 20 * mb * float64(n)
			if clk.t.Before(dipUntil) {
				r /= 2
			}
			return r
		}
		st := newStreams(16, streamStartFar, clk.now, nil)
		if got := simulate(t, st, clk, 16<<20, 10*time.Second, noisy, 0, nil); got < 16 {
			t.Errorf("seed %d: level %d after 10 s on a 20 MiB/s-per-connection link with slow windows, want 16", seed, got)
		}
	}
}

// Towards a distant store the stagger is capped in time: on a thin
// per-connection link a part's share can take a second to send, so the
// next part starts after farStagger at the latest.
func TestStreamsFarStaggerIsCapped(t *testing.T) {
	const part = 16 << 20
	clk := &fakeClock{t: time.Unix(0, 0)}
	st := newStreams(8, 4, clk.now, nil)
	st.staggerMax = farStagger
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.acquire(done, part); err != nil {
		t.Fatalf("first part must start at once: %v", err)
	}
	if _, err := st.acquire(done, part); err == nil {
		t.Fatal("second part started at the same moment as the first")
	}
	clk.t = clk.t.Add(farStagger)
	if _, err := st.acquire(done, part); err != nil {
		t.Fatalf("second part must start %v after the first, sent or not: %v", farStagger, err)
	}

	// With the real clock, a waiting part is woken by the cap.
	rs := newStreams(8, 4, time.Now, nil)
	rs.staggerMax = farStagger
	if _, err := rs.acquire(context.Background(), part); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	t0 := time.Now()
	if _, err := rs.acquire(ctx, part); err != nil {
		t.Fatalf("second part never started: %v", err)
	}
	if el := time.Since(t0); el < farStagger/2 {
		t.Errorf("second part started after %v, want about %v", el, farStagger)
	}
}
