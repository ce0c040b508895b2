package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// handleBackup streams a consistent copy of state.db (GET /v1/db/backup).
// The client writes the file itself, as its own user: the daemon never
// writes to a path a client names.
func (d *Daemon) handleBackup(w http.ResponseWriter, r *http.Request) {
	started := false
	n, err := d.store.Backup(r.Context(), w, func(size int64) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Disposition", `attachment; filename="state.db"`)
		w.WriteHeader(http.StatusOK)
		started = true
	})
	if err != nil {
		if !started {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		// Headers are out: a short body tells the client (Content-Length).
		d.log.Warn("database backup interrupted", "bytes", n, "err", err)
		return
	}
	d.log.Info("database backup sent", "bytes", n)
}

// PruneResult is the answer of POST /v1/db/prune.
type PruneResult struct {
	Pruned    int       `json:"pruned"`
	OlderThan time.Time `json:"older_than"`
	States    []string  `json:"states"`
}

// handlePrune deletes finished jobs (POST /v1/db/prune?older_than=720h
// [&state=done,gone]; default states: done, failed, gone).
func (d *Daemon) handlePrune(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	age, err := time.ParseDuration(q.Get("older_than"))
	if err != nil || age <= 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("older_than: want a positive duration such as 720h, got %q", q.Get("older_than")))
		return
	}
	var states []state.State
	if s := q.Get("state"); s != "" {
		for _, name := range strings.Split(s, ",") {
			st := state.State(strings.TrimSpace(name))
			if !st.Terminal() {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("state %q: only done, failed or gone jobs can be pruned", name))
				return
			}
			states = append(states, st)
		}
	}
	res, err := d.Prune(r.Context(), age, states)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Prune deletes finished jobs in states (default done, failed, gone) last
// changed more than age ago.
func (d *Daemon) Prune(ctx context.Context, age time.Duration, states []state.State) (PruneResult, error) {
	cutoff := time.Now().Add(-age)
	n, err := d.store.Prune(ctx, cutoff, states)
	res := PruneResult{Pruned: n, OlderThan: cutoff.UTC(), States: []string{}}
	for _, st := range states {
		res.States = append(res.States, string(st))
	}
	if err != nil {
		return res, err
	}
	if n > 0 {
		d.log.Info("pruned finished jobs", "count", n, "older_than", cutoff.UTC().Format(time.RFC3339))
	}
	return res, nil
}

// pruneInterval is how often keep_done pruning runs.
const pruneInterval = time.Hour

// pruneLoop keeps the history bounded: every pruneInterval (and once at
// start) it deletes done and gone jobs older than keep. Failed jobs stay
// until an operator retries or forgets them.
func (d *Daemon) pruneLoop(ctx context.Context, keep time.Duration) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		if _, err := d.Prune(ctx, keep, []state.State{state.Done, state.Gone}); err != nil && ctx.Err() == nil {
			d.log.Warn("pruning old jobs failed; will try again", "err", err, "retry_in", pruneInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
