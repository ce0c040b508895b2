package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/watcher"
)

// ErrConflict means the job is not in a state the operation applies to.
var ErrConflict = errors.New("not possible in the job's current state")

// Retry takes a failed job's file back from failed_dir into the pipeline:
// the file (and its sidecar) move back to where it was found, or to a free
// name beside it ("clip (1).mp4") — never overwriting — the reason file is
// removed, and the same job is queued again with its attempts reset.
// Destinations already done stay done; the others start over.
//
// The file moves before the job is committed: a crash in between leaves a
// failed job and a file in the folder, which the watcher then picks up as
// a new job. The other order could leave a queued job without its file.
func (d *Daemon) Retry(ctx context.Context, id uint64) (*state.Job, error) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", id, err)
	}
	if j.State != state.Failed {
		return nil, fmt.Errorf("job %d is %s; only failed jobs can be retried: %w", id, j.State, ErrConflict)
	}
	f := d.rt.Load().folders[j.Folder]
	if f == nil {
		return nil, fmt.Errorf("job %d: folder %q is no longer configured: %w", id, j.Folder, ErrConflict)
	}
	src := j.FinalPath
	if src == "" {
		return nil, fmt.Errorf("job %d: no record of where the failed file went: %w", id, ErrConflict)
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, fmt.Errorf("job %d: the failed file is no longer at %s (move it back into the folder by hand): %w", id, src, ErrConflict)
	}
	target, err := mover.Plan(f.Path, j.RelPath)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", id, err)
	}
	rel, err := filepath.Rel(f.Path, target)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", id, err)
	}
	rel = filepath.ToSlash(rel)
	key := claimKey(f.Name, rel)
	d.claims.Store(key, struct{}{})
	defer d.claims.Delete(key)

	// Confined like filing: a failed/ or a folder directory an editor
	// replaced with a symlink is refused, never followed.
	dir, err := mover.MoveBelow(f.FailedDir, src, f.Path, target)
	if err != nil {
		return nil, fmt.Errorf("job %d: move the file back: %w", id, err)
	}
	if dir != "" {
		if err := mover.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("job %d: move the file back: sync %s: %w", id, dir, err)
		}
	}
	sidecar := ""
	if sc := sidecarPath(src); fileExists(sc) {
		sidecar = sidecarPath(target)
		if _, err := mover.MoveBelow(f.FailedDir, sc, f.Path, sidecar); err != nil {
			d.log.Warn("retry: could not move the sidecar back; the file goes without it", "job", id, "sidecar", sc, "err", err)
			sidecar = ""
		}
	}
	if err := os.Remove(CompanionPath(src, ReasonSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("retry: could not remove the reason file", "job", id, "err", err)
	}
	mover.PruneEmpty(f.FailedDir, filepath.Dir(src))
	fi, err := os.Lstat(target)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", id, err)
	}
	info := fileInfoOf(fi)
	// Moving the file back changed its change time: the version is the
	// one found now (the bytes done destinations have are these).
	var ctime time.Time
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ctime = ctimeOf(st)
	}
	j, err = d.store.Update(ctx, id, func(j *state.Job) error {
		if j.State != state.Failed {
			return fmt.Errorf("job %d changed to %s meanwhile: %w", id, j.State, ErrConflict)
		}
		j.State = state.Queued
		j.Attempts = 0
		j.Error = ""
		j.NextAttempt = time.Time{}
		j.MoveTo = ""
		j.FinalPath = ""
		j.Path, j.RelPath, j.Sidecar = target, rel, sidecar
		setVersion(j, info)
		j.CTime = ctime
		for i := range j.Destinations {
			ds := &j.Destinations[i]
			if ds.State == state.DestDone {
				continue
			}
			// A failed job's multipart uploads were aborted: start over.
			ds.State, ds.Error, ds.Attempts, ds.NextAttempt = state.DestPending, "", 0, time.Time{}
			ds.Checkpoint, ds.BytesDone = nil, 0
		}
		j.Note("", "retry requested by an operator; file moved back to "+target)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("job %d: file moved back to %s, but the job could not be re-queued (the watcher will pick the file up as a new job): %w", id, target, err)
	}
	d.log.Info("retrying failed job", "job", id, "path", target)
	d.sched.push(id)
	return j, nil
}

// RetryResult is one job of POST /v1/retry-failed.
type RetryResult struct {
	ID    uint64 `json:"id"`
	Path  string `json:"path,omitempty"`
	Error string `json:"error,omitempty"`
}

// RetryFailed retries every failed job whose folder is still configured.
func (d *Daemon) RetryFailed(ctx context.Context) ([]RetryResult, error) {
	failed, err := d.store.List(ctx, state.Filter{States: []state.State{state.Failed}})
	if err != nil {
		return nil, err
	}
	out := []RetryResult{}
	for _, j := range failed {
		r := RetryResult{ID: j.ID}
		if nj, err := d.Retry(ctx, j.ID); err != nil {
			r.Error = err.Error()
		} else {
			r.Path = nj.Path
		}
		out = append(out, r)
	}
	return out, nil
}

// Forget deletes a finished job's record (its files are not touched).
// Active jobs are refused: the pipeline still owns them.
func (d *Daemon) Forget(ctx context.Context, id uint64) error {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("job %d: %w", id, err)
	}
	if !j.State.Terminal() {
		return fmt.Errorf("job %d is %s, still in the pipeline; only done, failed or gone jobs can be forgotten: %w", id, j.State, ErrConflict)
	}
	if err := d.store.Delete(ctx, id); err != nil {
		return err
	}
	d.log.Info("job forgotten", "job", id, "path", j.Path, "state", j.State)
	return nil
}

// jobFinished runs after a job committed done or failed.
func (d *Daemon) jobFinished(j *state.Job) {
	for _, ds := range j.Destinations {
		d.progress.Delete(progressKey{j.ID, ds.Name})
	}
	if j.State == state.Done {
		d.metrics.jobDone(j.Folder, j.Updated.Sub(j.Created))
	}
	d.notifier.Load().send(j)
}

func fileExists(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// fileInfoOf is the version of a file as the watcher would report it.
func fileInfoOf(fi os.FileInfo) watcher.FileInfo {
	i := watcher.FileInfo{Size: fi.Size(), ModTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		i.Inode, i.Device = st.Ino, uint64(st.Dev)
	}
	return i
}
