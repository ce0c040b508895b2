package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

// errNotRunning means no daemon answers on the control socket.
var errNotRunning = errors.New("the daemon is not running")

// apiError is an error answer from the control API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// controlGet calls GET path on the daemon's control API.
func controlGet(ctx context.Context, cfg *config.Config, path string, q url.Values, out any) error {
	return controlDo(ctx, cfg, http.MethodGet, path, q, out)
}

// controlDo calls the daemon's control API over its unix socket. A
// daemon that is starting holds the database before its socket listens:
// when the socket is absent but the database is locked, try for a moment.
func controlDo(ctx context.Context, cfg *config.Config, method, path string, q url.Values, out any) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := controlOnce(ctx, cfg, method, path, q, out)
		if !errors.Is(err, errNotRunning) || time.Now().After(deadline) || !dbLocked(cfg) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dbLocked reports whether another process holds the state database.
func dbLocked(cfg *config.Config) bool {
	st, err := state.Open(filepath.Join(cfg.StateDir, "state.db"), state.Options{ReadOnly: true, Timeout: 50 * time.Millisecond})
	if err == nil {
		st.Close()
	}
	return errors.Is(err, state.ErrLocked)
}

func controlOnce(ctx context.Context, cfg *config.Config, method, path string, q url.Values, out any) error {
	sock := cfg.ControlSocket
	if sock == "" {
		return errNotRunning
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}, Timeout: 2 * time.Minute}
	u := "http://watchfolder" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return errNotRunning
		}
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("control socket %s: permission denied (run as root or as a member of the socket's group)", sock)
		}
		return fmt.Errorf("control socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &apiError{status: resp.StatusCode, msg: e.Error}
	}
	return json.Unmarshal(data, out)
}

// offlineStore is what list and show read when the daemon is not running.
type offlineStore interface {
	daemon.JobReader
	List(ctx context.Context, f state.Filter) ([]*state.Job, error)
	Close() error
}

// openOffline opens the database read-only when the daemon is not running
// (in cluster mode: the shared state in etcd).
func (e *env) openOffline(cfg *config.Config) (offlineStore, error) {
	if cfg.State.Cluster() {
		return e.openEtcdOffline(cfg)
	}
	path := filepath.Join(cfg.StateDir, "state.db")
	st, err := state.Open(path, state.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if errors.Is(err, state.ErrLocked) {
		return nil, fmt.Errorf("%s is locked by a running daemon, but its control socket %s does not answer", path, cfg.ControlSocket)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "(daemon not running: reading %s directly)\n", path)
	return st, nil
}

// failure prints err for command name and returns its exit code: 3 when
// the daemon is not running, 4 for an unknown job, 1 otherwise.
func (e *env) failure(name string, cfg *config.Config, err error) int {
	var ae *apiError
	switch {
	case errors.Is(err, errNotRunning):
		fmt.Fprintf(e.stderr, "watchfolder %s: the daemon is not running (no answer on %s); this command needs it\n", name, cfg.ControlSocket)
		return exitNotRunning
	case errors.Is(err, state.ErrNotFound) || (errors.As(err, &ae) && ae.status == http.StatusNotFound):
		fmt.Fprintf(e.stderr, "watchfolder %s: %v\n", name, err)
		return exitNotFound
	default:
		fmt.Fprintf(e.stderr, "watchfolder %s: %v\n", name, err)
		return exitError
	}
}

// writeJSON prints v indented.
func (e *env) writeJSON(v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return exitError
	}
	return exitOK
}
