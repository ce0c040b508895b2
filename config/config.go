// Package config turns a TOML file into a validated Config. It is the only
// package that knows TOML; everything downstream gets plain Go values.
package config

import (
	"io/fs"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// DefaultPath is used when neither --config nor WATCHFOLDER_CONFIG is given.
const DefaultPath = "/etc/watchfolder/config.toml"

// Config is the whole, validated configuration with defaults applied.
type Config struct {
	Path            string // file it was loaded from
	StateDir        string
	ControlSocket   string
	ShutdownTimeout time.Duration

	Log          Log
	Folders      []Folder
	Retry        Retry
	Upload       Upload
	Metrics      Metrics
	State        StateSettings // [state]: keep_done; backend bbolt (default) or etcd
	Web          Web           // the status page (config/web.go)
	Notify       []Notify
	Destinations map[string]*Destination // by name

	warnings []string    // found while parsing, see Warnings
	mode     fs.FileMode // permissions of Path when loaded from a file; 0 from Parse
}

// Log settings.
type Log struct {
	Level  string // debug|info|warn|error
	Format string // text|json
}

// Folder is one [[folder]] table.
type Folder struct {
	Name           string
	Path           string // absolute, cleaned
	ProcessedDir   string // absolute; default <path>/processed
	FailedDir      string // absolute; default <path>/failed
	Destinations   []string
	StableAfter    time.Duration
	RescanInterval time.Duration
	Include        []string
	Exclude        []string
	Sidecar        string // "optional" (default) | "required" | "ignore"
	SidecarWait    time.Duration
	// Receipts: write <name>.receipt.json beside each processed file.
	Receipts bool
	// Probe is the media check before upload: "require" (default: a known
	// container that fails goes to failed_dir), "warn" (deliver anyway,
	// note the problem), "off", or "ffprobe" (require, plus ffprobe's
	// stream facts when it is installed).
	Probe string
}

// Retry settings.
type Retry struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// Upload settings shared by all destinations.
type Upload struct {
	PartSize           int64
	Concurrency        int
	MaxFiles           int
	MultipartThreshold int64
	MaxBandwidth       int64 // bytes per second; 0: no cap
}

// Metrics settings.
type Metrics struct {
	Listen string // host:port for the Prometheus endpoint; "" disables it
}

// Notify is one [[notify]] webhook, called when a job ends.
type Notify struct {
	URL     string   // http or https
	Events  []string // subset of "done", "failed"
	Secret  Secret   // HMAC key for signing the body; unset: unsigned
	Timeout time.Duration
}

// Destination is one [destination.NAME] table: its type and the settings
// the type's own declaration read (see uploader.DestinationType).
type Destination struct {
	Name     string
	Type     string
	Settings uploader.Settings
}

// Value returns the effective value of one of the destination's keys.
func (d *Destination) Value(key string) (any, bool) {
	if d.Settings == nil {
		return nil, false
	}
	return uploader.Lookup(d.Settings.Fields(), key)
}

// Folder returns the folder called name, or nil.
func (c *Config) Folder(name string) *Folder {
	for i := range c.Folders {
		if c.Folders[i].Name == name {
			return &c.Folders[i]
		}
	}
	return nil
}
