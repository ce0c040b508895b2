package daemon

import (
	"context"
	"log/slog"
	"slices"
)

// dedupeAttrs wraps h so that a key already carried by the logger (added
// with With) is not written again: the daemon, the destination wrapper and
// a platform each add "destination" to the loggers they hand down, and a
// line should name it once. The first value given wins; record attributes
// whose key the logger already has are dropped. Keys inside groups are
// compared within their group only.
func dedupeAttrs(h slog.Handler) slog.Handler {
	if _, ok := h.(*dedupeHandler); ok {
		return h
	}
	return &dedupeHandler{h: h}
}

type dedupeHandler struct {
	h    slog.Handler
	keys []string // keys added with WithAttrs at the current group level
}

func (d *dedupeHandler) Enabled(ctx context.Context, l slog.Level) bool { return d.h.Enabled(ctx, l) }

func (d *dedupeHandler) Handle(ctx context.Context, r slog.Record) error {
	if len(d.keys) == 0 {
		return d.h.Handle(ctx, r)
	}
	dup := false
	r.Attrs(func(a slog.Attr) bool {
		dup = slices.Contains(d.keys, a.Key)
		return !dup
	})
	if !dup {
		return d.h.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	seen := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		if !slices.Contains(d.keys, a.Key) && !seen[a.Key] {
			seen[a.Key] = true
			nr.AddAttrs(a)
		}
		return true
	})
	return d.h.Handle(ctx, nr)
}

func (d *dedupeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var keep []slog.Attr
	keys := slices.Clone(d.keys)
	for _, a := range as {
		if slices.Contains(keys, a.Key) {
			continue
		}
		keys = append(keys, a.Key)
		keep = append(keep, a)
	}
	if len(keep) == 0 {
		return d
	}
	return &dedupeHandler{h: d.h.WithAttrs(keep), keys: keys}
}

func (d *dedupeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return d
	}
	return &dedupeHandler{h: d.h.WithGroup(name)}
}
