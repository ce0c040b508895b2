package daemon

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// commitRetry is how long a job waits after a commit of its state failed
// (a full disk, an I/O error) before it is tried again from its last
// committed state.
const commitRetry = 10 * time.Second

// commitError marks a failure to record a job's state, as opposed to a
// failure of the work the state describes: it never counts as a failed
// attempt, and the job has been scheduled again already.
type commitError struct{ err error }

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

func isCommitError(err error) bool {
	var ce *commitError
	return errors.As(err, &ce)
}

// commit is the one way a worker records a transition whose failure must
// not strand the job: when the store refuses the change, the job is
// scheduled again after commitRetry and resumes from its last committed
// state, so it finishes once the disk has room again, without a restart.
// what names the transition in the log. The error is a *commitError.
func (d *Daemon) commit(ctx context.Context, id uint64, what string, fn func(*state.Job) error) (*state.Job, error) {
	j, err := d.store.Update(ctx, id, fn)
	if err == nil {
		return j, nil
	}
	if fenced(err) {
		// Another node holds the job now: nothing to retry here.
		d.log.Warn("not recording "+what+": the claim on the job was lost to another node", "job", id, "err", err)
		return nil, &commitError{err}
	}
	if ctx.Err() == nil && !errors.Is(err, state.ErrNotFound) && !errors.Is(err, state.ErrIllegalTransition) {
		// (An illegal transition is a bug, not the disk: trying again
		// would only repeat it.)
		d.log.Error("cannot record "+what+"; will try again", "job", id, "err", err, "retry_in", commitRetry)
		d.sched.pushAt(id, time.Now().Add(commitRetry))
	}
	if errors.Is(err, state.ErrIllegalTransition) {
		d.log.Error("cannot record "+what, "job", id, "err", err)
	}
	return nil, &commitError{err}
}

// sweep is the safety net behind commit: after any write the store refused
// (the count only grows), it puts back on the scheduler every unfinished
// job that nothing is holding — one a code path dropped after a failed
// commit. Waiting jobs belong to the watcher and are left alone.
func (d *Daemon) sweep(ctx context.Context) {
	t := time.NewTicker(commitRetry)
	defer t.Stop()
	seen := d.store.WriteFailures()
	// A job may be dropped just after a sweep saw it still running: keep
	// sweeping for a few rounds after the last failure.
	const rounds = 3
	quiet := rounds
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := d.store.WriteFailures(); now != seen {
			seen, quiet = now, 0
		}
		if quiet >= rounds {
			continue
		}
		jobs, err := d.store.Unfinished(ctx)
		if err != nil {
			continue
		}
		quiet++
		n := 0
		rt := d.rt.Load()
		for _, j := range jobs {
			if j.State == state.Waiting {
				// The watcher drives these; one whose file vanished while
				// its "gone" could not be recorded hears no more of it.
				if _, err := os.Lstat(j.Path); errors.Is(err, os.ErrNotExist) {
					d.transition(ctx, j.ID, state.Gone, "file vanished before it was finished")
				}
				continue
			}
			if rt.folders[j.Folder] == nil || d.sched.tracked(j.ID) {
				continue
			}
			if j.State == state.Retry {
				d.sched.pushAt(j.ID, j.NextAttempt)
			} else {
				d.sched.push(j.ID)
			}
			n++
		}
		if n > 0 {
			d.log.Info("resuming jobs held up by a failed commit", "count", n)
		}
	}
}
