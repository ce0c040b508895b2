package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
)

// dbBackup writes a consistent copy of the state database to FILE. With
// the daemon running, the copy is streamed from it over the control
// socket (GET /v1/db/backup: one read transaction, so writes go on); with
// the daemon stopped, the file is opened read-only and copied the same way. The copy is written beside FILE and renamed into place.
func dbBackup(e *env, args []string) int {
	fs, cfgPath := e.flags("db backup", "FILE [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	dst, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder db backup: %v\n", err)
		return exitUsage
	}
	src := filepath.Join(cfg.StateDir, "state.db")
	online := true
	n, err := writeAtomic(dst, func(w io.Writer) (int64, error) {
		return controlStream(context.Background(), cfg, "/v1/db/backup", w)
	})
	var ae *apiError
	switch {
	case errors.Is(err, errNotRunning):
		online = false
		n, err = writeAtomic(dst, func(w io.Writer) (int64, error) { return copyOffline(src, w) })
	case errors.As(err, &ae) && ae.status == http.StatusNotFound:
		fmt.Fprintf(e.stderr, "watchfolder db backup: the running daemon cannot make an online backup (it predates GET /v1/db/backup); stop it (systemctl stop watchfolder) and run this again\n")
		return exitError
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder db backup: %v\n", err)
		return exitError
	}
	if *asJSON {
		return e.writeJSON(map[string]any{"source": src, "file": dst, "bytes": n, "online": online})
	}
	fmt.Fprintf(e.stdout, "backed up %s to %s (%s)\n", src, dst, humanBytes(n))
	return exitOK
}

// copyOffline copies the database of a stopped daemon.
func copyOffline(src string, w io.Writer) (int64, error) {
	st, err := state.Open(src, state.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if errors.Is(err, state.ErrLocked) {
		return 0, fmt.Errorf("%s is locked by a running daemon whose control socket does not answer", src)
	}
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.Backup(context.Background(), w, nil)
}

// writeAtomic writes dst through a temporary file in its directory,
// synced and renamed, so a failed backup never leaves a torn copy under
// the final name. The copy holds resumable-upload details: mode 0600.
func writeAtomic(dst string, fill func(io.Writer) (int64, error)) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	n, err := fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return 0, err
	}
	return n, nil
}

// controlStream copies the body of GET path on the control socket to w.
func controlStream(ctx context.Context, cfg *config.Config, path string, w io.Writer) (int64, error) {
	sock := cfg.ControlSocket
	if sock == "" {
		return 0, errNotRunning
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://watchfolder"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, errNotRunning
		}
		return 0, fmt.Errorf("control socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return 0, &apiError{status: resp.StatusCode, msg: e.Error}
	}
	return io.Copy(w, resp.Body)
}
