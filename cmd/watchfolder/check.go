package main

import "fmt"

func cmdCheck(e *env, args []string) int {
	fs, cfgPath := e.flags("check", "[--config FILE]")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg := e.loadConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	if err := cfg.WriteEffective(e.stdout); err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return exitError
	}
	fmt.Fprintf(e.stderr, "config %s is valid\n", cfg.Path)
	return exitOK
}
