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
		first, ok := d.cl.acquire(ctx, id)
		if !ok {
			d.sched.done(id)
			continue
		}
		d.inflight.Add(1)
		handed := d.process(workCtx, id, first)
		d.inflight.Add(-1)
		if !handed {
			d.sched.done(id)
			d.cl.release(workCtx, d, id)
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
//
// first, when set, is the job as read together with its claim (cluster
// mode): owned at that moment, it spares the first round's read.
func (d *Daemon) process(ctx context.Context, id uint64, first *state.Job) (wasHanded bool) {
	for ctx.Err() == nil {
		j, owned, err := first, true, error(nil)
		if first == nil {
			j, owned, err = d.load(ctx, id)
		}
		first = nil
		if err != nil {
			if !errors.Is(err, state.ErrNotFound) {
				d.log.Error("load job", "job", id, "err", err)
			}
			return false
		}
		if !owned {
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
	if j.CTime.IsZero() {
		// The version this attempt reads: a rewrite in place from now on
		// moves the change time even when it restores size and mtime.
		if ct, err := changeTime(j.Path); err == nil {
			j.CTime = ct
		}
	}
	if j.Size == 0 {
		return stepIf(d.fail(ctx, j, []destErr{{err: errors.New("empty file (0 bytes): nothing to deliver")}}, true))
	}
	sidecar, err := d.findSidecar(j, f)
	if errors.Is(err, errSidecarPending) {
		wait := j.Created.Add(f.SidecarWait)
		if _, serr := os.Lstat(sidecarPath(j.Path)); serr == nil {
			// There, but written moments ago: look again once it can be
			// stable, not at the end of sidecar_wait.
			if w := time.Now().Add(f.StableAfter); w.Before(wait) {
				wait = w
			}
			d.log.Debug("waiting for the sidecar to be stable", "path", j.Path, "until", wait.Format(time.RFC3339Nano))
		} else {
			d.log.Info("waiting for the required sidecar", "path", j.Path, "until", wait.Format(time.RFC3339))
		}
		d.sched.pushAt(j.ID, wait)
		return stop
	}
	if err != nil {
		if sidecar != "" {
			// Record it so the malformed sidecar travels to failed/ too.
			j2, err2 := d.commit(ctx, j.ID, "sidecar", func(j *state.Job) error { j.Sidecar = sidecar; return nil })
			if err2 != nil {
				return stop
			}
			return stepIf(d.fail(ctx, j2, []destErr{{err: err}}, uploader.IsPermanent(err)))
		}
		return stepIf(d.fail(ctx, j, []destErr{{err: err}}, uploader.IsPermanent(err)))
	}
	j.Sidecar = sidecar
	if st, done := d.skipDelivered(ctx, j); done {
		return st
	}
	if st, ok := d.probeMedia(ctx, j, f, sidecar); !ok {
		return st
	}
	if quickStart(j, d.rt.Load()) {
		// The move into uploading is folded into the destinations' final
		// commit: see quickStart.
		return d.deliver(ctx, j, &quick{})
	}
	mem := j
	if _, err := d.commit(ctx, j.ID, "start of upload", func(j *state.Job) error {
		beginUpload(j, mem)
		return nil
	}); err != nil {
		return stop
	}
	return next
}

// beginUpload moves a queued (or retrying) job into uploading, with what
// the worker learnt of it (mem): its sidecar and the file's change time.
func beginUpload(j *state.Job, mem *state.Job) {
	j.State = state.Uploading
	j.Sidecar = mem.Sidecar
	if mem.Media != nil {
		j.Media = mem.Media // the probe's facts (a quickStart job's are not yet committed)
	}
	if j.CTime.IsZero() {
		j.CTime = mem.CTime
	}
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
// Each destination's outcome — done, a failed attempt with its next try,
// failed for good — is committed and logged the moment it happens; a
// destination whose next try comes while a sibling is still at work tries
// again within this round. Once every destination has an outcome the job's
// own state sums them (see settle). q is non-nil for a quickStart job.
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
	if src.Media != nil {
		src.Duration = src.Media.Duration // platform rules on the length (JW: at least 2 s)
	}
	rt := d.rt.Load()
	// A changed source makes every sibling's work moot: cancel them.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []destErr // the job's own: source changed or vanished, a failed commit
	)
	var run []state.Dest
	for _, ds := range j.Destinations {
		if ds.State != state.DestDone && ds.State != state.DestFailed {
			run = append(run, ds)
		}
	}
	r := newRound(len(run))
	for _, ds := range run {
		wg.Go(func() {
			err := d.runDest(dctx, j, src, rt, ds, q, r)
			if err == nil {
				return
			}
			if errors.Is(err, uploader.ErrSourceChanged) || errors.Is(err, os.ErrNotExist) {
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
	return d.settle(ctx, j, rt, q)
}

// round lets a destination that failed wait for its next attempt while its
// siblings are still at work, and ends the wait once none is: the job then
// waits as a whole (retry), freeing the worker.
type round struct {
	mu     sync.Mutex
	active int
	closed bool
	idle   chan struct{}
}

func newRound(n int) *round { return &round{active: n, idle: make(chan struct{})} }

// leave marks one destination as no longer at work.
func (r *round) leave() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active--
	if r.active <= 0 && !r.closed {
		r.closed = true
		close(r.idle)
	}
}

// wait is called by an active destination: it waits until `until` and
// reports true (the destination is active again), or false when every
// destination stopped working meanwhile (or ctx ended).
func (r *round) wait(ctx context.Context, until time.Time) bool {
	r.leave()
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-r.idle:
		return false
	case <-t.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.active++
	return true
}

// runDest runs one destination until it is done, has failed for good, or
// waits for a next attempt that no sibling's work outlasts. Its failures
// are recorded here; the error returned is the job's own (the source
// changed or vanished, a commit failed), for handleErrors.
func (d *Daemon) runDest(ctx context.Context, j *state.Job, src *uploader.Source, rt *runtime, ds state.Dest, q *quick, r *round) error {
	active := true
	defer func() {
		if active {
			r.leave()
		}
	}()
	// A destination still waiting for its next attempt (the job resumed
	// for a sibling's, or after a restart) waits for it first.
	if !ds.NextAttempt.IsZero() && time.Now().Before(ds.NextAttempt) && q == nil {
		if active = r.wait(ctx, ds.NextAttempt); !active {
			return nil
		}
	}
	for {
		err := d.deliverOne(ctx, j, src, rt, ds, q)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, uploader.ErrSourceChanged) || isCommitError(err) {
			return err
		}
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Lstat(j.Path); errors.Is(serr, os.ErrNotExist) {
				return err
			}
		}
		out, err := d.destFailed(ctx, j, ds.Name, err)
		if err != nil {
			return err
		}
		// A quickStart job's siblings answer within milliseconds: it
		// waits as a whole.
		if out.final || q != nil {
			return nil
		}
		if active = r.wait(ctx, out.next); !active {
			return nil
		}
		cur, err := d.store.Get(ctx, j.ID)
		if err != nil {
			return &commitError{err}
		}
		nds := cur.Dest(ds.Name)
		if nds == nil {
			return nil
		}
		ds = *nds
		d.log.Info("trying the destination again", "job", j.ID, "path", j.Path, "destination", ds.Name, "attempt", ds.Attempts+1)
	}
}

// destOutcome is what destFailed recorded.
type destOutcome struct {
	final bool      // the destination failed for good
	next  time.Time // otherwise: when it is tried again
}

// destFailed commits, logs and counts one destination's failed attempt at
// once, whatever its siblings are doing: it waits for a next attempt with
// backoff, or, when the error is permanent or its attempts are used up,
// it has failed for good.
func (d *Daemon) destFailed(ctx context.Context, j *state.Job, name string, cause error) (destOutcome, error) {
	retry := d.Config().Retry
	permanent := uploader.IsPermanent(cause)
	var out destOutcome
	attempt := 0
	_, err := d.commit(ctx, j.ID, "destination failure", func(cur *state.Job) error {
		ds := cur.Dest(name)
		if ds == nil {
			return fmt.Errorf("job %d has no destination %s", cur.ID, name)
		}
		ds.Attempts++
		attempt = ds.Attempts
		ds.Error = cause.Error()
		out = destOutcome{final: permanent || ds.Attempts >= retry.MaxAttempts}
		if out.final {
			ds.State = state.DestFailed
			ds.NextAttempt = time.Time{}
			cur.Note(name, "failed: "+ds.Error)
			return nil
		}
		delay := backoff(retry.InitialBackoff, retry.MaxBackoff, ds.Attempts)
		if ra, ok := uploader.RetryAfter(cause); ok && ra > delay {
			delay = ra
		}
		out.next = time.Now().Add(delay)
		ds.NextAttempt = storedTime(out.next)
		cur.Note(name, fmt.Sprintf("attempt %d failed: %s", ds.Attempts, ds.Error))
		return nil
	})
	if err != nil {
		return out, err
	}
	kind := "transient"
	if permanent {
		kind = "permanent"
	}
	d.metrics.failure(name, kind)
	if out.final {
		d.log.Error("destination failed", "job", j.ID, "path", j.Path, "destination", name,
			"attempts", attempt, "err", cause)
	} else {
		d.log.Warn("destination attempt failed; will retry", "job", j.ID, "path", j.Path, "destination", name,
			"attempt", attempt, "max_attempts", retry.MaxAttempts, "retry_at", out.next.Format(time.RFC3339), "err", cause)
	}
	return out, nil
}

func storedTime(t time.Time) time.Time { return t.UTC().Round(0) }

// settle sums the destinations' outcomes into the job's state once each
// has one: on to moving when all are done (a quickStart job's results are
// committed by the filer), to failed_dir when one failed for good, else to
// retry at the earliest next attempt. A quickStart job's results that
// succeeded are committed here with the rest, so they are never sent again.
func (d *Daemon) settle(ctx context.Context, j *state.Job, rt *runtime, q *quick) step {
	var results []destResult
	if q != nil {
		results = q.results
	}
	cur, err := j, error(nil)
	if q == nil || d.cl == nil {
		cur, err = d.store.Get(ctx, j.ID)
	}
	// (A quickStart job in cluster mode is judged on the worker's copy,
	// read at the start of this round under the claim: what this round
	// committed since (a failed attempt, a change time) makes no
	// destination done, so it decides as the current version would, and
	// the filer's commit applies the results to the current version. It
	// saves an etcd round trip per file.)
	if err != nil {
		if !errors.Is(err, state.ErrNotFound) {
			d.log.Error("load job", "job", j.ID, "err", err)
			d.sched.pushAt(j.ID, time.Now().Add(commitRetry))
		}
		return stop
	}
	if cur.State == state.Moving {
		return next // the last destination's commit moved the job on
	}
	done := map[string]bool{}
	for _, r := range results {
		done[r.name] = true
	}
	allDone := true
	for _, ds := range cur.Destinations {
		if ds.State != state.DestDone && !done[ds.Name] {
			allDone = false
		}
	}
	if allDone && len(results) > 0 {
		return d.handToFiler(ctx, fileReq{id: j.ID, commit: d.resultCommit(j, rt, results)})
	}
	var (
		final  bool
		nextAt time.Time
		msgs   []string
	)
	retry := d.Config().Retry
	target := d.planTarget(j, rt)
	updated, err := d.commit(ctx, j.ID, "attempt outcome", func(cur *state.Job) error {
		if (cur.State == state.Queued || cur.State == state.Retry) && len(results) > 0 {
			beginUpload(cur, j)
		}
		for _, r := range results {
			if ds := cur.Dest(r.name); ds != nil {
				applyCheckpoint(cur, ds, r.cp, r.raw)
				advance(cur, ds, state.DestDone)
			}
		}
		final, nextAt, msgs = false, time.Time{}, nil
		settled := true
		for i := range cur.Destinations {
			ds := &cur.Destinations[i]
			switch {
			case ds.State == state.DestDone:
				continue
			case ds.State == state.DestFailed:
				final = true
			case !ds.NextAttempt.IsZero():
				if nextAt.IsZero() || ds.NextAttempt.Before(nextAt) {
					nextAt = ds.NextAttempt
				}
			}
			settled = false
			if ds.Error != "" {
				msgs = append(msgs, "destination "+ds.Name+": "+ds.Error)
			}
		}
		if settled {
			if cur.State != state.Moving {
				cur.State, cur.MoveTo, cur.Error = state.Moving, state.MoveProcessed, ""
			}
			if cur.FinalPath == "" {
				cur.FinalPath = target
			}
			return nil
		}
		// The job's attempts are its most tried destination's.
		for _, ds := range cur.Destinations {
			cur.Attempts = max(cur.Attempts, ds.Attempts)
		}
		cur.Error = strings.Join(msgs, "; ")
		if !final && cur.Attempts >= retry.MaxAttempts && nextAt.IsZero() {
			final = true
		}
		if final {
			// The job cannot succeed as a whole: destinations still
			// waiting for a try are not tried again.
			for i := range cur.Destinations {
				if ds := &cur.Destinations[i]; ds.State != state.DestDone {
					ds.State, ds.NextAttempt = state.DestFailed, time.Time{}
				}
			}
			cur.State, cur.MoveTo, cur.NextAttempt = state.Moving, state.MoveFailed, time.Time{}
			return nil
		}
		if nextAt.IsZero() {
			nextAt = storedTime(time.Now().Add(backoff(retry.InitialBackoff, retry.MaxBackoff, cur.Attempts)))
		}
		cur.State, cur.NextAttempt = state.Retry, nextAt
		return nil
	})
	if err != nil {
		return stop
	}
	switch {
	case updated.State == state.Moving && updated.MoveTo == state.MoveProcessed:
		return next
	case final:
		d.log.Error("job failed", "job", j.ID, "path", j.Path, "attempts", updated.Attempts, "err", updated.Error)
		d.abortAll(ctx, j.ID)
		return next
	}
	d.log.Warn("attempt failed; will retry", "job", j.ID, "path", j.Path, "attempt", updated.Attempts,
		"max_attempts", retry.MaxAttempts, "retry_at", nextAt.Format(time.RFC3339), "err", updated.Error)
	d.sched.pushAt(j.ID, nextAt)
	return stop
}

// resultCommit is the change the filer commits for a quickStart job: into
// uploading, every destination's result, done, and on to moving with its
// planned target.
func (d *Daemon) resultCommit(mem *state.Job, rt *runtime, results []destResult) func(*state.Job) error {
	target := d.planTarget(mem, rt)
	return func(j *state.Job) error {
		if j.State == state.Queued || j.State == state.Retry || j.State == state.Probing {
			beginUpload(j, mem)
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
	// The destination has the bytes it read: before it counts as
	// delivered, the file must still be the version they came from.
	if err := d.checkVersion(ctx, j, cp.SHA256); err != nil {
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
	_, err = d.commit(ctx, id, "destination "+name+" "+string(st), func(j *state.Job) error {
		if j.State == state.Queued || j.State == state.Retry || j.State == state.Probing {
			beginUpload(j, mem) // a quickStart job
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
	ds.NextAttempt = time.Time{}
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
	_, err = s.d.commit(ctx, s.id, "upload checkpoint of "+s.dest, func(j *state.Job) error {
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

// handleErrors handles what concerns the job as a whole, after every
// destination has stopped: the file vanished (gone), changed (back to
// waiting), or a commit failed (already scheduled again).
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
	for _, e := range errs {
		if isCommitError(e.err) {
			return false // scheduled again by commit
		}
	}
	// Anything else (not expected: destinations record their own
	// failures) counts as a failed attempt of the job.
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

// fail records a failed attempt of the job itself (its file or sidecar
// cannot be read, ...): the job retries with backoff, or, when an error is
// permanent or attempts are used up, heads to failed_dir. Destinations
// that finished stay done either way.
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
	updated, err := d.commit(ctx, j.ID, "failed attempt", func(j *state.Job) error {
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
// once the new version is stable. Destinations that had finished hold the
// old version, so they are sent the new one too.
func (d *Daemon) backToWaiting(ctx context.Context, j *state.Job) bool {
	_, err := d.commit(ctx, j.ID, "change of file", func(j *state.Job) error {
		j.State = state.Waiting
		j.Error = "file changed while it was being delivered; waiting for it to be stable again"
		j.CTime = time.Time{}
		j.SHA256 = ""
		for i := range j.Destinations {
			ds := &j.Destinations[i]
			if ds.State == state.DestDone {
				j.Note(ds.Name, "delivered a version that has since changed ("+orDash(ds.Object)+"); sending the new one")
			}
			ds.State = state.DestPending
			ds.Checkpoint = nil
			ds.BytesDone = 0
			ds.NextAttempt = time.Time{}
		}
		return nil
	})
	if err != nil {
		return false
	}
	d.log.Warn("file changed after it was found; waiting for it to settle again", "job", j.ID, "path", j.Path)
	d.watcher.Load().Forget(j.Path)
	return false
}

func (d *Daemon) markGone(ctx context.Context, j *state.Job, reason string) bool {
	_, err := d.commit(ctx, j.ID, "vanished file", func(j *state.Job) error {
		j.State = state.Gone
		j.Error = reason
		// Destinations that had not finished never will: their uploads
		// were aborted, so they are back to pending, not "uploading".
		for i := range j.Destinations {
			if ds := &j.Destinations[i]; ds.State != state.DestDone {
				ds.State = state.DestPending
				ds.NextAttempt = time.Time{}
			}
		}
		return nil
	})
	if err != nil {
		return false
	}
	d.log.Warn("file vanished", "job", j.ID, "path", j.Path, "reason", reason)
	return false
}

// sourceChanged compares the file on disk with the job's version: size,
// mtime, inode, device and, once recorded, the change time.
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
	if st != nil && !j.CTime.IsZero() && !ctimeOf(st).Equal(j.CTime) {
		return true, false, nil
	}
	return false, false, nil
}
