package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

func cmdStatus(e *env, args []string) int {
	fs, cfgPath := e.flags("status", "[--json] [--watch [--interval 1s]]")
	asJSON := fs.Bool("json", false, "print JSON")
	watch := fs.Bool("watch", false, "refresh until interrupted (Ctrl-C)")
	interval := fs.Duration("interval", time.Second, "refresh interval for --watch")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *interval < 100*time.Millisecond {
		fmt.Fprintln(e.stderr, "watchfolder status: --interval must be at least 100ms")
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	if !*watch {
		var buf bytes.Buffer
		code := e.statusOnce(context.Background(), cfg, &buf, *asJSON)
		e.stdout.Write(buf.Bytes())
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tty := isTerminal(e.stdout)
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		// Render into a buffer first so the screen is cleared and redrawn
		// in one write, without flicker.
		var buf bytes.Buffer
		if tty {
			buf.WriteString("\x1b[H\x1b[2J")
		}
		e.statusOnce(ctx, cfg, &buf, *asJSON)
		if tty {
			fmt.Fprintf(&buf, "\nevery %s, Ctrl-C to stop\n", *interval)
		} else if !*asJSON {
			buf.WriteString("\n")
		}
		e.stdout.Write(buf.Bytes())
		select {
		case <-ctx.Done():
			return exitOK
		case <-t.C:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (e *env) statusOnce(ctx context.Context, cfg *config.Config, w io.Writer, asJSON bool) int {
	var st daemon.Status
	err := controlGet(ctx, cfg, "/v1/status", nil, &st)
	if errors.Is(err, errNotRunning) {
		fmt.Fprintf(e.stderr, "watchfolder status: %v (no answer on %s)\n", err, cfg.ControlSocket)
		return exitNotRunning
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder status: %v\n", err)
		return exitError
	}
	if asJSON {
		out := *e
		out.stdout = w
		return out.writeJSON(st)
	}
	renderStatus(w, &st)
	return exitOK
}

func renderStatus(w io.Writer, st *daemon.Status) {
	fmt.Fprintf(w, "watchfolder %s, up %s, %d queued for a worker\n", st.Version, st.Uptime, st.QueueDepth)
	if len(st.Paused) > 0 {
		if st.Paused[0] == "*" {
			fmt.Fprintf(w, "PAUSED: all folders (watchfolder resume)\n")
		} else {
			fmt.Fprintf(w, "PAUSED: %s\n", strings.Join(st.Paused, ", "))
		}
	}
	if c := st.Cluster; c != nil {
		renderCluster(w, c)
	}
	fmt.Fprintln(w)
	folders := make([]string, 0, len(st.Counts))
	for f := range st.Counts {
		folders = append(folders, f)
	}
	sort.Strings(folders)
	for _, f := range folders {
		fmt.Fprintf(w, "%s:", f)
		any := false
		for _, s := range state.AllStates() { // pipeline order reads best
			if n := st.Counts[f][s]; n > 0 {
				fmt.Fprintf(w, " %s %d", s, n)
				any = true
			}
		}
		if !any {
			fmt.Fprint(w, " no jobs")
		}
		fmt.Fprintln(w)
	}
	if len(st.InFlight) > 0 {
		fmt.Fprintf(w, "\nIn flight:\n")
		for _, f := range st.InFlight {
			frac := 0.0
			if f.Size > 0 {
				frac = float64(f.BytesDone) / float64(f.Size)
			}
			rate, left := "-", "-"
			if f.Rate > 0 {
				rate = humanBytes(int64(f.Rate)) + "/s"
			}
			if f.ETASeconds > 0 {
				left = (time.Duration(f.ETASeconds) * time.Second).String()
			}
			fmt.Fprintf(w, "  %d %s/%s -> %s (%s)\n      %s %3.0f%%  %s / %s  %s  eta %s\n", f.ID, f.Folder, f.RelPath,
				f.Destination, f.State, bar(frac, 24), 100*frac, humanBytes(f.BytesDone), humanBytes(f.Size), rate, left)
		}
	}
	if len(st.Failures) > 0 {
		fmt.Fprintf(w, "\nRecent failures:\n")
		for _, j := range st.Failures {
			fmt.Fprintf(w, "  %d %s/%s: %s\n", j.ID, j.Folder, j.RelPath, oneLine(j.Error))
		}
	}
}

// bar draws frac (0..1) as a fixed-width progress bar.
func bar(frac float64, width int) string {
	n := int(frac*float64(width) + 0.5)
	n = min(max(n, 0), width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
