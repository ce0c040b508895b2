package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/mover"
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
	f := d.rt.Load().folders[j.Folder]
	if f == nil {
		return false // folder removed by a reload: the job stays as it is
	}
	if d.park(j) {
		return false
	}
	if changed, gone, err := d.sourceChanged(j); gone {
		return d.markGone(ctx, j, "file vanished before it was uploaded")
	} else if err != nil {
		return d.fail(ctx, j, []destErr{{err: fmt.Errorf("cannot read %s: %w", j.Path, err)}}, true)
	} else if changed {
		return d.backToWaiting(ctx, j)
	}
	if j.Size == 0 {
		return d.fail(ctx, j, []destErr{{err: errors.New("empty file (0 bytes): nothing to deliver")}}, true)
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
				return d.fail(ctx, j, []destErr{{err: err}}, uploader.IsPermanent(err))
			}
		}
		return d.fail(ctx, j, []destErr{{err: err}}, uploader.IsPermanent(err))
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
// Destinations are independent: they run side by side (a platform's
// processing wait does not hold up another's upload), a finished one is
// never repeated, and one destination's failure does not stop the others.
func (d *Daemon) deliver(ctx context.Context, j *state.Job) bool {
	meta, err := d.loadMetadata(j)
	if err != nil {
		return d.fail(ctx, j, []destErr{{err: err}}, true)
	}
	src := &uploader.Source{
		JobID: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath, Size: j.Size,
		ModTime: j.ModTime, Inode: j.Inode, Device: j.Device, Found: j.Created, Meta: meta,
	}
	rt := d.rt.Load()
	// A changed source makes every sibling's work moot: cancel them.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []destErr
	)
	for _, ds := range j.Destinations {
		if ds.State == state.DestDone {
			continue
		}
		wg.Go(func() {
			err := d.deliverOne(dctx, j, src, rt, ds)
			if err == nil {
				return
			}
			if errors.Is(err, uploader.ErrSourceChanged) {
				cancel()
			}
			mu.Lock()
			errs = append(errs, destErr{dest: ds.Name, err: err})
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false // shutting down: the committed state resumes later
	}
	if len(errs) > 0 {
		return d.handleErrors(ctx, j, errs)
	}
	// The last destination's commit normally moved the job on already.
	if cur, err := d.store.Get(ctx, j.ID); err == nil && cur.State == state.Moving {
		return true
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

// destErr is one destination's failure in an attempt ("" dest: the job's
// own, e.g. an unreadable sidecar).
type destErr struct {
	dest string
	err  error
}

// deliverOne runs one destination from its committed sub-state to done.
func (d *Daemon) deliverOne(ctx context.Context, j *state.Job, src *uploader.Source, rt *runtime, ds state.Dest) error {
	dest, ok := rt.dests[ds.Name]
	if !ok {
		return uploader.Permanent(fmt.Errorf("destination %q is no longer configured", ds.Name))
	}
	cp := &uploader.Checkpoint{}
	if len(ds.Checkpoint) > 0 {
		if err := json.Unmarshal(ds.Checkpoint, cp); err != nil {
			d.log.Warn("unreadable checkpoint; starting this destination over", "job", j.ID, "destination", ds.Name, "err", err)
			cp = &uploader.Checkpoint{}
		}
	}
	sess := d.newSession(j.ID, ds.Name)
	began := time.Now()
	if ds.State == state.DestUploading || ds.State == state.DestPending || ds.State == state.DestFailed {
		if err := dest.Upload(ctx, src, cp, sess); err != nil {
			return err
		}
		// Bytes this process sent: a resumed upload had some already.
		d.metrics.uploaded(ds.Name, j.Size-ds.BytesDone)
		if !sess.promoted {
			if err := d.commitDest(ctx, j.ID, ds.Name, cp, state.DestRegistering, ""); err != nil {
				return err
			}
		}
	}
	if err := dest.Register(ctx, src, cp, sess); err != nil {
		return err
	}
	if err := d.commitDest(ctx, j.ID, ds.Name, cp, state.DestDone, d.planTarget(j, rt)); err != nil {
		return err
	}
	d.metrics.destDone(ds.Name, time.Since(began))
	d.progress.Delete(progressKey{j.ID, ds.Name})
	return nil
}

// commitDest records a destination's checkpoint and new sub-state, and
// moves the job to registering once no destination is still uploading.
// target, when set, is where the file will be filed: committed with the
// move to moving (when this is the last destination), it saves the move its
// own commit.
func (d *Daemon) commitDest(ctx context.Context, id uint64, name string, cp *uploader.Checkpoint, st state.DestState, target string) error {
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
		advance(j, ds, st)
		if j.State == state.Moving && j.FinalPath == "" {
			j.FinalPath = target
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error("commit destination state", "job", id, "destination", name, "err", err)
	}
	return err
}

// planTarget picks the processed/ path for a job about to finish, or ""
// (finish plans then) when it cannot. Another job may take the name before
// the move; finish plans again if so.
func (d *Daemon) planTarget(j *state.Job, rt *runtime) string {
	f := rt.folders[j.Folder]
	if f == nil {
		return ""
	}
	target, err := mover.Plan(f.ProcessedDir, j.RelPath)
	if err != nil {
		return ""
	}
	return target
}

// advance sets a destination's sub-state and carries the job along: to
// registering once no destination is still uploading, to moving once all
// are done. Folding these into the destination's own commit saves a commit
// (an fsync) per step, which is most of the cost of a small file.
func advance(j *state.Job, ds *state.Dest, st state.DestState) {
	ds.State = st
	ds.Error = ""
	uploading, done := false, true
	for _, o := range j.Destinations {
		if o.State == state.DestUploading || o.State == state.DestPending {
			uploading = true
		}
		if o.State != state.DestDone {
			done = false
		}
	}
	if !uploading && j.State == state.Uploading {
		j.State = state.Registering
	}
	if done && j.State == state.Registering {
		j.State = state.Moving
		j.MoveTo = state.MoveProcessed
		j.Error = ""
	}
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
	promoted bool // a Save marked the upload complete and promoted the destination
	d        *Daemon
	id       uint64
	dest     string
	bytes    *progress
}

func (d *Daemon) newSession(id uint64, dest string) *session {
	v, _ := d.progress.LoadOrStore(progressKey{id, dest}, newProgress())
	return &session{d: d, id: id, dest: dest, bytes: v.(*progress)}
}

func (s *session) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	raw, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	promoted := false
	_, err = s.d.store.Update(ctx, s.id, func(j *state.Job) error {
		ds := j.Dest(s.dest)
		if ds == nil {
			return fmt.Errorf("job %d has no destination %s", s.id, s.dest)
		}
		applyCheckpoint(j, ds, cp, raw)
		// A checkpoint that says the upload is complete is the commit point
		// of the upload: promote the destination in the same commit.
		promoted = false
		if cp.Uploaded && ds.State == state.DestUploading {
			advance(j, ds, state.DestRegistering)
			promoted = true
		}
		return nil
	})
	if err == nil && promoted {
		s.promoted = true
	}
	return err
}

func (s *session) Progress(n int64) { s.bytes.set(n, time.Now()) }

// handleErrors decides, after every destination has had its go, between
// back-to-waiting (the file changed), gone (it vanished), retry, and failed.
func (d *Daemon) handleErrors(ctx context.Context, j *state.Job, errs []destErr) bool {
	// A vanished file first: waiting for it to settle again would wait
	// for ever.
	for _, e := range errs {
		if errors.Is(e.err, os.ErrNotExist) || errors.Is(e.err, uploader.ErrSourceChanged) {
			if _, serr := os.Lstat(j.Path); errors.Is(serr, os.ErrNotExist) {
				d.metrics.failure(e.dest, "gone")
				d.abortAll(ctx, j.ID)
				return d.markGone(ctx, j, "file vanished during upload")
			}
		}
	}
	for _, e := range errs {
		if errors.Is(e.err, uploader.ErrSourceChanged) {
			d.metrics.failure(e.dest, "source_changed")
			d.abortAll(ctx, j.ID)
			return d.backToWaiting(ctx, j)
		}
	}
	permanent := false
	for _, e := range errs {
		kind := "transient"
		if uploader.IsPermanent(e.err) {
			kind = "permanent"
			permanent = true
		}
		d.metrics.failure(e.dest, kind)
	}
	return d.fail(ctx, j, errs, permanent)
}

// fail records an attempt's failures: the job retries with backoff, or, when
// an error is permanent or attempts are used up, heads to failed_dir.
// Destinations that finished stay done either way.
func (d *Daemon) fail(ctx context.Context, j *state.Job, errs []destErr, permanent bool) bool {
	var parts []string
	for _, e := range errs {
		if e.dest == "" {
			parts = append(parts, e.err.Error())
		} else {
			parts = append(parts, "destination "+e.dest+": "+e.err.Error())
		}
	}
	msg := strings.Join(parts, "; ")
	retry := d.Config().Retry
	var next time.Time
	final := false
	updated, err := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.Attempts++
		j.Error = msg
		final = permanent || j.Attempts >= retry.MaxAttempts
		var delay time.Duration
		if !final {
			delay = backoff(retry.InitialBackoff, retry.MaxBackoff, j.Attempts)
		}
		for _, e := range errs {
			if ds := j.Dest(e.dest); ds != nil {
				ds.Attempts++
				ds.Error = e.err.Error()
				if final {
					ds.State = state.DestFailed
				}
			}
			if ra, ok := uploader.RetryAfter(e.err); ok && ra > delay {
				delay = ra
			}
		}
		if final {
			j.State = state.Moving
			j.MoveTo = state.MoveFailed
			j.NextAttempt = time.Time{}
			return nil
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
		d.abortAll(ctx, j.ID)
		return true // go on to move it into failed_dir
	}
	d.log.Warn("attempt failed; will retry", "job", j.ID, "path", j.Path, "attempt", updated.Attempts,
		"max_attempts", retry.MaxAttempts, "retry_at", next.Format(time.RFC3339), "err", msg)
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
// It reads the job afresh: upload ids are committed by the destinations
// while the caller's copy of the job ages.
func (d *Daemon) abortAll(ctx context.Context, id uint64) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		d.log.Warn("abort unfinished uploads: load job", "job", id, "err", err)
		return
	}
	for _, ds := range j.Destinations {
		if ds.State == state.DestDone || len(ds.Checkpoint) == 0 {
			continue
		}
		dest, ok := d.rt.Load().dests[ds.Name]
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
	d.watcher.Load().Forget(j.Path)
	return false
}

func (d *Daemon) markGone(ctx context.Context, j *state.Job, reason string) bool {
	_, err := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.State = state.Gone
		j.Error = reason
		// Destinations that had not finished never will: their uploads
		// were aborted, so they are back to pending, not "uploading".
		for i := range j.Destinations {
			if ds := &j.Destinations[i]; ds.State != state.DestDone {
				ds.State = state.DestPending
			}
		}
		return nil
	})
	if err != nil {
		d.log.Error("commit gone", "job", j.ID, "err", err)
		return false
	}
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
