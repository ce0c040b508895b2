package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/watchfolder/watchfolder/daemon"
)

func cmdList(e *env, args []string) int {
	fs, cfgPath := e.flags("list", "[--state S[,S]] [--folder F] [--since DUR] [--limit N] [--json]")
	stateF := fs.String("state", "", "only jobs in these states (comma-separated)")
	folder := fs.String("folder", "", "only jobs of this folder")
	since := fs.String("since", "", "only jobs updated within this duration (e.g. 90m, 24h, 7d)")
	limit := fs.Int("limit", 0, "at most N jobs, newest first (0: all)")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "watchfolder list: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	if !e.checkFolder("list", cfg, *folder) {
		return exitUsage
	}
	if *since != "" {
		d, err := parseAge(*since)
		if err != nil {
			fmt.Fprintf(e.stderr, "watchfolder list: --since: %v\n", err)
			return exitUsage
		}
		*since = d.String()
	}
	q := url.Values{}
	for k, v := range map[string]string{"state": *stateF, "folder": *folder, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	filter, err := daemon.ParseFilter(q)
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder list: %v\n", err)
		return exitUsage
	}
	ctx := context.Background()
	var jobs []daemon.JobView
	err = controlGet(ctx, cfg, "/v1/jobs", q, &jobs)
	if errors.Is(err, errNotRunning) {
		st, oerr := e.openOffline(cfg)
		if oerr != nil {
			fmt.Fprintf(e.stderr, "watchfolder list: %v\n", oerr)
			return exitError
		}
		defer st.Close()
		list, lerr := st.List(ctx, filter)
		if lerr != nil {
			fmt.Fprintf(e.stderr, "watchfolder list: %v\n", lerr)
			return exitError
		}
		for _, j := range list {
			jobs = append(jobs, daemon.NewJobView(j, false))
		}
		err = nil
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder list: %v\n", err)
		return exitError
	}
	if *asJSON {
		if jobs == nil {
			jobs = []daemon.JobView{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(jobs); err != nil {
			return exitError
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tFOLDER\tFILE\tSIZE\tDESTINATIONS\tERROR")
	for _, j := range jobs {
		dests := ""
		for i, d := range j.Destinations {
			if i > 0 {
				dests += " "
			}
			dests += d.Name + ":" + string(d.State)
		}
		errText := oneLine(j.Error)
		if len(errText) > 80 {
			errText = errText[:77] + "..."
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, j.Folder, j.RelPath, humanBytes(j.Size), dests, errText)
	}
	tw.Flush()
	return exitOK
}
