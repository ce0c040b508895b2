package state

import (
	"fmt"
	"time"
)

// The functions in this file let a store kept outside this package (the
// etcd backend) apply the same rules as the bbolt Store: what a new job may
// look like, which transitions are legal, how history grows. The rules stay
// here, where they are defined; a backend only decides how to commit.

// StoredTime is how every backend keeps times: UTC, no monotonic reading.
func StoredTime(t time.Time) time.Time { return storedTime(t) }

// PrepareCreate checks jobs for Create and returns the copies to commit,
// with Created, Updated and the first history entry set. ids are left 0:
// the backend assigns them. The callers' jobs are not modified.
func PrepareCreate(jobs []*Job, now time.Time) ([]Job, error) {
	staged := make([]Job, len(jobs))
	seen := make(map[*Job]bool, len(jobs))
	for i, j := range jobs {
		if j == nil {
			return nil, fmt.Errorf("create job: job %d of %d is nil", i+1, len(jobs))
		}
		if seen[j] {
			return nil, fmt.Errorf("create job %s/%s: given twice", j.Folder, j.RelPath)
		}
		seen[j] = true
		if j.ID != 0 {
			return nil, fmt.Errorf("create job %s/%s: already created as job %d", j.Folder, j.RelPath, j.ID)
		}
		if !canCreate(j.State) {
			return nil, fmt.Errorf("create job %s/%s in state %q (must be %s or %s): %w",
				j.Folder, j.RelPath, j.State, Waiting, Queued, ErrIllegalTransition)
		}
		if err := validateKeys(j); err != nil {
			return nil, fmt.Errorf("create job: %w", err)
		}
		c := *j
		c.Created, c.Updated = now, now
		c.History = append(make([]Transition, 0, len(j.History)+1), j.History...)
		c.History = append(c.History, Transition{At: now, To: c.State, Error: c.Error})
		c.capHistory()
		staged[i] = c
	}
	return staged, nil
}

// ApplyUpdate is the body of an Update on a freshly decoded j: it calls fn,
// checks the id, the keys and the transition (ErrIllegalTransition), and
// records history and Updated. An error from fn comes back as fnErr,
// untouched; err is a broken rule. old is the job's state before fn.
func ApplyUpdate(j *Job, now time.Time, fn func(*Job) error) (old State, fnErr, err error) {
	id, old := j.ID, j.State
	if err := fn(j); err != nil {
		return old, err, nil
	}
	if j.ID != id {
		return old, nil, fmt.Errorf("job %d: update changed the id to %d", id, j.ID)
	}
	if err := validateKeys(j); err != nil {
		return old, nil, err
	}
	if j.State != old {
		if !CanTransition(old, j.State) {
			return old, nil, fmt.Errorf("job %d: %s -> %s: %w", id, old, j.State, ErrIllegalTransition)
		}
		j.History = append(j.History, Transition{At: now, From: old, To: j.State, Error: j.Error})
	}
	j.capHistory()
	j.Updated = now
	return old, nil, nil
}
