package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/watcher"
)

// runtime is the part of the daemon a reload replaces. It is never
// modified after it is published, so readers need no lock.
type runtime struct {
	cfg     *config.Config
	folders map[string]*config.Folder
	dests   map[string]uploader.Destination
}

func (d *Daemon) buildRuntime(ctx context.Context, cfg *config.Config) (*runtime, error) {
	dests, err := buildDestinations(ctx, cfg, d.lim, d.log)
	if err != nil {
		return nil, err
	}
	var prev map[string]uploader.Destination
	if old := d.rt.Load(); old != nil {
		prev = old.dests
	}
	d.restoreLearned(ctx, prev, dests)
	rt := &runtime{cfg: cfg, folders: map[string]*config.Folder{}, dests: dests}
	for i := range cfg.Folders {
		rt.folders[cfg.Folders[i].Name] = &cfg.Folders[i]
	}
	return rt, nil
}

func watcherFolders(cfg *config.Config) []watcher.Folder {
	var wf []watcher.Folder
	for _, f := range cfg.Folders {
		wf = append(wf, watcher.Folder{
			Name: f.Name, Path: f.Path, Skip: []string{f.ProcessedDir, f.FailedDir},
			Include: f.Include, Exclude: f.Exclude,
			StableAfter: f.StableAfter, RescanInterval: f.RescanInterval,
			Sidecars: f.Sidecar != "ignore",
		})
	}
	return wf
}

func (d *Daemon) newWatcher(cfg *config.Config) (*watcher.Watcher, error) {
	w, err := watcher.New(watcher.Options{Folders: watcherFolders(cfg), Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("watch folders: %w", err)
	}
	return w, nil
}

// errNoReload is returned when the daemon was started without a loader.
var errNoReload = errors.New("reload is not available (no config loader)")

// Reload reads the configuration again and applies it without a restart:
// folders and destinations are added, changed or removed; a new watcher
// replaces the old one when the folder list changed. A config with errors
// is refused whole (each problem logged) and the old one stays in force.
// Jobs of removed folders are left as they are. Settings that need a
// restart (state_dir, control_socket, metrics, upload.max_files,
// upload.max_bandwidth) are reported and keep their old value.
func (d *Daemon) Reload(ctx context.Context) error {
	if d.opts.LoadConfig == nil {
		return errNoReload
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.opts.Reloading != nil {
		d.opts.Reloading()
	}
	// systemd waits for READY=1 after RELOADING=1 whatever the outcome.
	defer func() {
		if d.opts.Ready != nil {
			d.opts.Ready()
		}
	}()
	cfg, err := d.opts.LoadConfig()
	if err != nil {
		d.log.Error("reload refused: the new config has errors; keeping the old one", "err", err)
		return fmt.Errorf("reload refused, old config kept: %w", err)
	}
	// A typo in a folder path must not create and watch an empty folder.
	if probs := CheckFolders(cfg, nil); len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.String()
		}
		err := errors.New(strings.Join(msgs, "; "))
		d.log.Error("reload refused: a folder cannot be watched; keeping the old config", "err", err)
		return fmt.Errorf("reload refused, old config kept: %w", err)
	}
	old := d.rt.Load()
	for _, w := range restartOnly(old.cfg, cfg) {
		d.log.Warn("reload: setting changed but needs a restart; keeping the old value", "key", w)
	}
	// Keep the values that cannot change at run time.
	cfg.StateDir, cfg.ControlSocket, cfg.Metrics = old.cfg.StateDir, old.cfg.ControlSocket, old.cfg.Metrics
	cfg.Upload.MaxFiles, cfg.Upload.MaxBandwidth = old.cfg.Upload.MaxFiles, old.cfg.Upload.MaxBandwidth

	rt, err := d.buildRuntime(ctx, cfg)
	if err != nil {
		d.log.Error("reload refused: cannot build the destinations; keeping the old config", "err", err)
		return fmt.Errorf("reload refused, old config kept: %w", err)
	}
	var nw *watcher.Watcher
	if !reflect.DeepEqual(watcherFolders(old.cfg), watcherFolders(cfg)) {
		if nw, err = d.newWatcher(cfg); err != nil {
			d.log.Error("reload refused; keeping the old config", "err", err)
			return fmt.Errorf("reload refused, old config kept: %w", err)
		}
	}
	d.makeDirs(cfg)
	d.rt.Store(rt)
	if nw != nil {
		select {
		case d.restart <- nw:
			d.watcher.Store(nw)
		case <-ctx.Done():
			return ctx.Err()
		}
		d.waitWatching(ctx, nw, len(cfg.Folders))
	}
	if oldN := d.notifier.Load(); oldN != nil && !reflect.DeepEqual(old.cfg.Notify, cfg.Notify) {
		d.notifier.Store(newNotifier(oldN.ctx, cfg.Notify, d.log, d.metrics, d.opts.NotifyBackoff, d.version, d.store, false))
		oldN.close() // it delivers what it has queued, then stops
	}
	// Jobs parked by a folder that no longer exists, or queued jobs of a
	// folder that came back, get a worker's look again.
	d.unparkAll()
	d.log.Info("configuration reloaded", "folders", len(cfg.Folders), "destinations", len(cfg.Destinations),
		"watcher_restarted", nw != nil)
	return nil
}

// restartOnly lists the settings that differ but apply only at start.
func restartOnly(a, b *config.Config) []string {
	var out []string
	if a.StateDir != b.StateDir {
		out = append(out, "state_dir")
	}
	if a.ControlSocket != b.ControlSocket {
		out = append(out, "control_socket")
	}
	if a.Metrics != b.Metrics {
		out = append(out, "metrics.listen")
	}
	if !reflect.DeepEqual(a.Web, b.Web) {
		out = append(out, "web")
	}
	if a.Upload.MaxFiles != b.Upload.MaxFiles {
		out = append(out, "upload.max_files")
	}
	if a.Upload.MaxBandwidth != b.Upload.MaxBandwidth {
		out = append(out, "upload.max_bandwidth")
	}
	return out
}

// reloadTimeout bounds a reload requested over the control socket.
const reloadTimeout = time.Minute
