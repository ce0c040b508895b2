package state

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkList1M measures the status queries on a database of 1,000,000
// finished jobs. Run with
//
//	go test -run '^$' -bench List1M -benchtime 200x ./state/
//
// The database is built once per run (this parent benchmark runs once; only
// the sub-benchmarks repeat) with big transactions, written straight in
// state done: going through queued -> moving -> done would triple the
// build time without changing what is measured.
func BenchmarkList1M(b *testing.B) {
	const total = 1_000_000
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	start := time.Now()
	if err := fillDone(ctx, s, total, 100_000); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d done jobs in %v, file %d MiB", total, built.Round(time.Millisecond), info.Size()>>20)

	// The worst case, timed once (a loop would take minutes): a folder with
	// no jobs makes List scan every job, with only the byte pre-filter.
	start = time.Now()
	if jobs, err := s.List(ctx, Filter{Folder: "absent"}); err != nil || len(jobs) != 0 {
		b.Fatalf("List(absent folder) = %d jobs, %v", len(jobs), err)
	}
	b.Logf("full scan for an absent folder: %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if problems, err := s.Check(ctx); err != nil || len(problems) != 0 {
		b.Fatalf("Check = %q, %v", problems, err)
	}
	b.Logf("Check of %d jobs: %v", total, time.Since(start).Round(time.Millisecond))

	// Every result is checked: a fast wrong answer is not a result.
	bench := func(name string, f Filter, want int) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				jobs, err := s.List(ctx, f)
				if err != nil {
					b.Fatal(err)
				}
				if len(jobs) != want {
					b.Fatalf("got %d jobs, want %d", len(jobs), want)
				}
			}
		})
	}
	bench("List/limit50", Filter{Limit: 50}, 50)
	bench("List/done/limit50", Filter{States: []State{Done}, Limit: 50}, 50)
	bench("List/done+failed/after500k/limit50", Filter{States: []State{Done, Failed}, AfterID: 500_000, Limit: 50}, 50)
	bench("List/folder/limit50", Filter{Folder: "folder-3", Limit: 50}, 50)
	bench("List/queued(empty)", Filter{States: []State{Queued}, Limit: 50}, 0)
	b.Run("Counts", func(b *testing.B) {
		for b.Loop() {
			c, err := s.Counts(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if n := c["folder-0"][Done]; n != total/10 {
				b.Fatalf("folder-0 done = %d", n)
			}
		}
	})
	b.Run("Latest", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Latest(ctx, "folder-7", "2026/clip-0654327.mp4"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fillDone writes n finished jobs over 10 folders, batch per transaction,
// with a realistic history (6 transitions) and one destination each.
func fillDone(ctx context.Context, s *Store, n, batch int) error {
	s.db.NoSync = true // a benchmark fixture; the file is thrown away
	defer func() { s.db.NoSync = false }()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cp := json.RawMessage(`{"bucket":"media-archive","key":"news/2026/01/01/clip.mp4","uploaded":true,"etag":"\"9b2cf535f27731c974343645a3985328-4\""}`)
	for done := 0; done < n; done += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			b, err := openBuckets(tx)
			if err != nil {
				return err
			}
			b.jobs.FillPercent = 0.9
			for i := done; i < min(done+batch, n); i++ {
				id, err := b.jobs.NextSequence()
				if err != nil {
					return err
				}
				t := base.Add(time.Duration(i) * time.Second)
				rel := fmt.Sprintf("2026/clip-%07d.mp4", i)
				j := &Job{
					ID: id, Folder: fmt.Sprintf("folder-%d", i%10), RelPath: rel,
					Path: "/srv/watch/" + rel, Size: 1 << 30, ModTime: t, Inode: uint64(i),
					State: Done, FinalPath: "/srv/watch/processed/" + rel,
					SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
					Destinations: []Dest{{
						Name: "archive", Type: "s3", State: DestDone, BytesDone: 1 << 30,
						Object: "s3://media-archive/" + rel, Checkpoint: cp,
					}},
					History: []Transition{
						{At: t, To: Waiting},
						{At: t, From: Waiting, To: Queued},
						{At: t, From: Queued, To: Uploading},
						{At: t, From: Uploading, To: Registering},
						{At: t, From: Registering, To: Moving},
						{At: t, From: Moving, To: Done},
					},
					Created: t, Updated: t,
				}
				if err := b.put(nil, j); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fill batch at %d: %w", done, err)
		}
	}
	return nil
}

// BenchmarkCreate compares one transaction (one fsync) per job with batches,
// reported per job; the file is synced as in production.
func BenchmarkCreate(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			n := 0
			for b.Loop() {
				jobs := make([]*Job, batch)
				for i := range jobs {
					jobs[i] = newJob("f", fmt.Sprintf("clip-%d.mp4", n), Queued)
					n++
				}
				if err := s.CreateMany(ctx, jobs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/job")
		})
	}
}
