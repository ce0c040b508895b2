package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

// worker takes jobs until the scheduler closes. Work runs under workCtx,
// which outlives ctx by the shutdown grace period.
func (d *Daemon) worker(ctx, workCtx context.Context) {
	for {
		id, ok := d.sched.next(ctx)
		if !ok {
			return
		}
		d.inflight.Add(1)
		d.process(workCtx, id)
		d.inflight.Add(-1)
		d.sched.done(id)
	}
}

// process drives one job through as many states as it can now. Each step
// commits its transition before the next begins, so a crash anywhere
// resumes from the last committed state.
func (d *Daemon) process(ctx context.Context, id uint64) {
	for ctx.Err() == nil {
		j, err := d.store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, state.ErrNotFound) {
				d.log.Error("load job", "job", id, "err", err)
			}
			return
		}
		var cont bool
		switch j.State {
		case state.Queued, state.Retry:
			cont = d.start(ctx, j)
		case state.Uploading, state.Registering:
			cont = d.deliver(ctx, j)
		case state.Moving:
			cont = d.finish(ctx, j)
		default:
			return
		}
		if !cont {
			return
		}
	}
}

// start checks the file is still the version that was found, loads the
// sidecar and moves the job into uploading.
func (d *Daemon) start(ctx context.Context, j *state.Job) bool {
	f := d.folders[j.Folder]
	if f == nil {
		return false
	}
	if changed, gone, err := d.sourceChanged(j); gone {
		return d.markGone(ctx, j, "file vanished before it was uploaded")
	} else if err != nil {
		return d.fail(ctx, j, "", fmt.Errorf("cannot read %s: %w", j.Path, err), true)
	} else if changed {
		return d.backToWaiting(ctx, j)
	}
	if j.Size == 0 {
		return d.fail(ctx, j, "", errors.New("empty file (0 bytes): nothing to deliver"), true)
	}
	sidecar, err := d.findSidecar(j, f)
	if errors.Is(err, errSidecarPending) {
		wait := j.Created.Add(f.SidecarWait)
		d.log.Info("waiting for the required sidecar", "path", j.Path, "until", wait.Format(time.RFC3339))
		d.sched.pushAt(j.ID, wait)
		return false
	}
	if err != nil {
		if sidecar != "" {
			// Record it so the malformed sidecar travels to failed/ too.
			if j, err2 := d.store.Update(ctx, j.ID, func(j *state.Job) error { j.Sidecar = sidecar; return nil }); err2 == nil {
				return d.fail(ctx, j, "", err, uploader.IsPermanent(err))
			}
		}
		return d.fail(ctx, j, "", err, uploader.IsPermanent(err))
	}
	_, err = d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.State = state.Uploading
		j.Sidecar = sidecar
		for i := range j.Destinations {
			if j.Destinations[i].State == state.DestPending || j.Destinations[i].State == state.DestFailed {
				j.Destinations[i].State = state.DestUploading
				j.Destinations[i].Error = ""
			}
		}
		return nil
	})
	if err != nil {
		d.log.Error("commit uploading", "job", j.ID, "err", err)
		return false
	}
	return true
}

// deliver uploads to and registers with every destination not yet done.
// Destinations are independent: a finished one is never repeated.
func (d *Daemon) deliver(ctx context.Context, j *state.Job) bool {
	meta, err := d.loadMetadata(j)
	if err != nil {
		return d.fail(ctx, j, "", err, true)
	}
	src := &uploader.Source{
		JobID: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath, Size: j.Size,
		ModTime: j.ModTime, Inode: j.Inode, Device: j.Device, Found: j.Created, Meta: meta,
	}
	for _, ds := range j.Destinations {
		if ds.State == state.DestDone {
			continue
		}
		dest, ok := d.dests[ds.Name]
		if !ok {
			return d.fail(ctx, j, ds.Name, fmt.Errorf("destination %q is no longer configured", ds.Name), true)
		}
		cp := &uploader.Checkpoint{}
		if len(ds.Checkpoint) > 0 {
			if err := json.Unmarshal(ds.Checkpoint, cp); err != nil {
				d.log.Warn("unreadable checkpoint; starting this destination over", "job", j.ID, "destination", ds.Name, "err", err)
				cp = &uploader.Checkpoint{}
			}
		}
		sess := d.newSession(j.ID, ds.Name)
		if ds.State == state.DestUploading || ds.State == state.DestPending {
			if err := dest.Upload(ctx, src, cp, sess); err != nil {
				return d.handleError(ctx, j, ds.Name, err)
			}
			if err := d.commitDest(ctx, j.ID, ds.Name, cp, state.DestRegistering); err != nil {
				return false
			}
		}
		if err := dest.Register(ctx, src, cp, sess); err != nil {
			return d.handleError(ctx, j, ds.Name, err)
		}
		if err := d.commitDest(ctx, j.ID, ds.Name, cp, state.DestDone); err != nil {
			return false
		}
	}
	_, err = d.store.Update(ctx, j.ID, func(j *state.Job) error {
		for _, ds := range j.Destinations {
			if ds.State != state.DestDone {
				return fmt.Errorf("destination %s is %s, not done", ds.Name, ds.State)
			}
		}
		j.State = state.Moving
		j.MoveTo = state.MoveProcessed
		j.Error = ""
		return nil
	})
	if err != nil {
		d.log.Error("commit moving", "job", j.ID, "err", err)
		return false
	}
	return true
}

// commitDest records a destination's checkpoint and new sub-state, and
// moves the job to registering once no destination is still uploading.
func (d *Daemon) commitDest(ctx context.Context, id uint64, name string, cp *uploader.Checkpoint, st state.DestState) error {
	raw, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	_, err = d.store.Update(ctx, id, func(j *state.Job) error {
		ds := j.Dest(name)
		if ds == nil {
			return fmt.Errorf("job %d has no destination %s", id, name)
		}
		applyCheckpoint(j, ds, cp, raw)
		ds.State = st
		ds.Error = ""
		uploading := false
		for _, o := range j.Destinations {
			if o.State == state.DestUploading || o.State == state.DestPending {
				uploading = true
			}
		}
		if !uploading && j.State == state.Uploading {
			j.State = state.Registering
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error("commit destination state", "job", id, "destination", name, "err", err)
	}
	return err
}

func applyCheckpoint(j *state.Job, ds *state.Dest, cp *uploader.Checkpoint, raw []byte) {
	ds.Checkpoint = raw
	ds.Object = cp.Object
	ds.VendorID = cp.VendorID
	if cp.Uploaded {
		ds.BytesDone = j.Size
	} else {
		var n int64
		for _, p := range cp.Parts {
			n += p.Size
		}
		ds.BytesDone = n
	}
	if cp.SHA256 != "" {
		j.SHA256 = cp.SHA256
	}
}

// session persists a destination's checkpoint on the job.
type session struct {
	d     *Daemon
	id    uint64
	dest  string
	bytes *atomic.Int64
}

func (d *Daemon) newSession(id uint64, dest string) *session {
	v, _ := d.progress.LoadOrStore(progressKey{id, dest}, new(atomic.Int64))
	return &session{d: d, id: id, dest: dest, bytes: v.(*atomic.Int64)}
}

func (s *session) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	raw, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	_, err = s.d.store.Update(ctx, s.id, func(j *state.Job) error {
		ds := j.Dest(s.dest)
		if ds == nil {
			return fmt.Errorf("job %d has no destination %s", s.id, s.dest)
		}
		applyCheckpoint(j, ds, cp, raw)
		return nil
	})
	return err
}

func (s *session) Progress(n int64) { s.bytes.Store(n) }

// handleError decides between retry, back-to-waiting, gone and failed.
func (d *Daemon) handleError(ctx context.Context, j *state.Job, dest string, err error) bool {
	if ctx.Err() != nil {
		return false // shutting down: the committed state resumes later
	}
	if errors.Is(err, uploader.ErrSourceChanged) {
		d.abortAll(ctx, j)
		return d.backToWaiting(ctx, j)
	}
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Lstat(j.Path); errors.Is(serr, os.ErrNotExist) {
			d.abortAll(ctx, j)
			return d.markGone(ctx, j, "file vanished during upload")
		}
	}
	return d.fail(ctx, j, dest, err, uploader.IsPermanent(err))
}

// fail records an attempt's failure: the job retries with backoff, or, when
// the error is permanent or attempts are used up, heads to failed_dir.
func (d *Daemon) fail(ctx context.Context, j *state.Job, dest string, cause error, permanent bool) bool {
	msg := cause.Error()
	if dest != "" {
		msg = "destination " + dest + ": " + msg
	}
	var next time.Time
	final := false
	updated, err := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.Attempts++
		j.Error = msg
		if ds := j.Dest(dest); ds != nil {
			ds.Attempts++
			ds.Error = cause.Error()
		}
		if permanent || j.Attempts >= d.cfg.Retry.MaxAttempts {
			final = true
			if ds := j.Dest(dest); ds != nil {
				ds.State = state.DestFailed
			}
			j.State = state.Moving
			j.MoveTo = state.MoveFailed
			j.NextAttempt = time.Time{}
			return nil
		}
		final = false
		delay := backoff(d.cfg.Retry.InitialBackoff, d.cfg.Retry.MaxBackoff, j.Attempts)
		if ra, ok := uploader.RetryAfter(cause); ok && ra > delay {
			delay = ra
		}
		next = time.Now().Add(delay)
		j.NextAttempt = next
		j.State = state.Retry
		return nil
	})
	if err != nil {
		d.log.Error("commit failure", "job", j.ID, "err", err, "cause", msg)
		return false
	}
	if final {
		d.log.Error("job failed", "job", j.ID, "path", j.Path, "attempts", updated.Attempts, "err", msg)
		d.abortAll(ctx, updated)
		return true // go on to move it into failed_dir
	}
	d.log.Warn("attempt failed; will retry", "job", j.ID, "path", j.Path, "attempt", updated.Attempts,
		"max_attempts", d.cfg.Retry.MaxAttempts, "retry_at", next.Format(time.RFC3339), "err", msg)
	d.sched.pushAt(j.ID, next)
	return false
}

// backoff is initial * 2^(attempt-1), capped.
func backoff(initial, maxD time.Duration, attempt int) time.Duration {
	if initial <= 0 {
		initial = time.Second
	}
	f := float64(initial) * math.Pow(2, float64(attempt-1))
	if f > float64(maxD) || math.IsInf(f, 0) {
		return maxD
	}
	return time.Duration(f)
}

// abortAll releases open multipart uploads of destinations not yet done.
func (d *Daemon) abortAll(ctx context.Context, j *state.Job) {
	for _, ds := range j.Destinations {
		if ds.State == state.DestDone || len(ds.Checkpoint) == 0 {
			continue
		}
		dest, ok := d.dests[ds.Name]
		if !ok {
			continue
		}
		cp := &uploader.Checkpoint{}
		if json.Unmarshal(ds.Checkpoint, cp) != nil || cp.UploadID == "" {
			continue
		}
		if err := dest.Abort(ctx, cp); err != nil {
			d.log.Warn("abort unfinished upload", "job", j.ID, "destination", ds.Name, "err", err)
		}
	}
}

// backToWaiting resets a job whose file changed: its uploads start over
// once the new version is stable.
func (d *Daemon) backToWaiting(ctx context.Context, j *state.Job) bool {
	_, err := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.State = state.Waiting
		j.Error = "file changed while it was being delivered; waiting for it to be stable again"
		for i := range j.Destinations {
			if j.Destinations[i].State != state.DestDone {
				j.Destinations[i].State = state.DestPending
				j.Destinations[i].Checkpoint = nil
				j.Destinations[i].BytesDone = 0
			}
		}
		return nil
	})
	if err != nil {
		d.log.Error("commit waiting", "job", j.ID, "err", err)
		return false
	}
	d.log.Warn("file changed after it was found; waiting for it to settle again", "job", j.ID, "path", j.Path)
	d.watcher.Forget(j.Path)
	return false
}

func (d *Daemon) markGone(ctx context.Context, j *state.Job, reason string) bool {
	d.transition(ctx, j.ID, state.Gone, reason)
	d.log.Warn("file vanished", "job", j.ID, "path", j.Path, "reason", reason)
	return false
}

// sourceChanged compares the file on disk with the job's version.
func (d *Daemon) sourceChanged(j *state.Job) (changed, gone bool, err error) {
	fi, err := os.Lstat(j.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, true, nil
	}
	if err != nil {
		return false, false, err
	}
	if !fi.Mode().IsRegular() {
		return false, false, fmt.Errorf("%s is no longer a regular file", j.Path)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if fi.Size() != j.Size || !fi.ModTime().Equal(j.ModTime) || (st != nil && (st.Ino != j.Inode || uint64(st.Dev) != j.Device)) {
		return true, false, nil
	}
	return false, false, nil
}
