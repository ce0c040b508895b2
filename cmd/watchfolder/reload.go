package main

import (
	"context"
	"fmt"
	"net/http"
)

func cmdReload(e *env, args []string) int {
	fs, cfgPath := e.flags("reload", "[--config FILE]")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg := e.loadClientConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	var out map[string]string
	if err := controlDo(context.Background(), cfg, http.MethodPost, "/v1/reload", nil, &out); err != nil {
		return e.failure("reload", cfg, err)
	}
	fmt.Fprintf(e.stdout, "reloaded %s\n", out["reloaded"])
	return exitOK
}
