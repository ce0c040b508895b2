package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

func cmdShow(e *env, args []string) int {
	fs, cfgPath := e.flags("show", "ID|PATH [--json]")
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
	ctx := context.Background()
	ref := resolveRef(cfg, fs.Arg(0))
	var v daemon.JobView
	err := controlGet(ctx, cfg, "/v1/job", url.Values{"ref": {ref}}, &v)
	if errors.Is(err, errNotRunning) {
		st, oerr := e.openOffline(cfg)
		if oerr != nil {
			fmt.Fprintf(e.stderr, "watchfolder show: %v\n", oerr)
			return exitError
		}
		defer st.Close()
		j, ferr := daemon.FindJob(ctx, st, cfg.Folders, ref)
		if ferr == nil {
			v = daemon.NewJobView(j, true)
		}
		err = ferr
	}
	var ae *apiError
	if errors.Is(err, state.ErrNotFound) || (errors.As(err, &ae) && ae.status == http.StatusNotFound) {
		fmt.Fprintf(e.stderr, "watchfolder show: %v\n", err)
		return exitNotFound
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder show: %v\n", err)
		return exitError
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return exitOK
	}
	w := e.stdout
	fmt.Fprintf(w, "Job %d  %s\n", v.ID, v.State)
	fmt.Fprintf(w, "  folder:    %s\n  file:      %s\n  path:      %s\n  size:      %s (%d bytes)\n", v.Folder, v.RelPath, v.Path, humanBytes(v.Size), v.Size)
	if v.FinalPath != "" {
		fmt.Fprintf(w, "  moved to:  %s\n", v.FinalPath)
	}
	if v.SHA256 != "" {
		fmt.Fprintf(w, "  sha256:    %s\n", v.SHA256)
	}
	if v.Sidecar != "" {
		fmt.Fprintf(w, "  sidecar:   %s\n", v.Sidecar)
	}
	if v.Media != nil {
		fmt.Fprintf(w, "  media:     %s\n", v.Media.Summary())
		if v.Media.Problem != "" {
			fmt.Fprintf(w, "  media problem: %s\n", v.Media.Problem)
		}
	}
	fmt.Fprintf(w, "  attempts:  %d\n", v.Attempts)
	if v.NextAttempt != nil {
		fmt.Fprintf(w, "  next try:  %s\n", v.NextAttempt.Local().Format(time.RFC3339))
	}
	if v.Error != "" {
		fmt.Fprintf(w, "  error:     %s\n", v.Error)
	}
	fmt.Fprintf(w, "\nDestinations:\n")
	for _, d := range v.Destinations {
		fmt.Fprintf(w, "  %s (%s): %s\n", d.Name, d.Type, d.State)
		if d.VendorID != "" {
			fmt.Fprintf(w, "    id:      %s\n", d.VendorID)
		}
		if d.Object != "" {
			fmt.Fprintf(w, "    object:  %s\n", d.Object)
		}
		fmt.Fprintf(w, "    bytes:   %s of %s\n", humanBytes(d.BytesDone), humanBytes(v.Size))
		if d.Error != "" {
			fmt.Fprintf(w, "    error:   %s\n", d.Error)
		}
	}
	fmt.Fprintf(w, "\nHistory:\n")
	for _, h := range v.History {
		line := fmt.Sprintf("  %s  %-11s -> %-11s", h.At.Local().Format("2006-01-02 15:04:05"), orDash(string(h.From)), h.To)
		if h.Dest != "" {
			line += " [" + h.Dest + "]"
		}
		if h.Note != "" {
			line += " " + h.Note
		}
		if h.Error != "" {
			line += " error: " + oneLine(h.Error)
		}
		fmt.Fprintln(w, line)
	}
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
