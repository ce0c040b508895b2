package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
)

func cmdForget(e *env, args []string) int {
	fs, cfgPath := e.flags("forget", "ID... | --state S[,S] [--older-than AGE] [--folder F] [--dry-run] [--json]")
	states := fs.String("state", "", "forget every job in these finished states (done, failed, gone; comma-separated)")
	olderThan := fs.String("older-than", "", "with --state: only jobs last updated longer ago than AGE (e.g. 30d, 12h)")
	folder := fs.String("folder", "", "with --state: only jobs of this folder")
	dryRun := fs.Bool("dry-run", false, "with --state: list what would be forgotten, forget nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	bulk := *states != ""
	if bulk == (fs.NArg() > 0) || (!bulk && (*olderThan != "" || *folder != "" || *dryRun)) {
		fmt.Fprintln(e.stderr, "watchfolder forget: give job ids, or --state (with --older-than, --folder, --dry-run)")
		fs.Usage()
		return exitUsage
	}
	ids, ok := jobIDs(e, "forget", fs.Args())
	if !ok {
		return exitUsage
	}
	var age time.Duration
	if *olderThan != "" {
		d, err := parseAge(*olderThan)
		if err != nil {
			fmt.Fprintf(e.stderr, "watchfolder forget: --older-than: %v\n", err)
			return exitUsage
		}
		age = d
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	if !e.checkFolder("forget", cfg, *folder) {
		return exitUsage
	}
	ctx := context.Background()
	if bulk {
		q := url.Values{"state": {*states}}
		f, err := daemon.ParseFilter(q)
		if err != nil {
			fmt.Fprintf(e.stderr, "watchfolder forget: %v\n", err)
			return exitUsage
		}
		for _, s := range f.States {
			if !s.Terminal() {
				fmt.Fprintf(e.stderr, "watchfolder forget: %s jobs are not finished; only done, failed and gone jobs can be forgotten\n", s)
				return exitUsage
			}
		}
		if *folder == "" && !*dryRun && age > 0 {
			// The daemon prunes in one transaction.
			var res daemon.PruneResult
			pq := url.Values{"older_than": {age.String()}, "state": {*states}}
			if err := controlDo(ctx, cfg, http.MethodPost, "/v1/db/prune", pq, &res); err != nil {
				return e.failure("forget", cfg, err)
			}
			if *asJSON {
				return e.writeJSON(res)
			}
			fmt.Fprintf(e.stdout, "%d jobs forgotten\n", res.Pruned)
			return exitOK
		}
		if *folder != "" {
			q.Set("folder", *folder)
		}
		var jobs []daemon.JobView
		if err := controlGet(ctx, cfg, "/v1/jobs", q, &jobs); err != nil {
			return e.failure("forget", cfg, err)
		}
		cutoff := time.Now().Add(-age)
		for _, j := range jobs {
			if age == 0 || j.Updated.Before(cutoff) {
				ids = append(ids, j.ID)
			}
		}
		if *dryRun {
			if *asJSON {
				return e.writeJSON(map[string]any{"would_forget": ids})
			}
			fmt.Fprintf(e.stdout, "would forget %d jobs: %v\n", len(ids), ids)
			return exitOK
		}
	}
	type result struct {
		ID    uint64 `json:"id"`
		Error string `json:"error,omitempty"`
	}
	results := []result{}
	code := exitOK
	for _, id := range ids {
		var out map[string]uint64
		err := controlDo(ctx, cfg, http.MethodDelete, fmt.Sprintf("/v1/jobs/%d", id), nil, &out)
		if err != nil {
			c := e.failure("forget", cfg, err)
			if c == exitNotRunning {
				return c
			}
			code = worse(code, c)
			results = append(results, result{id, err.Error()})
			continue
		}
		results = append(results, result{ID: id})
		if !*asJSON && !bulk {
			fmt.Fprintf(e.stdout, "job %d forgotten\n", id)
		}
	}
	if *asJSON {
		e.writeJSON(results)
	} else if bulk {
		fmt.Fprintf(e.stdout, "%d jobs forgotten\n", len(results))
	}
	return code
}
