package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/watchfolder/watchfolder/state"
)

const dbUsage = "usage: watchfolder db check|backup [--config FILE] [--json]\n\n" +
	"db check         verify the state database (daemon stopped); exit 1 on any problem\n" +
	"db backup FILE   write a consistent copy of the database to FILE (daemon running or not)"

func cmdDB(e *env, args []string) int {
	if len(args) > 0 && args[0] == "backup" {
		return dbBackup(e, args[1:])
	}
	if len(args) == 0 || (args[0] != "check" && args[0] != "-h" && args[0] != "--help") {
		fmt.Fprintln(e.stderr, dbUsage)
		return exitUsage
	}
	if args[0] != "check" {
		fmt.Fprintln(e.stdout, dbUsage)
		return exitOK
	}
	fs, cfgPath := e.flags("db check", "[--config FILE] [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args[1:]); !ok {
		return code
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	path := filepath.Join(cfg.StateDir, "state.db")
	st, err := state.Open(path, state.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	switch {
	case errors.Is(err, state.ErrLocked):
		fmt.Fprintf(e.stderr, "watchfolder db check: %s is in use by the running daemon; stop it first (systemctl stop watchfolder)\n", path)
		return exitError
	case errors.Is(err, state.ErrCorrupt):
		fmt.Fprintf(e.stderr, "watchfolder db check: %s is damaged and cannot be opened: %v\n"+
			"Move it aside and restore a backup; files still in the watched folders are picked up again as new jobs.\n", path, err)
		return exitError
	case err != nil:
		fmt.Fprintf(e.stderr, "watchfolder db check: %v\n", err)
		return exitError
	}
	defer st.Close()
	ctx := context.Background()
	problems, err := st.Check(ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder db check: %v\n", err)
		return exitError
	}
	stats, _ := st.Stats(ctx)
	if problems == nil {
		problems = []string{}
	}
	if *asJSON {
		e.writeJSON(map[string]any{"path": path, "jobs": stats.Jobs, "file_size": stats.FileSize, "problems": problems})
	} else {
		for _, p := range problems {
			fmt.Fprintf(e.stdout, "problem: %s\n", p)
		}
		fmt.Fprintf(e.stdout, "%s: %d jobs, %s on disk, %d problems\n", path, stats.Jobs, humanBytes(stats.FileSize), len(problems))
	}
	if len(problems) > 0 {
		return exitError
	}
	return exitOK
}
