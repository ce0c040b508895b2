package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

// cmdMigrate copies the jobs between state.db (bbolt) and the etcd cluster
// of [state], keeping ids, states, history and upload checkpoints, so an
// install moves to cluster mode (or back) without re-uploading anything;
// queued notifications and the pause come along.
// The daemons must be stopped; the destination must be empty.
func cmdMigrate(e *env, args []string) int {
	fs, cfgPath := e.flags("migrate", "--to etcd|bbolt [--config FILE]")
	to := fs.String("to", "", "where to copy the jobs: etcd (from state_dir/state.db) or bbolt (from etcd into state_dir/state.db)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *to != "etcd" && *to != "bbolt" {
		fmt.Fprintln(e.stderr, "watchfolder migrate: --to etcd or --to bbolt is required")
		return exitUsage
	}
	cfg := e.loadConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	if len(cfg.State.Endpoints) == 0 {
		fmt.Fprintln(e.stderr, "watchfolder migrate: set [state] endpoints (and prefix) to the etcd cluster first")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	path := filepath.Join(cfg.StateDir, "state.db")
	db, err := state.Open(path, state.Options{})
	if errors.Is(err, state.ErrLocked) {
		fmt.Fprintf(e.stderr, "watchfolder migrate: %s is in use by the running daemon; stop it first\n", path)
		return exitError
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder migrate: %v\n", err)
		return exitError
	}
	defer db.Close()
	es, err := daemon.OpenEtcd(ctx, cfg.State)
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder migrate: %v\n", err)
		return exitError
	}
	defer es.Close()

	type source interface {
		List(ctx context.Context, f state.Filter) ([]*state.Job, error)
	}
	var from source = db
	var into func(context.Context, []*state.Job) error = es.Import
	fromName, toName := path, "etcd "+cfg.State.Prefix
	if *to == "bbolt" {
		from, into = es, db.Import
		fromName, toName = toName, fromName
	}
	jobs, err := from.List(ctx, state.Filter{})
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder migrate: read %s: %v\n", fromName, err)
		return exitError
	}
	// Oldest first, so a partial copy into etcd holds a prefix of history.
	for i, k := 0, len(jobs)-1; i < k; i, k = i+1, k-1 {
		jobs[i], jobs[k] = jobs[k], jobs[i]
	}
	if err := into(ctx, jobs); err != nil {
		fmt.Fprintf(e.stderr, "watchfolder migrate: write %s: %v\n", toName, err)
		return exitError
	}
	extra, err := daemon.MigrateExtras(ctx, cfg.StateDir, db, es, *to == "etcd")
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder migrate: copied %d job(s), then: %v\n", len(jobs), err)
		return exitError
	}
	fmt.Fprintf(e.stdout, "copied %d job(s) from %s to %s\n", len(jobs), fromName, toName)
	if extra.Notifications > 0 {
		fmt.Fprintf(e.stdout, "copied %d queued notification(s)\n", extra.Notifications)
	}
	if extra.Pause {
		fmt.Fprintln(e.stdout, "copied the pause: the folders paused before stay paused")
	}
	return exitOK
}
