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
	"golang.org/x/sys/unix"

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
	journal := journalStream(e.getenv, e.stderrFile())
	log := newLogger(cfg.Log, e.stderr, journal)
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	notify := func(s string) {
		if _, err := sddaemon.SdNotify(false, s); err != nil {
			log.Warn("sd_notify failed", "state", s, "err", err)
		}
	}
	// WATCHDOG_USEC: ping at half the period, as sd_watchdog_enabled(3) advises.
	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring the systemd watchdog settings", "err", err)
	}
	// Problems an admin must fix fail the start (systemd sees a failed
	// unit), rather than a daemon that reports ready and delivers nothing.
	if err := daemon.Preflight(ctx, cfg, log); err != nil {
		if journal {
			log.Error("not starting", "err", err)
		} else {
			fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		}
		return exitError
	}
	path := e.configPath(*cfgPath)
	d, err := daemon.New(ctx, daemon.Options{
		Config: cfg, Logger: log, Version: version, KeepDone: cfg.State.KeepDone,
		Ready:     func() { notify(sddaemon.SdNotifyReady) },
		Reloading: func() { notify(reloadingState()) },
		Stopping:  func() { notify(sddaemon.SdNotifyStopping) },
		Watchdog:  func() { notify(sddaemon.SdNotifyWatchdog) }, WatchdogInterval: wd / 2,
		LoadConfig: func() (*config.Config, error) { return config.Load(path) },
	})
	if err != nil {
		fmt.Fprintf(e.stderr, "watchfolder: %v\n", err)
		return exitError
	}
	// SIGHUP (systemctl reload) re-reads the config; a bad one is refused
	// and logged by Reload, the old one stays.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.Reload(ctx)
			}
		}
	}()
	err = d.Run(ctx)
	if err != nil {
		log.Error("stopped with an error", "err", err)
		return exitError
	}
	log.Info("stopped")
	return exitOK
}

// newLogger builds the slog logger. Under journald (stderr is the journal
// stream) the journal stamps each line, so ours would be a duplicate: drop
// it; and give each line its priority so -p err/warning select them.
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
	mk := func(w io.Writer) slog.Handler {
		if c.Format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	if journal {
		return slog.New(newJournalHandler(w, mk))
	}
	return slog.New(mk(w))
}

// reloadingState is RELOADING=1 with the MONOTONIC_USEC systemd wants with
// it (sd_notify(3)), so Type=notify-reload units work too.
func reloadingState() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}
