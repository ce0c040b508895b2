package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// journalStream reports whether stderr is the journal stream systemd
// connected (JOURNAL_STREAM is "DEVICE:INODE" of that stream; a process
// that inherited the variable but writes elsewhere must not use the
// journal's conventions).
func journalStream(getenv func(string) string, f *os.File) bool {
	v := getenv("JOURNAL_STREAM")
	if v == "" || f == nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return v == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// syslog priorities (sd-daemon(3)).
const (
	prioErr     = 3
	prioWarning = 4
	prioInfo    = 6
	prioDebug   = 7
)

func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return prioErr
	case l >= slog.LevelWarn:
		return prioWarning
	case l >= slog.LevelInfo:
		return prioInfo
	default:
		return prioDebug
	}
}

// journalHandler prefixes each line with its syslog priority ("<3>"),
// which journald reads from a stream so that `journalctl -p err` finds the
// errors. Every handler derived by WithAttrs/WithGroup shares one writer
// and one lock: the prefix and the line are written together.
type journalHandler struct {
	inner slog.Handler
	out   *prefixWriter
}

type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append(append([]byte(nil), p.prefix...), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// newJournalHandler builds the handler; mk makes the formatting handler
// over the writer it is given.
func newJournalHandler(w io.Writer, mk func(io.Writer) slog.Handler) slog.Handler {
	pw := &prefixWriter{w: w}
	return &journalHandler{inner: mk(pw), out: pw}
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prefix = fmt.Appendf(h.out.prefix[:0], "<%d>", priority(r.Level))
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}
