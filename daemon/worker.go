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
		handed := d.process(workCtx, id)
		d.inflight.Add(-1)
		if !handed {
			d.sched.done(id)
		}
	}
}

// step is what a worker does with a job after one stage of it.
type step int

const (
	stop   step = iota // the job waits (retry, pause, ...) or is finished
	next               // go on with the job's next state
	handed             // the filer owns the job now
)

func stepIf(cont bool) step {
	if cont {
		return next
	}
	return stop
}

// process drives one job through as many states as it can now. Each step
// commits its transition before the next begins, so a crash anywhere
// resumes from the last committed state. A job that reaches moving is
// handed to the filer (handed true): the filer, not the worker, then owns
// it until it tells the scheduler it is done.
func (d *Daemon) process(ctx context.Context, id uint64) (wasHanded bool) {
	for ctx.Err() == nil {
		j, err := d.store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, state.ErrNotFound) {
				d.log.Error("load job", "job", id, "err", err)
			}
			return false
		}
		var st step
		switch j.State {
		case state.Queued, state.Retry, state.Probing:
			st = d.start(ctx, j)
		case state.Uploading, state.Registering:
			st = d.deliver(ctx, j, nil)
		case state.Moving:
			st = d.handToFiler(ctx, fileReq{id: id})
		default:
			return false
		}
		if st != next {
			return st == handed
		}
	}
	return false
}

// handToFiler gives the filer a job (and what it still has to commit).
func (d *Daemon) handToFiler(ctx context.Context, r fileReq) step {
	select {
	case d.toFile <- r:
		return handed
	case <-ctx.Done():
		return stop
	}
}

// start checks the file is still the version that was found, loads the
// sidecar and moves the job into uploading.
func (d *Daemon) start(ctx context.Context, j *state.Job) step {
	f := d.rt.Load().folders[j.Folder]
	if f == nil {
		return stop // folder removed by a reload: the job stays as it is
	}
	if d.park(j) {
		return stop
	}
	if changed, gone, err := d.sourceChanged(j); gone {
		return stepIf(d.markGone(ctx, j, "file vanished before it was uploaded"))
	} else if err != nil {
		return stepIf(d.fail(ctx, j, []destErr{{err: fmt.Errorf("cannot read %s: %w", j.Path, err)}}, true))
	} else if changed {
		return stepIf(d.backToWaiting(ctx, j))
	}
	if j.Size == 0 {
		return stepIf(d.fail(ctx, j, []destErr{{err: errors.New("empty file (0 bytes): nothing to deliver")}}, true))
	}
	sidecar, err := d.findSidecar(j, f)
	if errors.Is(err, errSidecarPending) {
		wait := j.Created.Add(f.SidecarWait)
		d.log.Info("waiting for the required sidecar", "path", j.Path, "until", wait.Format(time.RFC3339))
		d.sched.pushAt(j.ID, wait)
		return stop
	}
	if err != nil {
		if sidecar != "" {
			// Record it so the malformed sidecar travels to failed/ too.
			if j, err2 := d.store.Update(ctx, j.ID, func(j *state.Job) error { j.Sidecar = sidecar; return nil }); err2 == nil {
				return stepIf(d.fail(ctx, j, []destErr{{err: err}}, uploader.IsPermanent(err)))
			}
		}
		return stepIf(d.fail(ctx, j, []destErr{{err: err}}, uploader.IsPermanent(err)))
	}
	if st, ok := d.probeMedia(ctx, j, f, sidecar); !ok {
		return st
	}
	if quickStart(j, d.rt.Load()) {
		// The move into uploading is folded into the destinations' final
		// commit: see quickStart.
		j.Sidecar = sidecar
		return d.deliver(ctx, j, &quick{})
	}
	_, err = d.store.Update(ctx, j.ID, func(j *state.Job) error {
		beginUpload(j, sidecar)
		return nil
	})
	if err != nil {
		d.log.Error("commit uploading", "job", j.ID, "err", err)
		return stop
	}
	return next
}

// beginUpload moves a queued (or retrying) job into uploading.
func beginUpload(j *state.Job, sidecar string) {
	j.State = state.Uploading
	j.Sidecar = sidecar
	for i := range j.Destinations {
		if j.Destinations[i].State == state.DestPending || j.Destinations[i].State == state.DestFailed {
			j.Destinations[i].State = state.DestUploading
			j.Destinations[i].Error = ""
		}
	}
}

// quickStartMax is the largest file that skips its own "uploading" commit.
const quickStartMax = 1 << 20

// quickStart reports whether j is a small file going only to destinations
// with nothing to register (plain S3): one request of a few milliseconds
// each. Such a job is not committed as uploading first; the move to
// uploading is folded into the destinations' final commit, which saves a
// commit (and an fsync) per file, most of the cost of a burst of small
// files. A crash meanwhile re-sends the same single request either way.
// status shows the job as queued for those milliseconds.
func quickStart(j *state.Job, rt *runtime) bool {
	if j.Size > quickStartMax {
		return false
	}
	for _, ds := range j.Destinations {
		if ds.State == state.DestDone {
			continue
		}
		lr, ok := rt.dests[ds.Name].(localRegister)
		if !ok || !lr.RegisterIsLocal() {
			return false
		}
	}
	return true
}

// quick collects a quickStart job's destination results, which are not
// committed by the worker: the filer commits them together with the move
// to moving, in one transaction for all the jobs it takes at once. The
// worker is free for the next file as soon as the request is answered.
type quick struct {
	mu      sync.Mutex
	results []destResult
}

// destResult is a destination's finished checkpoint, not yet committed.
type destResult struct {
	name string
	cp   *uploader.Checkpoint
	raw  []byte
}

// deliver uploads to and registers with every destination not yet done.
// Destinations are independent: they run side by side (a platform's
// processing wait does not hold up another's upload), a finished one is
// never repeated, and one destination's failure does not stop the others.
// q is non-nil for a quickStart job.
func (d *Daemon) deliver(ctx context.Context, j *state.Job, q *quick) step {
	meta, err := d.loadMetadata(j)
	if err != nil {
		return stepIf(d.fail(ctx, j, []destErr{{err: err}}, true))
	}
	src := &uploader.Source{
		JobID: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath, Size: j.Size,
		ModTime: j.ModTime, Inode: j.Inode, Device: j.Device, Found: j.Created, Meta: meta,
		Media: mediaFacts(j),
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
			err := d.deliverOne(dctx, j, src, rt, ds, q)
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
		return stop // shutting down: the committed state resumes later
	}
	if len(errs) > 0 {
		return stepIf(d.handleErrors(ctx, j, errs))
	}
	if q != nil && len(q.results) > 0 {
		return d.handToFiler(ctx, fileReq{id: j.ID, commit: d.resultCommit(j, rt, q.results)})
	}
	// The last destination's commit normally moved the job on already.
	if cur, err := d.store.Get(ctx, j.ID); err == nil && cur.State == state.Moving {
		return next
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
		return stop
	}
	return next
}

// resultCommit is the change the filer commits for a quickStart job: into
// uploading, every destination's result, done, and on to moving with its
// planned target.
func (d *Daemon) resultCommit(mem *state.Job, rt *runtime, results []destResult) func(*state.Job) error {
	target := d.planTarget(mem, rt)
	return func(j *state.Job) error {
		if j.State == state.Queued || j.State == state.Retry {
			j.Media = mem.Media // a quickStart job's probe facts
			beginUpload(j, mem.Sidecar)
		}
		for _, r := range results {
			ds := j.Dest(r.name)
			if ds == nil {
				return fmt.Errorf("job %d has no destination %s", j.ID, r.name)
			}
			applyCheckpoint(j, ds, r.cp, r.raw)
			advance(j, ds, state.DestDone)
		}
		if j.State == state.Moving && j.FinalPath == "" {
			j.FinalPath = target
		}
		return nil
	}
}

// destErr is one destination's failure in an attempt ("" dest: the job's
// own, e.g. an unreadable sidecar).
type destErr struct {
	dest string
	err  error
}

// deliverOne runs one destination from its committed sub-state to done.
func (d *Daemon) deliverOne(ctx context.Context, j *state.Job, src *uploader.Source, rt *runtime, ds state.Dest, q *quick) error {
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
	if lr, ok := dest.(localRegister); ok && lr.RegisterIsLocal() {
		sess.hold = true
	}
	began := time.Now()
	if ds.State == state.DestUploading || ds.State == state.DestPending || ds.State == state.DestFailed {
		if err := dest.Upload(ctx, src, cp, sess); err != nil {
			return err
		}
		// Bytes this process sent: a resumed upload had some already.
		d.metrics.uploaded(ds.Name, j.Size-ds.BytesDone)
		if !sess.promoted && !sess.held {
			if err := d.commitDest(ctx, j, ds.Name, cp, state.DestRegistering, ""); err != nil {
				return err
			}
		}
	}
	if err := dest.Register(ctx, src, cp, sess); err != nil {
		return err
	}
	if q != nil && sess.held {
		raw, err := json.Marshal(cp)
		if err != nil {
			return fmt.Errorf("encode checkpoint: %w", err)
		}
		q.mu.Lock()
		q.results = append(q.results, destResult{name: ds.Name, cp: cp, raw: raw})
		q.mu.Unlock()
	} else if err := d.commitDest(ctx, j, ds.Name, cp, state.DestDone, d.planTarget(j, rt)); err != nil {
		return err
	}
	d.metrics.destDone(ds.Name, time.Since(began))
	d.progress.Delete(progressKey{j.ID, ds.Name})
	return nil
}

// localRegister is implemented by destinations whose Register does no
// remote work (plain S3). Their single-request upload's final checkpoint is
// committed together with "done": one commit per small file instead of two,
// and a crash in between re-sends the same single request either way.
type localRegister interface {
	RegisterIsLocal() bool
}

// commitDest records a destination's checkpoint and new sub-state, and
// moves the job to registering once no destination is still uploading.
// target, when set, is where the file will be filed: committed with the
// move to moving (when this is the last destination), it saves the move its
// own commit. mem is the worker's copy of the job (for a quickStart job's
// sidecar).
func (d *Daemon) commitDest(ctx context.Context, mem *state.Job, name string, cp *uploader.Checkpoint, st state.DestState, target string) error {
	id := mem.ID
	raw, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	_, err = d.store.Update(ctx, id, func(j *state.Job) error {
		if j.State == state.Queued || j.State == state.Retry {
			j.Media = mem.Media         // a quickStart job's probe facts
			beginUpload(j, mem.Sidecar) // a quickStart job
		}
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
	// hold: keep the final checkpoint of a single-request upload for the
	// caller's next commit (set for localRegister destinations); held: one
	// is being kept. Multipart checkpoints are always committed at once: a
	// completed multipart upload that is not recorded cannot be resumed.
	hold, held bool
	d          *Daemon
	id         uint64
	dest       string
	bytes      *progress
}

func (d *Daemon) newSession(id uint64, dest string) *session {
	v, _ := d.progress.LoadOrStore(progressKey{id, dest}, newProgress())
	return &session{d: d, id: id, dest: dest, bytes: v.(*progress)}
}

func (s *session) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	if s.hold && cp.Uploaded && cp.UploadID == "" && len(cp.Parts) == 0 {
		s.held = true
		return nil
	}
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
