// Package daemon wires the pipeline: watcher events become jobs in the state
// store, workers deliver them to the destinations and the mover files them
// into processed/ or failed/. It also serves the control socket, the
// Prometheus endpoint and the webhooks, and reloads its configuration.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/watcher"
)

// Options for New.
type Options struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// Ready is called once every folder is watched and its first scan has
	// been handed to the ingest loop (sd_notify READY=1 under systemd), and
	// again after each reload. May be nil.
	Ready func()
	// Reloading is called when a reload starts (sd_notify RELOADING=1).
	Reloading func()
	// Stopping is called when shutdown starts (sd_notify STOPPING=1).
	Stopping func()
	// Watchdog is called every WatchdogInterval while the ingest loop
	// answers (sd_notify WATCHDOG=1). Nil or a zero interval: off.
	Watchdog         func()
	WatchdogInterval time.Duration
	// LoadConfig reads the configuration again for a reload (SIGHUP or
	// POST /v1/reload). Nil: reloading is refused.
	LoadConfig func() (*config.Config, error)
	// OrphanGuard overrides how old an unknown multipart upload must be
	// before it is aborted at start (default 24h).
	OrphanGuard time.Duration
	// NotifyBackoff is the first delay between webhook tries (default 1s;
	// tests shorten it).
	NotifyBackoff time.Duration
	// KeepDone, when positive, prunes done and gone jobs older than this
	// from state.db once an hour (the keep_done setting). 0 keeps them all.
	KeepDone time.Duration
}

// Daemon is a running watchfolder.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	version string
	started time.Time
	store   jobStore
	cl      *cluster // nil unless [state] backend = "etcd"
	lim     *uploader.Limiter
	sched   *scheduler
	guard   time.Duration
	pause   *pauseState
	metrics *metrics
	// sidecarKeys are the destination types a sidecar may name at its top
	// level (config.SidecarPlatforms).
	sidecarKeys []string

	// rt is the reloadable part (config, folders, destinations): workers
	// load it once per step, a reload swaps it whole.
	rt       atomic.Pointer[runtime]
	watcher  atomic.Pointer[watcher.Watcher]
	notifier atomic.Pointer[notifier]
	reloadMu sync.Mutex
	// restart hands a new watcher to the supervisor in Run.
	restart chan *watcher.Watcher
	// heartbeat is answered by the ingest loop; the watchdog pings only
	// when it is answered, so a wedged loop stops the pings.
	heartbeat chan chan struct{}
	// claims holds folder+relpath of files a retry is moving back, so the
	// ingest loop does not take them for new files meanwhile.
	claims sync.Map

	// progress holds live bytes-sent counters per job and destination for
	// status output; the durable figure is in the checkpoint.
	progress sync.Map // key progressKey -> *progress
	inflight atomic.Int64
	// toFile hands jobs in moving from the workers to the filer.
	toFile chan fileReq
}

type progressKey struct {
	id   uint64
	dest string
}

// stateLockWait is how long the daemon waits for a lock another process
// holds on state.db (a CLI reading it) before it gives up.
const stateLockWait = 10 * time.Second

// New opens the state store and builds destinations and the watcher. It
// does not start anything; Run does.
func New(ctx context.Context, o Options) (*Daemon, error) {
	cfg := o.Config
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Each attribute once per line, however many layers (daemon,
	// destination, platform) add the same key.
	o.Logger = slog.New(dedupeAttrs(o.Logger.Handler()))
	log := o.Logger
	store, cl, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	pause, err := loadPauseState(cfg.StateDir)
	if err != nil {
		store.Close()
		return nil, err
	}
	d := &Daemon{
		opts: o, log: log, version: o.Version, store: store, sched: newScheduler(),
		guard: o.OrphanGuard, lim: uploader.NewLimiter(cfg.Upload.MaxBandwidth), pause: pause,
		restart: make(chan *watcher.Watcher), heartbeat: make(chan chan struct{}), cl: cl,
		sidecarKeys: config.SidecarPlatforms(),
	}
	if d.guard <= 0 {
		d.guard = orphanGuard
	}
	rt, err := d.buildRuntime(ctx, cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	w, err := d.newWatcher(cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	d.rt.Store(rt)
	d.watcher.Store(w)
	d.metrics = newMetrics(d)
	return d, nil
}

// Store exposes the job store (for tests and the control API).
func (d *Daemon) Store() jobStore { return d.store }

// Config returns the configuration in force (it changes on reload).
func (d *Daemon) Config() *config.Config { return d.rt.Load().cfg }

// Run runs until ctx is cancelled, then stops taking work, gives in-flight
// jobs until half of shutdown_timeout to reach a committed point, cancels
// what is left (committed parts stay committed) and closes the store.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	defer d.store.Close()
	cfg := d.Config()
	d.makeDirs(cfg)
	if d.cl == nil { // cluster nodes share their folders by design
		unlock, err := lockFolders(cfg.Folders, d.log)
		if err != nil {
			return err
		}
		defer unlock()
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
	msrv, err := d.metrics.serve(cfg.Metrics.Listen)
	if err != nil {
		return err
	}
	defer msrv.Close()
	wsrv, err := d.startWeb()
	if err != nil {
		return err
	}
	defer wsrv.Close()
	d.notifier.Store(newNotifier(workCtx, cfg.Notify, d.log, d.metrics, d.opts.NotifyBackoff, d.version, d.store, true))
	defer func() { d.notifier.Load().close() }()

	known, err := d.recover(workCtx)
	if err != nil {
		return fmt.Errorf("resume unfinished jobs: %w", err)
	}
	go d.cleanOrphans(workCtx, known)

	events := make(chan watcher.Event, 1024)
	var wg sync.WaitGroup
	wg.Go(func() { d.sweep(ctx) })
	if d.opts.KeepDone > 0 {
		wg.Go(func() { d.pruneLoop(ctx, d.opts.KeepDone) })
	}
	watchErr := make(chan error, 1)
	wg.Go(func() { watchErr <- d.superviseWatcher(ctx, events) })
	wg.Go(func() { d.ingest(ctx, events) })
	if d.cl != nil {
		wg.Go(func() { d.cl.run(ctx, d) })
	}
	if d.opts.Watchdog != nil && d.opts.WatchdogInterval > 0 {
		wg.Go(func() { d.watchdog(ctx) })
	}

	// The filer outlives the workers: it files what they hand over until
	// they have stopped.
	toFile := make(chan fileReq, fileBatchMax)
	d.toFile = toFile
	var filer sync.WaitGroup
	filer.Go(func() { d.filer(workCtx, toFile) })
	var workers sync.WaitGroup
	for range max(1, cfg.Upload.MaxFiles) {
		workers.Go(func() { d.worker(ctx, workCtx) })
	}
	nFolders := len(cfg.Folders)
	go func() {
		d.waitWatching(ctx, d.watcher.Load(), nFolders)
		if ctx.Err() == nil && d.opts.Ready != nil {
			d.opts.Ready()
		}
	}()
	d.log.Info("watchfolder running", "version", d.version, "folders", len(cfg.Folders),
		"destinations", len(cfg.Destinations), "state", cfg.StateDir, "control", cfg.ControlSocket,
		"metrics", cfg.Metrics.Listen, "paused", d.pause.list())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-watchErr:
		if runErr != nil {
			runErr = fmt.Errorf("watcher: %w", runErr)
		}
	}
	if d.opts.Stopping != nil {
		d.opts.Stopping()
	}
	// The config may have been reloaded meanwhile: use the current one.
	stopCfg := d.Config()
	d.log.Info("shutting down: no new work; waiting for in-flight jobs", "timeout", stopCfg.ShutdownTimeout)
	d.sched.close()
	done := make(chan struct{})
	go func() { workers.Wait(); close(toFile); filer.Wait(); close(done) }()
	grace := stopCfg.ShutdownTimeout / 2
	select {
	case <-done:
	case <-time.After(grace):
		d.log.Info("cancelling in-flight uploads; committed parts resume on restart", "inflight", d.inflight.Load())
		cancelWork()
		select {
		case <-done:
		case <-time.After(stopCfg.ShutdownTimeout - grace):
			d.log.Warn("workers did not stop within shutdown_timeout")
		}
	}
	wg.Wait()
	d.sched.stopTimers()
	d.saveLearned()
	return runErr
}

func (d *Daemon) makeDirs(cfg *config.Config) {
	for _, f := range cfg.Folders {
		fi, err := os.Stat(f.Path)
		if err != nil || !fi.IsDir() {
			// Never create the watched folder itself (a typo would be
			// watched silently); start-up and reload refuse it.
			continue
		}
		for _, dir := range []string{f.ProcessedDir, f.FailedDir} {
			if _, err := os.Lstat(dir); err == nil {
				continue
			}
			// The folder's permission bits: in a setgid folder the
			// kernel passes the group and the bit on, and no chmod has to
			// name it (refused under systemd's RestrictSUIDSGID).
			if err := mover.MkdirAll(dir, fi.Mode().Perm()); err != nil {
				d.log.Warn("cannot create directory; moves into it will retry", "dir", dir, "err", err)
				continue
			}
			// Editors read processed/ and failed/: they follow the
			// folder's group and mode, not the daemon's umask.
			if err := mover.FollowFolder(f.Path, dir); err != nil {
				d.log.Warn("cannot give the directory the folder's group and mode", "dir", dir, "err", err)
			}
		}
	}
}

// superviseWatcher runs the current watcher and, on reload, replaces it:
// a watcher runs only once, so a new folder list means a new watcher. Its
// start-up scan re-reports existing files; the ingest loop ignores files
// that already have a job.
func (d *Daemon) superviseWatcher(ctx context.Context, events chan<- watcher.Event) error {
	w := d.watcher.Load()
	for {
		wctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(wctx, events) }()
		select {
		case <-ctx.Done():
			cancel()
			return <-errc
		case err := <-errc:
			cancel()
			return err
		case nw := <-d.restart:
			cancel()
			if err := <-errc; err != nil {
				d.log.Warn("old watcher stopped with an error", "err", err)
			}
			d.metrics.retireWatcher(w.Stats())
			w = nw
		}
	}
}

// firstScanWait caps how long readiness waits for the first full scans: a
// huge tree must not make systemd give up on the start.
const firstScanWait = 20 * time.Second

// waitWatching returns once w has completed a full scan of every folder
// (every directory is watched and every file it found is on the event
// channel), or after firstScanWait. The watcher has no readiness hook; its
// scan counter is the closest observable point.
//
// w must be fresh (its counter starts at zero with this Run).
func (d *Daemon) waitWatching(ctx context.Context, w *watcher.Watcher, folders int) {
	deadline := time.NewTimer(firstScanWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for w.Stats().Scans < int64(folders) {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			d.log.Warn("first scan still running; reporting ready anyway", "waited", firstScanWait)
			return
		case <-tick.C:
		}
	}
}

// watchdog pings systemd at WatchdogInterval, but only after the ingest
// loop answered a heartbeat: a free-running ticker would keep a wedged
// daemon alive.
func (d *Daemon) watchdog(ctx context.Context) {
	t := time.NewTicker(d.opts.WatchdogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ack := make(chan struct{})
		select {
		case d.heartbeat <- ack:
		case <-ctx.Done():
			return
		case <-t.C:
			d.log.Warn("ingest loop did not answer the watchdog heartbeat in time")
			continue
		}
		select {
		case <-ack:
			d.opts.Watchdog()
		case <-ctx.Done():
			return
		}
	}
}

// recover puts every unfinished job back on its way after a restart. It
// returns the multipart upload ids the unfinished jobs hold.
func (d *Daemon) recover(ctx context.Context) (map[string]bool, error) {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return nil, err
	}
	rt := d.rt.Load()
	known := map[string]bool{}
	n := 0
	for _, j := range jobs {
		for _, ds := range j.Destinations {
			var cp uploader.Checkpoint
			if len(ds.Checkpoint) > 0 && json.Unmarshal(ds.Checkpoint, &cp) == nil && cp.UploadID != "" {
				known[cp.UploadID] = true
			}
		}
		if _, ok := rt.folders[j.Folder]; !ok {
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
	rt := d.rt.Load()
	for name, dest := range rt.dests {
		oc, ok := dest.(orphanCleaner)
		if !ok {
			continue
		}
		var folders []string
		for _, f := range rt.cfg.Folders {
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
