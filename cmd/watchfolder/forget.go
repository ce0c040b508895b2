package main

import (
	"context"
	"fmt"
	"net/http"
)

func cmdForget(e *env, args []string) int {
	fs, cfgPath := e.flags("forget", "ID... [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	ids, ok := jobIDs(e, "forget", fs.Args())
	if !ok {
		return exitUsage
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	type result struct {
		ID    uint64 `json:"id"`
		Error string `json:"error,omitempty"`
	}
	results := []result{}
	code := exitOK
	for _, id := range ids {
		var out map[string]uint64
		err := controlDo(context.Background(), cfg, http.MethodDelete, fmt.Sprintf("/v1/jobs/%d", id), nil, &out)
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
		if !*asJSON {
			fmt.Fprintf(e.stdout, "job %d forgotten\n", id)
		}
	}
	if *asJSON {
		e.writeJSON(results)
	}
	return code
}
