// Package daemon wires the pipeline: watcher events become jobs in the state
// store, workers deliver them to the destinations and the mover files them
// into processed/ or failed/. It also serves the control socket.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/watcher"
)

// Options for New.
type Options struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// Ready is called once every folder is watched and the first scan is
	// queued (sd_notify READY=1 under systemd). May be nil.
	Ready func()
	// OrphanGuard overrides how old an unknown multipart upload must be
	// before it is aborted at start (default 24h).
	OrphanGuard time.Duration
}

// Daemon is a running watchfolder.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	started time.Time
	store   *state.Store
	dests   map[string]uploader.Destination
	folders map[string]*config.Folder
	watcher *watcher.Watcher
	sched   *scheduler
	onReady func()
	guard   time.Duration

	// progress holds live bytes-sent counters per job and destination for
	// status output; the durable figure is in the checkpoint.
	progress sync.Map // key progressKey -> *atomic.Int64
	inflight atomic.Int64
}

type progressKey struct {
	id   uint64
	dest string
}

// New opens the state store and builds destinations and the watcher. It
// does not start anything; Run does.
func New(ctx context.Context, o Options) (*Daemon, error) {
	cfg := o.Config
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	store, err := state.Open(filepath.Join(cfg.StateDir, "state.db"), state.Options{})
	if err != nil {
		return nil, err
	}
	lim := uploader.NewLimiter(cfg.Upload.MaxBandwidth)
	dests, err := buildDestinations(ctx, cfg, lim, log)
	if err != nil {
		store.Close()
		return nil, err
	}
	d := &Daemon{
		cfg: cfg, log: log, version: o.Version, store: store, dests: dests,
		folders: map[string]*config.Folder{}, sched: newScheduler(), onReady: o.Ready,
		guard: o.OrphanGuard,
	}
	if d.guard <= 0 {
		d.guard = orphanGuard
	}
	var wf []watcher.Folder
	for i := range cfg.Folders {
		f := &cfg.Folders[i]
		d.folders[f.Name] = f
		wf = append(wf, watcher.Folder{
			Name: f.Name, Path: f.Path, Skip: []string{f.ProcessedDir, f.FailedDir},
			Include: f.Include, Exclude: f.Exclude,
			StableAfter: f.StableAfter, RescanInterval: f.RescanInterval,
		})
	}
	d.watcher, err = watcher.New(watcher.Options{Folders: wf, Logger: log})
	if err != nil {
		store.Close()
		return nil, err
	}
	return d, nil
}

// Store exposes the job store (for tests and the control API).
func (d *Daemon) Store() *state.Store { return d.store }

// Run runs until ctx is cancelled, then stops taking work, gives in-flight
// jobs until half of shutdown_timeout to reach a committed point, cancels
// what is left (committed parts stay committed) and closes the store.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	defer d.store.Close()
	for _, f := range d.cfg.Folders {
		for _, dir := range []string{f.ProcessedDir, f.FailedDir} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				d.log.Warn("cannot create directory; moves into it will retry", "dir", dir, "err", err)
			}
		}
	}

	// workCtx outlives ctx by a grace period so uploads can commit.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// Serve the control socket first: the store is locked from Open on,
	// so the CLI can only read through the socket.
	ctl, err := d.startControl()
	if err != nil {
		return err
	}
	defer ctl.Close()

	known, err := d.recover(workCtx)
	if err != nil {
		return fmt.Errorf("resume unfinished jobs: %w", err)
	}
	go d.cleanOrphans(workCtx, known)

	events := make(chan watcher.Event, 1024)
	var wg sync.WaitGroup
	watchErr := make(chan error, 1)
	wg.Go(func() { watchErr <- d.watcher.Run(ctx, events) })
	wg.Go(func() { d.ingest(ctx, events) })

	var workers sync.WaitGroup
	for range max(1, d.cfg.Upload.MaxFiles) {
		workers.Go(func() { d.worker(ctx, workCtx) })
	}
	if d.onReady != nil {
		d.onReady()
	}
	d.log.Info("watchfolder running", "version", d.version, "folders", len(d.cfg.Folders),
		"destinations", len(d.dests), "state", d.cfg.StateDir, "control", d.cfg.ControlSocket)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-watchErr:
		if runErr != nil {
			runErr = fmt.Errorf("watcher: %w", runErr)
		}
	}
	d.log.Info("shutting down: no new work; waiting for in-flight jobs", "timeout", d.cfg.ShutdownTimeout)
	d.sched.close()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	grace := d.cfg.ShutdownTimeout / 2
	select {
	case <-done:
	case <-time.After(grace):
		d.log.Info("cancelling in-flight uploads; committed parts resume on restart", "inflight", d.inflight.Load())
		cancelWork()
		select {
		case <-done:
		case <-time.After(d.cfg.ShutdownTimeout - grace):
			d.log.Warn("workers did not stop within shutdown_timeout")
		}
	}
	wg.Wait()
	d.sched.stopTimers()
	return runErr
}

// recover puts every unfinished job back on its way after a restart. It
// returns the multipart upload ids the unfinished jobs hold.
func (d *Daemon) recover(ctx context.Context) (map[string]bool, error) {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	n := 0
	for _, j := range jobs {
		for _, ds := range j.Destinations {
			var cp uploader.Checkpoint
			if len(ds.Checkpoint) > 0 && json.Unmarshal(ds.Checkpoint, &cp) == nil && cp.UploadID != "" {
				known[cp.UploadID] = true
			}
		}
		if _, ok := d.folders[j.Folder]; !ok {
			d.log.Warn("job's folder is no longer configured; leaving it", "job", j.ID, "folder", j.Folder, "path", j.Path)
			continue
		}
		switch j.State {
		case state.Waiting:
			// The start-up scan re-reports files that are still there.
			if _, err := os.Lstat(j.Path); errors.Is(err, os.ErrNotExist) {
				d.transition(ctx, j.ID, state.Gone, "file vanished while the daemon was stopped")
			}
			continue
		case state.Retry:
			d.sched.pushAt(j.ID, j.NextAttempt)
		default:
			d.sched.push(j.ID)
		}
		n++
	}
	if n > 0 {
		d.log.Info("resuming unfinished jobs", "count", n)
	}
	return known, nil
}

// orphanGuard is how old an unknown multipart upload must be before it is
// aborted: younger ones may belong to another daemon writing to the same
// bucket prefix, whose uploads this one cannot know.
const orphanGuard = 24 * time.Hour

// orphanCleaner is implemented by destinations that can find multipart
// uploads left by a crash between creating them and committing their id.
type orphanCleaner interface {
	CleanOrphans(ctx context.Context, folders []string, olderThan time.Duration, known func(uploadID string) bool) (int, error)
}

func (d *Daemon) cleanOrphans(ctx context.Context, known map[string]bool) {
	for name, dest := range d.dests {
		oc, ok := dest.(orphanCleaner)
		if !ok {
			continue
		}
		var folders []string
		for _, f := range d.cfg.Folders {
			if slices.Contains(f.Destinations, name) {
				folders = append(folders, f.Name)
			}
		}
		n, err := oc.CleanOrphans(ctx, folders, d.guard, func(id string) bool { return known[id] })
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("could not look for abandoned multipart uploads", "destination", name, "err", err)
		case n > 0:
			d.log.Info("aborted abandoned multipart uploads", "destination", name, "count", n)
		}
	}
}

// transition commits a plain state change with a reason.
func (d *Daemon) transition(ctx context.Context, id uint64, to state.State, reason string) {
	_, err := d.store.Update(ctx, id, func(j *state.Job) error {
		j.State = to
		j.Error = reason
		return nil
	})
	if err != nil {
		d.log.Error("commit state change", "job", id, "to", to, "err", err)
	}
}
