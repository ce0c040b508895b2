package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ingestSim consumes events the way the daemon's ingest loop does: from a
// channel buffered like the daemon's, in batches of what is waiting (at
// most 512), one store commit per batch for the jobs it creates. A Seen and
// its Ready in one batch make one Queued job; a Ready whose Seen was
// committed in an earlier batch updates that Waiting job in a commit of its
// own. Commits cost commitCost each, standing in for bbolt's fdatasync plus
// its 2 ms MaxBatchDelay: the slower consumer is what makes the watcher's
// event order matter.
type ingestSim struct {
	in         chan Event
	commitCost time.Duration

	waiting map[string]bool      // Seen committed, no Ready yet
	ready   map[string]int       // Ready events per path
	readyAt map[string]time.Time // when each path's job was queued
	commits int                  // all commits
	updates int                  // commits for a single Ready split from its Seen
	batches int
	done    chan struct{} // closed once want paths are Ready
	want    int
}

func newIngestSim(want int, commitCost time.Duration) *ingestSim {
	return &ingestSim{
		in: make(chan Event, 1024), commitCost: commitCost, want: want,
		waiting: map[string]bool{}, ready: map[string]int{}, readyAt: map[string]time.Time{},
		done: make(chan struct{}),
	}
}

func (s *ingestSim) commit() {
	s.commits++
	time.Sleep(s.commitCost) // simulated fsync: work, not a wait for a condition
}

func (s *ingestSim) run(ctx context.Context) {
	for {
		var batch []Event
		select {
		case <-ctx.Done():
			return
		case ev := <-s.in:
			batch = append(batch, ev)
		}
	drain:
		for len(batch) < 512 {
			select {
			case ev := <-s.in:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		s.batches++
		created := map[string]bool{} // path -> this batch's new job is Queued
		for _, ev := range batch {
			switch ev.Kind {
			case Seen:
				if !s.waiting[ev.RelPath] {
					created[ev.RelPath] = false
				}
			case Ready:
				s.ready[ev.RelPath]++
				if _, ok := created[ev.RelPath]; ok || !s.waiting[ev.RelPath] {
					created[ev.RelPath] = true
					continue
				}
				s.updates++
				s.commit() // Update of the Waiting job: its own transaction
				delete(s.waiting, ev.RelPath)
				s.readyAt[ev.RelPath] = time.Now()
			}
		}
		if len(created) > 0 {
			s.commit()
			for p, queued := range created {
				if queued {
					delete(s.waiting, p)
					s.readyAt[p] = time.Now()
				} else {
					s.waiting[p] = true
				}
			}
		}
		if len(s.readyAt) >= s.want {
			close(s.done)
			<-ctx.Done()
			return
		}
	}
}

// TestBurstRenamedIn drops a burst of finished files into the folder at
// once, as the benchmark and operators do (a whole directory renamed in, or
// the files renamed in one by one), with StableAfter 0, and consumes the
// events like the daemon. Every file must be queued within a second, not
// at one commit per file: a Ready that does not follow its Seen closely
// lands in a later ingest batch and costs the daemon a transaction.
func TestBurstRenamedIn(t *testing.T) {
	requireLeases(t)
	const n, size = 2000, 4 << 10
	const commitCost = 4 * time.Millisecond
	tests := []struct {
		name    string
		dirMove bool
	}{
		{"directory renamed in", true},
		{"files renamed in one by one", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "watched")
			stage := filepath.Join(base, "stage")
			for _, d := range []string{root, stage} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, size)
			for i := range n {
				if err := os.WriteFile(filepath.Join(stage, fmt.Sprintf("f%04d.mp4", i)), buf, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			h := newHarness(t, opts{root: root})
			sim := newIngestSim(n, commitCost)
			ctx, cancel := context.WithCancel(context.Background())
			runDone := make(chan error, 1)
			go func() { runDone <- h.w.Run(ctx, sim.in) }()
			simDone := make(chan struct{})
			go func() { defer close(simDone); sim.run(ctx) }()
			t.Cleanup(func() {
				cancel()
				<-simDone
				if err := <-runDone; err != nil {
					t.Errorf("Run = %v", err)
				}
			})
			h.waitScans(1, 5*time.Second)

			begin := time.Now()
			if tt.dirMove {
				if err := os.Rename(stage, filepath.Join(root, "drop")); err != nil {
					t.Fatal(err)
				}
			} else {
				for i := range n {
					name := fmt.Sprintf("f%04d.mp4", i)
					if err := os.Rename(filepath.Join(stage, name), filepath.Join(root, name)); err != nil {
						t.Fatal(err)
					}
				}
			}
			moved := time.Since(begin)
			select {
			case <-sim.done:
			case <-time.After(30 * time.Second):
				cancel()
				<-simDone
				t.Fatalf("only %d of %d files queued after 30s (%d commits)", len(sim.readyAt), n, sim.commits)
			}
			cancel()
			<-simDone // sim's maps are ours from here

			var last time.Time
			for p, at := range sim.readyAt {
				if at.After(last) {
					last = at
				}
				if c := sim.ready[p]; c != 1 {
					t.Errorf("%s Ready %d times", p, c)
				}
			}
			took := last.Sub(begin)
			t.Logf("renaming took %v; all %d queued %v after the first rename; %d batches, %d commits, %d of them single-file updates",
				moved.Round(time.Millisecond), n, took.Round(time.Millisecond), sim.batches, sim.commits, sim.updates)
			// With each Ready right behind its Seen only a batch boundary
			// can split a pair: at most one single-file update per batch.
			if sim.updates > sim.batches {
				t.Errorf("%d single-file updates in %d batches: Ready events are separated from their Seen", sim.updates, sim.batches)
			}
			// A generous bound: it catches a stall (a missed event waiting
			// for the next rescan), not a slow machine.
			if took > moved+5*time.Second {
				t.Errorf("all queued %v after the renames finished, want within 5s", took-moved)
			}
		})
	}
}

// With StableAfter 0 a file is checked the moment it is noticed; a writer
// that still has it open must hold it back all the same, and closing it
// must bring exactly one Ready for the final version.
func TestZeroStableAfterWriterHeldBack(t *testing.T) {
	requireLeases(t)
	h := newHarness(t, opts{}).start()
	h.waitScans(1, 5*time.Second)

	p := filepath.Join(h.root, "rec.mxf")
	fd, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// The sentinel's Ready comes through the loop after rec.mxf's events,
	// each of which checked rec.mxf at once and found the writer.
	h.sentinel("zz.mp4")
	if n := h.count(Ready, "rec.mxf"); n != 0 {
		t.Fatalf("rec.mxf Ready %d times while its writer has it open", n)
	}
	if h.w.Stats().ProbeBusy == 0 {
		t.Error("ProbeBusy = 0: the probe never found the writer")
	}
	if _, err := fd.Write(make([]byte, 500)); err != nil {
		t.Fatal(err)
	}
	closedAt := time.Now()
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.waitKind(Ready, "rec.mxf", 5*time.Second)
	if r.at.Before(closedAt) || r.Info.Size != 1500 {
		t.Errorf("Ready at %v size %d; want after the close at %v, size 1500", r.at, r.Info.Size, closedAt)
	}
	h.sentinel("zz2.mp4")
	if n := h.count(Ready, "rec.mxf"); n != 1 {
		t.Errorf("rec.mxf Ready %d times, want 1", n)
	}
}
