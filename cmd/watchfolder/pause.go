package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/watchfolder/watchfolder/daemon"
)

func cmdPause(e *env, args []string) int { return pauseResume(e, "pause", args) }

// pauseResume is pause and resume: the same call with the other verb.
func pauseResume(e *env, name string, args []string) int {
	fs, cfgPath := e.flags(name, "[FOLDER] [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	q := url.Values{}
	if fs.NArg() == 1 {
		if !e.checkFolder(name, cfg, fs.Arg(0)) {
			return exitUsage
		}
		q.Set("folder", fs.Arg(0))
	}
	var st daemon.PauseState
	if err := controlDo(context.Background(), cfg, http.MethodPost, "/v1/"+name, q, &st); err != nil {
		return e.failure(name, cfg, err)
	}
	if *asJSON {
		return e.writeJSON(st)
	}
	switch {
	case len(st.Paused) == 0:
		fmt.Fprintln(e.stdout, "no folder is paused")
	case st.Paused[0] == "*":
		fmt.Fprintln(e.stdout, "all folders are paused")
	default:
		fmt.Fprintf(e.stdout, "paused: %s\n", strings.Join(st.Paused, ", "))
	}
	return exitOK
}
