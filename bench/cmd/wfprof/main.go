// Command wfprof is the watchfolder daemon with a CPU profile, for finding
// where a benchmark scenario's time goes. It takes the same arguments as
// `watchfolder run` so bench/cmd/wfrun can start it with -bin:
//
//	WFPROF_CPU=cpu.pprof wfprof run --config FILE
//	go tool pprof -top wfprof cpu.pprof
//
// The profile is written when the daemon stops (SIGTERM or Ctrl-C).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wfprof:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 4 || os.Args[1] != "run" || os.Args[2] != "--config" {
		return errors.New("usage: WFPROF_CPU=FILE wfprof run --config FILE")
	}
	cfg, err := config.Load(os.Args[3])
	if err != nil {
		return err
	}
	if p := os.Getenv("WFPROF_CPU"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(ctx, daemon.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Version: "wfprof",
		LoadConfig: func() (*config.Config, error) { return config.Load(os.Args[3]) }})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
