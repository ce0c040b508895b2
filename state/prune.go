package state

import (
	"context"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneBatch bounds one prune transaction, so that pruning a large history
// does not hold the writer lock (and the pipeline) for long.
const pruneBatch = 1000

// Prune deletes finished jobs in states (all terminal states when empty)
// whose last change is before olderThan, with their index entries and
// counts, and returns how many it deleted. Unfinished states are refused:
// the pipeline still owns those jobs. It works in batches of transactions.
func (s *Store) Prune(ctx context.Context, olderThan time.Time, states []State) (int, error) {
	if len(states) == 0 {
		for _, st := range AllStates() {
			if st.Terminal() {
				states = append(states, st)
			}
		}
	}
	states, err := uniqueStates(states)
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	for _, st := range states {
		if !st.Terminal() {
			return 0, fmt.Errorf("prune: %s jobs are still in the pipeline; only done, failed or gone jobs can be pruned", st)
		}
	}
	cutoff := storedTime(olderThan)
	total := 0
	for _, st := range states {
		var after uint64 // walk from the newest id down, one batch per transaction
		for {
			if err := ctx.Err(); err != nil {
				return total, fmt.Errorf("prune: %w", err)
			}
			n, last, more := 0, uint64(0), false
			err := s.update(func(tx *bolt.Tx) error {
				n, last, more = 0, 0, false
				b, err := openBuckets(tx)
				if err != nil {
					return err
				}
				dc := newDescCursor(b.idxState.Cursor(), stateSeekPrefix(st))
				var victims []*Job
				scanned := 0
				for ok := dc.start(after); ok; ok = dc.next() {
					if scanned == pruneBatch {
						more = true
						break
					}
					scanned++
					last = dc.id
					j, err := b.get(dc.id)
					if err != nil {
						continue // a dangling index entry: Check reports it
					}
					if j.Updated.Before(cutoff) {
						victims = append(victims, j)
					}
				}
				// Removing under a live cursor would skip keys: remove after.
				for _, j := range victims {
					if err := b.remove(j); err != nil {
						return err
					}
				}
				n = len(victims)
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("prune %s jobs: %w", st, err)
			}
			total += n
			if !more {
				break
			}
			after = last
		}
	}
	return total, nil
}

// Backup writes a consistent copy of the whole database to w, taken in one
// read transaction: writers go on meanwhile, and the copy is the state of
// one moment. It returns the number of bytes written; size (known before
// the first byte) is reported to sized, when non-nil, so an HTTP answer can
// carry a Content-Length.
func (s *Store) Backup(ctx context.Context, w io.Writer, sized func(size int64)) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("back up state database: %w", err)
	}
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		if sized != nil {
			sized(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up state database %s: %w", s.path, err)
	}
	return n, nil
}

// ctxWriter stops a long copy when ctx ends (the client went away).
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
