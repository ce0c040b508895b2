package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version       string                         `json:"version"`
	Started       time.Time                      `json:"started"`
	Uptime        string                         `json:"uptime"`
	UptimeSeconds float64                        `json:"uptime_seconds"`
	Folders       []string                       `json:"folders"`
	Paused        []string                       `json:"paused"` // "*": all folders
	Counts        map[string]map[state.State]int `json:"counts"`
	QueueDepth    int                            `json:"queue_depth"`
	InFlight      []InFlight                     `json:"in_flight"`
	Failures      []JobView                      `json:"recent_failures"`
	Cluster       *ClusterStatus                 `json:"cluster,omitempty"` // cluster mode only
}

// InFlight is one destination transfer under way.
type InFlight struct {
	ID          uint64  `json:"id"`
	Folder      string  `json:"folder"`
	Path        string  `json:"path"`
	RelPath     string  `json:"relpath"`
	Destination string  `json:"destination"`
	State       string  `json:"state"`
	Size        int64   `json:"size"`
	BytesDone   int64   `json:"bytes_done"`
	Rate        float64 `json:"rate_bytes_per_second"` // over the last few seconds
	ETASeconds  float64 `json:"eta_seconds"`           // 0: unknown
	// Error and NextAttempt: the destination's last attempt failed and
	// it waits to be tried again (its siblings go on meanwhile).
	Error       string     `json:"error,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
}

// recentFailures is how many failed jobs status shows.
const recentFailures = 5

type controlServer struct {
	srv *http.Server
	ln  net.Listener
}

func (c *controlServer) Close() error {
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.srv.Shutdown(ctx)
	os.Remove(c.ln.Addr().String())
	return err
}

// startControl serves the control API on the unix socket. A stale socket
// file from a killed daemon is replaced; a live one means another daemon.
func (d *Daemon) startControl() (*controlServer, error) {
	path := d.Config().ControlSocket
	if path == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: another watchfolder is already running", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	gate := &peerGate{selfUID: uint32(os.Getuid()), sockGID: fi.Sys().(*syscall.Stat_t).Gid,
		log: d.log.Warn, warned: map[uint32]bool{}}
	srv := &http.Server{Handler: d.controlHandler(gate), ConnContext: gate.connContext,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second}
	lim := newLimitListener(ln, gate.allows, gate.overCap)
	go srv.Serve(lim)
	return &controlServer{srv: srv, ln: ln}, nil
}

// controlHandler is the control API behind the peer check. A refused
// peer's connection is closed after its 403.
func (d *Daemon) controlHandler(gate *peerGate) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("GET /v1/jobs", d.handleList)
	mux.HandleFunc("GET /v1/jobs/{id}", d.handleShow)
	mux.HandleFunc("GET /v1/job", d.handleShow) // ?ref=ID|PATH
	mux.HandleFunc("POST /v1/jobs/{id}/retry", d.handleRetry)
	mux.HandleFunc("POST /v1/retry-failed", d.handleRetryFailed)
	mux.HandleFunc("DELETE /v1/jobs/{id}", d.handleForget)
	mux.HandleFunc("POST /v1/pause", d.handlePause(true))
	mux.HandleFunc("POST /v1/resume", d.handlePause(false))
	mux.HandleFunc("POST /v1/reload", d.handleReload)
	mux.HandleFunc("GET /v1/db/backup", d.handleBackup)
	mux.HandleFunc("POST /v1/db/prune", d.handlePrune)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := gate.check(r.Context()); err != nil {
			w.Header().Set("Connection", "close")
			writeErr(w, http.StatusForbidden, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := d.status(r.Context())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (d *Daemon) status(ctx context.Context) (*Status, error) {
	counts, err := d.store.Counts(ctx)
	if err != nil {
		return nil, err
	}
	up := time.Since(d.started)
	st := &Status{Version: d.version, Started: d.started,
		Uptime: up.Round(time.Second).String(), UptimeSeconds: up.Seconds(), Counts: counts,
		Folders: []string{}, Paused: d.pause.list(),
		QueueDepth: d.sched.depth(), InFlight: []InFlight{}, Failures: []JobView{}}
	if st.Cluster, err = d.cl.status(ctx, d.Config().Folders); err != nil {
		return nil, err
	}
	for _, f := range d.Config().Folders {
		st.Folders = append(st.Folders, f.Name)
		if counts[f.Name] == nil {
			counts[f.Name] = map[state.State]int{}
		}
	}
	now := time.Now()
	active, err := d.store.List(ctx, state.Filter{States: []state.State{state.Uploading, state.Registering}})
	if err != nil {
		return nil, err
	}
	for _, j := range active {
		for _, ds := range j.Destinations {
			if ds.State != state.DestUploading && ds.State != state.DestRegistering {
				continue
			}
			done, rate := ds.BytesDone, 0.0
			if v, ok := d.progress.Load(progressKey{j.ID, ds.Name}); ok {
				p := v.(*progress)
				done = max(done, p.bytes.Load())
				rate = p.rate(now)
			}
			inf := InFlight{ID: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath,
				Destination: ds.Name, State: string(ds.State), Size: j.Size, BytesDone: done,
				Rate: rate, ETASeconds: eta(j.Size, done, rate).Seconds(), Error: ds.Error}
			if !ds.NextAttempt.IsZero() {
				t := ds.NextAttempt
				inf.NextAttempt = &t
			}
			st.InFlight = append(st.InFlight, inf)
		}
	}
	sort.Slice(st.InFlight, func(a, b int) bool { return st.InFlight[a].ID < st.InFlight[b].ID })
	failed, err := d.store.List(ctx, state.Filter{States: []state.State{state.Failed}, Limit: recentFailures})
	if err != nil {
		return nil, err
	}
	for _, j := range failed {
		st.Failures = append(st.Failures, NewJobView(j, false))
	}
	return st, nil
}

// ParseFilter reads list filters from query parameters (shared with the
// CLI's offline path so both accept the same values).
func ParseFilter(q map[string][]string) (state.Filter, error) {
	var f state.Filter
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if s := get("state"); s != "" {
		for _, name := range strings.Split(s, ",") {
			st := state.State(strings.TrimSpace(name))
			if !validState(st) {
				return f, fmt.Errorf("unknown state %q (one of %s)", name, stateNames())
			}
			f.States = append(f.States, st)
		}
	}
	f.Folder = get("folder")
	if s := get("since"); s != "" {
		dur, err := time.ParseDuration(s)
		if err != nil {
			return f, fmt.Errorf("since: %w", err)
		}
		f.Since = time.Now().Add(-dur)
	}
	if s := get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, fmt.Errorf("limit: want a number >= 0, got %q", s)
		}
		f.Limit = n
	}
	return f, nil
}

func validState(s state.State) bool {
	for _, v := range state.AllStates() {
		if v == s {
			return true
		}
	}
	return false
}

func stateNames() string {
	var names []string
	for _, v := range state.AllStates() {
		names = append(names, string(v))
	}
	return strings.Join(names, ", ")
}

func (d *Daemon) handleList(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	jobs, err := d.store.List(r.Context(), f)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	out := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, NewJobView(j, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleShow(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("id")
	if ref == "" {
		ref = r.URL.Query().Get("ref")
	}
	j, err := FindJob(r.Context(), d.store, d.Config().Folders, ref)
	if errors.Is(err, state.ErrNotFound) {
		writeErr(w, http.StatusNotFound, err)
		return
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, NewJobView(j, true))
}

// errStatus maps an operation's error to an HTTP status.
func errStatus(err error) int {
	switch {
	case errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

var errBadRequest = errors.New("bad request")

func pathID(r *http.Request) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("job id %q is not a number: %w", r.PathValue("id"), errBadRequest)
	}
	return id, nil
}

func (d *Daemon) handleRetry(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		var j *state.Job
		if j, err = d.Retry(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, NewJobView(j, false))
			return
		}
	}
	writeErr(w, errStatus(err), err)
}

func (d *Daemon) handleRetryFailed(w http.ResponseWriter, r *http.Request) {
	res, err := d.RetryFailed(r.Context())
	if err != nil {
		writeErr(w, errStatus(err), err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (d *Daemon) handleForget(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		if err = d.Forget(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, map[string]uint64{"forgotten": id})
			return
		}
	}
	writeErr(w, errStatus(err), err)
}

// PauseState is the answer of POST /v1/pause and /v1/resume.
type PauseState struct {
	Paused []string `json:"paused"` // "*": all folders
}

func (d *Daemon) handlePause(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := d.SetPaused(r.URL.Query().Get("folder"), on); err != nil {
			writeErr(w, errStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, PauseState{Paused: d.pause.list()})
	}
}

func (d *Daemon) handleReload(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), reloadTimeout)
	defer cancel()
	if err := d.Reload(ctx); err != nil {
		// A refused config is the caller's problem to fix: 400 says so.
		code := http.StatusBadRequest
		if errors.Is(err, errNoReload) {
			code = http.StatusNotImplemented
		}
		writeErr(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"reloaded": d.Config().Path})
}
