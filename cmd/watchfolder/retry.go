package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/watchfolder/watchfolder/daemon"
)

func cmdRetry(e *env, args []string) int {
	fs, cfgPath := e.flags("retry", "ID... | --failed [--json]")
	all := fs.Bool("failed", false, "retry every failed job")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if (*all && fs.NArg() > 0) || (!*all && fs.NArg() == 0) {
		fmt.Fprintln(e.stderr, "watchfolder retry: give job ids or --failed (not both)")
		fs.Usage()
		return exitUsage
	}
	ids, ok := jobIDs(e, "retry", fs.Args())
	if !ok {
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	ctx := context.Background()
	var results []daemon.RetryResult
	code := exitOK
	if *all {
		if err := controlDo(ctx, cfg, http.MethodPost, "/v1/retry-failed", nil, &results); err != nil {
			return e.failure("retry", cfg, err)
		}
		for _, r := range results {
			if r.Error != "" {
				code = exitError
			}
		}
	} else {
		for _, id := range ids {
			var v daemon.JobView
			err := controlDo(ctx, cfg, http.MethodPost, fmt.Sprintf("/v1/jobs/%d/retry", id), nil, &v)
			if err != nil {
				c := e.failure("retry", cfg, err)
				if c == exitNotRunning {
					return c
				}
				code = worse(code, c)
				results = append(results, daemon.RetryResult{ID: id, Error: err.Error()})
				continue
			}
			results = append(results, daemon.RetryResult{ID: id, Path: v.Path})
		}
	}
	if *asJSON {
		if results == nil {
			results = []daemon.RetryResult{}
		}
		e.writeJSON(results)
		return code
	}
	if len(results) == 0 {
		fmt.Fprintln(e.stdout, "no failed jobs")
	}
	for _, r := range results {
		if r.Error == "" {
			fmt.Fprintf(e.stdout, "job %d queued again: %s\n", r.ID, r.Path)
		} else if *all {
			fmt.Fprintf(e.stdout, "job %d not retried: %s\n", r.ID, r.Error)
		}
	}
	return code
}

// worse keeps the more telling of two exit codes: "no such job" over a
// plain failure, so a script can tell a typo from a refusal.
func worse(a, b int) int {
	if a == exitNotFound || b == exitNotFound {
		return exitNotFound
	}
	return max(a, b)
}
