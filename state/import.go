package state

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Import writes jobs as they are, keeping their ids (moving a database
// from another backend, `watchfolder migrate`), in one transaction. The
// store must hold no job yet; the id sequence continues after the highest
// imported id.
func (s *Store) Import(ctx context.Context, jobs []*Job) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("import jobs: %w", err)
	}
	err := s.update(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		if k, _ := b.jobs.Cursor().First(); k != nil {
			return fmt.Errorf("the database already holds jobs; import only into an empty one")
		}
		var top uint64
		for _, j := range jobs {
			if j.ID == 0 {
				return fmt.Errorf("job %s/%s has no id", j.Folder, j.RelPath)
			}
			if err := validateKeys(j); err != nil {
				return err
			}
			if err := b.put(nil, j); err != nil {
				return err
			}
			top = max(top, j.ID)
		}
		if top > b.jobs.Sequence() {
			return b.jobs.SetSequence(top)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("import %d job(s): %w", len(jobs), err)
	}
	return nil
}
