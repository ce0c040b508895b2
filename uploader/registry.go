package uploader

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/watchfolder/watchfolder/config/table"
)

// DestinationType declares one kind of destination: its name in the
// configuration (type = "..."), how its [destination.NAME] table is read,
// and, through the Settings that returns, how it is shown and built. Each
// destination package declares its own; the list of all of them is
// uploader/all, one line per type.
type DestinationType struct {
	Name string
	// Decode reads the destination's table ("type" is read already).
	// Every problem is recorded in t, naming its key; the result is used
	// only when there were none. Keys Decode does not read are reported
	// as unknown by the caller.
	Decode func(t *table.Table) Settings
	// SidecarKey: a sidecar may give this type's extras under a top-level
	// key of its name ({"skylark": {...}}) as well as under "platform".
	SidecarKey bool
}

// Settings are one destination's validated configuration.
type Settings interface {
	// Fields lists the effective keys in declaration order, for `check`
	// and for tests. Secrets are declared as such and shown redacted.
	Fields() []Field
	// Build makes the destination. It may contact the store (to find a
	// bucket's region); it never uploads.
	Build(ctx context.Context, env BuildEnv) (Destination, error)
}

// Field is one effective configuration key. Value is a string, bool,
// int64, time.Duration, []string, map[string]string or table.Secret.
// Secret marks a value that is only ever shown redacted.
type Field struct {
	Key    string
	Value  any
	Secret bool
}

// BuildEnv is what every destination gets from the daemon.
type BuildEnv struct {
	Name     string   // the destination's name in the config
	Transfer Transfer // [upload] settings and the shared bandwidth limiter
	// APIClient is for platform API calls (small JSON requests, bounded).
	APIClient *http.Client
	Logger    *slog.Logger // already carries the destination's name
}

// Lookup returns the value of key among fields.
func Lookup(fields []Field, key string) (any, bool) {
	for _, f := range fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// Transfer holds the [upload] settings every destination shares.
type Transfer struct {
	PartSize           int64 // multipart part size
	Concurrency        int   // parts in flight per file
	MultipartThreshold int64 // single PUT below this size (S3 engine)
	MaxFiles           int   // files in flight, all folders together
	Limiter            *Limiter
}

// LimiterChunk bounds one Read through a limited reader (see Limiter); the
// S3 engine cuts its part bodies the same way.
const LimiterChunk = limiterChunk
