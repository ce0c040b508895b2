package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/watchfolder/watchfolder/daemon"
)

func cmdStatus(e *env, args []string) int {
	fs, cfgPath := e.flags("status", "[--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	var st daemon.Status
	err := controlGet(context.Background(), cfg, "/v1/status", nil, &st)
	if errors.Is(err, errNotRunning) {
		fmt.Fprintf(e.stderr, "watchfolder status: %v (no answer on %s)\n", err, cfg.ControlSocket)
		return exitNotRunning
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder status: %v\n", err)
		return exitError
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	w := e.stdout
	fmt.Fprintf(w, "watchfolder %s, up %s, %d queued for a worker\n\n", st.Version, st.Uptime, st.QueueDepth)
	folders := make([]string, 0, len(st.Counts))
	for f := range st.Counts {
		folders = append(folders, f)
	}
	sort.Strings(folders)
	for _, f := range folders {
		fmt.Fprintf(w, "%s:", f)
		states := make([]string, 0)
		for s, n := range st.Counts[f] {
			if n > 0 {
				states = append(states, fmt.Sprintf(" %s %d", s, n))
			}
		}
		sort.Strings(states)
		for _, s := range states {
			fmt.Fprint(w, s)
		}
		fmt.Fprintln(w)
	}
	if len(st.InFlight) > 0 {
		fmt.Fprintf(w, "\nIn flight:\n")
		for _, f := range st.InFlight {
			pct := 0.0
			if f.Size > 0 {
				pct = 100 * float64(f.BytesDone) / float64(f.Size)
			}
			fmt.Fprintf(w, "  %d %s -> %s  %s / %s (%.0f%%)\n", f.ID, f.Path, f.Destination, humanBytes(f.BytesDone), humanBytes(f.Size), pct)
		}
	}
	if len(st.Failures) > 0 {
		fmt.Fprintf(w, "\nRecent failures:\n")
		for _, j := range st.Failures {
			fmt.Fprintf(w, "  %d %s: %s\n", j.ID, j.RelPath, oneLine(j.Error))
		}
	}
	return exitOK
}
