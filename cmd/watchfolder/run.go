package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
)

func cmdRun(e *env, args []string) int {
	fs, cfgPath := e.flags("run", "[--config FILE]")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg := e.loadConfig(*cfgPath)
	if cfg == nil {
		return exitUsage
	}
	log := newLogger(cfg.Log, e.stderr, e.getenv("JOURNAL_STREAM") != "")
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(ctx, daemon.Options{
		Config: cfg, Logger: log, Version: version,
		Ready: func() { sddaemon.SdNotify(false, sddaemon.SdNotifyReady) },
	})
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return exitError
	}
	err = d.Run(ctx)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	if err != nil {
		log.Error("stopped with an error", "err", err)
		return exitError
	}
	log.Info("stopped")
	return exitOK
}

// newLogger builds the slog logger. Under journald (JOURNAL_STREAM set) the
// journal stamps each line, so ours would be a duplicate: drop it.
func newLogger(c config.Log, w io.Writer, journal bool) *slog.Logger {
	var lvl slog.Level
	switch strings.ToLower(c.Level) {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if journal {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
