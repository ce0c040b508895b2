package torture

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// How a file arrives in the inbox.
type arrival int

const (
	renamedIn arrival = iota // written elsewhere, renamed into place
	tempName                 // written as .name.tmp in the inbox, then renamed
	slowGrow                 // written in place in chunks over seconds, held open
	copiedIn                 // written in place at once (cp)
)

func (a arrival) String() string {
	return [...]string{"renamed", "temp-name", "slow-grow", "copied"}[a]
}

// writeArrival makes rel appear in the inbox the way a, returning an error
// (never failing the test itself: it runs off the test goroutine).
func writeArrival(s *site, rel string, data []byte, a arrival, r *rand.Rand) error {
	dst := filepath.Join(s.inbox, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch a {
	case renamedIn:
		tmp := filepath.Join(s.stage, fmt.Sprintf("f%d", stageSeq.Add(1)))
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	case tempName:
		tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	case slowGrow:
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		chunks := 3 + r.IntN(5)
		step := (len(data) + chunks - 1) / chunks
		for off := 0; off < len(data); off += step {
			if _, err := f.Write(data[off:min(off+step, len(data))]); err != nil {
				f.Close()
				return err
			}
			// Longer than stable_after: only the writer probe holds it.
			time.Sleep(time.Duration(200+r.IntN(500)) * time.Millisecond)
		}
		return f.Close()
	default:
		return os.WriteFile(dst, data, 0o644)
	}
}

// TestCrashTorture drops files of mixed sizes and arrival styles into a
// folder fanned out to two S3 destinations while the daemon is SIGKILLed at
// random moments and restarted; afterwards everything must be delivered
// exactly once, filed once, and the database must be consistent.
func TestCrashTorture(t *testing.T) {
	t.Parallel()
	sd := seed(t)
	r := rand.New(rand.NewPCG(sd, 1))
	proxy := testenv.NewProxy(t, minio.Endpoint)
	s := newSite(t, siteConfig{dests: []destSpec{
		{name: "archive", bucket: newBucket(t, "a"), endpoint: proxy.URL},
		{name: "mirror", bucket: newBucket(t, "m")},
	}})
	e := newExpect()

	// Junk that must never be touched.
	for _, rel := range []string{".DS_Store", "._clip-000.mp4", "Thumbs.db", "render.part", "notes.txt",
		"~$edit.mp4", "backup.mp4~", "desktop.ini", "half.mp4.crdownload", "keep/.hidden.mov", "keep/x.partial"} {
		s.drop(rel, []byte("junk "+rel))
		e.keep(s, rel)
	}

	type plan struct {
		rel  string
		size int
		how  arrival
		seed uint64
	}
	plans := make([]plan, P.crashFiles)
	exts := []string{"mp4", "mov", "mxf", "wav"}
	large := 0
	for i := range plans {
		p := plan{seed: r.Uint64()}
		switch {
		case i < P.crashLarge:
			p.size = partSize + 1 + r.IntN(8*mib)
			large++
		case r.IntN(5) == 0:
			p.size = 512<<10 + r.IntN(3*mib)
		default:
			p.size = 1 + r.IntN(256<<10)
		}
		p.rel = fmt.Sprintf("clip-%03d.%s", i, exts[r.IntN(len(exts))])
		switch r.IntN(5) {
		case 0:
			p.rel = fmt.Sprintf("d%d/%s", r.IntN(4), p.rel)
		case 1:
			p.rel = fmt.Sprintf("d%d/e%d/%s", r.IntN(3), r.IntN(3), p.rel)
		}
		p.how = arrival([]int{0, 0, 0, 1, 1, 2, 3, 3}[r.IntN(8)])
		plans[i] = p
	}
	r.Shuffle(len(plans), func(i, j int) { plans[i], plans[j] = plans[j], plans[i] })
	var mu sync.Mutex
	var total int64
	for _, p := range plans {
		data := content(rand.New(rand.NewPCG(p.seed, 2)), p.size)
		e.delivered[p.rel] = sum(data)
		total += int64(p.size)
	}

	s.start()
	// The dropper spreads arrivals over most of the kill phase.
	dropPhase := time.Duration(P.crashKills) * 700 * time.Millisecond
	var wg sync.WaitGroup
	var dropErrs []error
	wg.Go(func() {
		dr := rand.New(rand.NewPCG(sd, 3))
		gap := dropPhase / time.Duration(len(plans))
		var writers sync.WaitGroup
		for _, p := range plans {
			time.Sleep(time.Duration(dr.Int64N(int64(2 * gap))))
			wr := rand.New(rand.NewPCG(p.seed, 4))
			write := func() {
				data := content(rand.New(rand.NewPCG(p.seed, 2)), p.size)
				if err := writeArrival(s, p.rel, data, p.how, wr); err != nil {
					mu.Lock()
					dropErrs = append(dropErrs, fmt.Errorf("%s (%s): %w", p.rel, p.how, err))
					mu.Unlock()
				}
			}
			if p.how == slowGrow {
				writers.Go(write)
			} else {
				write()
			}
		}
		writers.Wait()
	})

	// SIGKILL at random moments: mostly mid-work, sometimes right after a
	// start (during recovery and the start-up scan).
	kills := 0
	for kills < P.crashKills {
		var after time.Duration
		if r.IntN(4) == 0 {
			after = time.Duration(50+r.IntN(400)) * time.Millisecond
		} else {
			after = time.Duration(400+r.IntN(1600)) * time.Millisecond
		}
		time.Sleep(after) // a random moment, by design
		s.kill()
		kills++
		s.start()
	}
	wg.Wait()
	for _, err := range dropErrs {
		t.Errorf("drop: %v", err)
	}
	start := time.Now()
	s.waitFor("every file filed", P.settle, func() (bool, string) {
		in := walkFiles(t, filepath.Join(s.inbox, "processed"))
		missing := 0
		for rel := range e.delivered {
			if !in[receiptOf(rel)] {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d not filed yet", missing, len(e.delivered))
	})
	s.waitIdle(P.settle)
	t.Logf("settled %s after the last kill", time.Since(start).Round(time.Millisecond))
	s.stop()
	fig := s.verify(e)
	resent := 0
	for _, n := range proxy.AllWrites() {
		if n > 1 {
			resent++
		}
	}
	t.Logf("crash torture: kills %d, %s (large %d, %d MiB in), objects re-sent after a kill (same key, same bytes) %d",
		kills, fig, large, total/mib, resent)
	if fig.duplicates != 0 || fig.lost != 0 {
		t.Errorf("duplicates %d, lost %d: both must be 0", fig.duplicates, fig.lost)
	}
}
