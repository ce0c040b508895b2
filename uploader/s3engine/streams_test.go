package s3engine

import (
	"context"
	"testing"
	"time"
)

// A fake clock the probe reads.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// The probe keeps a level only when it adds throughput: simulated uploads
// whose aggregate rate depends on the number of streams settle where the
// rate stops growing.
func TestStreamsProbeSettlesWhereThroughputStopsGrowing(t *testing.T) {
	const part = 16 << 20
	tests := []struct {
		name string
		max  int
		rate map[int]float64 // streams -> aggregate bytes/s
		want int
	}{
		{"flat (loopback, cap, busy disk)", 4, map[int]float64{2: 400e6, 3: 410e6, 4: 405e6}, 2},
		{"each stream adds (long fat link)", 4, map[int]float64{2: 20e6, 3: 30e6, 4: 40e6}, 4},
		{"third helps, fourth not", 4, map[int]float64{2: 20e6, 3: 30e6, 4: 31e6}, 3},
		{"slower with more", 8, map[int]float64{2: 100e6, 3: 80e6}, 2},
		{"concurrency 2", 2, map[int]float64{2: 100e6}, 2},
		{"concurrency 1", 1, map[int]float64{1: 100e6}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(0, 0)}
			st := newStreams(tt.max, clk.now)
			ctx := context.Background()
			var inflight []*partWatch
			for range 200 {
				// Fill every free stream (each part sends its bytes at
				// once, so staggering never holds one back here)...
				for {
					l, _ := st.level()
					if len(inflight) >= l {
						break
					}
					w, err := st.acquire(ctx, part)
					if err != nil {
						t.Fatal(err)
					}
					w.sentBytes(part)
					inflight = append(inflight, w)
				}
				// ...then the oldest finishes: at the level's aggregate
				// rate, one part's worth of time after the last.
				l, _ := st.level()
				r := tt.rate[l]
				if r == 0 {
					t.Fatalf("probed level %d, beyond the table", l)
				}
				clk.t = clk.t.Add(time.Duration(float64(part) / r * float64(time.Second)))
				st.release(inflight[0], true)
				inflight = inflight[1:]
			}
			got, settled := st.level()
			if got != tt.want || !settled {
				t.Fatalf("level %d (settled %v), want %d settled", got, settled, tt.want)
			}
		})
	}
}

// A part may start only once the most recently started one has sent
// 1/limit of its bytes, so parts in flight stay out of step. A context
// that is already done shows whether acquire would wait.
func TestStreamsStaggerParts(t *testing.T) {
	const part = 16 << 20
	st := newStreams(4, time.Now) // starts at 2 streams
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
	st := newStreams(2, time.Now)
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
