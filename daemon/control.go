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
	"sync/atomic"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version    string                         `json:"version"`
	Started    time.Time                      `json:"started"`
	Uptime     string                         `json:"uptime"`
	Counts     map[string]map[state.State]int `json:"counts"`
	QueueDepth int                            `json:"queue_depth"`
	InFlight   []InFlight                     `json:"in_flight"`
	Failures   []JobView                      `json:"recent_failures"`
}

// InFlight is one destination transfer under way.
type InFlight struct {
	ID          uint64 `json:"id"`
	Path        string `json:"path"`
	Destination string `json:"destination"`
	Size        int64  `json:"size"`
	BytesDone   int64  `json:"bytes_done"`
}

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
	path := d.cfg.ControlSocket
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("GET /v1/jobs", d.handleList)
	mux.HandleFunc("GET /v1/jobs/{id}", d.handleShow)
	mux.HandleFunc("GET /v1/job", d.handleShow) // ?ref=ID|PATH
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &controlServer{srv: srv, ln: ln}, nil
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
	st := &Status{Version: d.version, Started: d.started,
		Uptime: time.Since(d.started).Round(time.Second).String(), Counts: counts,
		QueueDepth: d.sched.depth(), InFlight: []InFlight{}, Failures: []JobView{}}
	active, err := d.store.List(ctx, state.Filter{States: []state.State{state.Uploading, state.Registering}})
	if err != nil {
		return nil, err
	}
	for _, j := range active {
		for _, ds := range j.Destinations {
			if ds.State != state.DestUploading && ds.State != state.DestRegistering {
				continue
			}
			done := ds.BytesDone
			if v, ok := d.progress.Load(progressKey{j.ID, ds.Name}); ok {
				done = max(done, v.(*atomic.Int64).Load())
			}
			st.InFlight = append(st.InFlight, InFlight{ID: j.ID, Path: j.Path, Destination: ds.Name, Size: j.Size, BytesDone: done})
		}
	}
	sort.Slice(st.InFlight, func(a, b int) bool { return st.InFlight[a].ID < st.InFlight[b].ID })
	failed, err := d.store.List(ctx, state.Filter{States: []state.State{state.Failed}, Limit: 5})
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
	j, err := FindJob(r.Context(), d.store, d.cfg.Folders, ref)
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
