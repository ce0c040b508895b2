// Package config turns a TOML file into a validated Config. It is the only
// package that knows TOML; everything downstream gets plain Go values.
package config

import (
	"io/fs"
	"time"
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

// Secret is a configured secret: a literal, "${ENV}" or "file:/path". Its
// String and GoString never reveal the value.
type Secret struct {
	value  string
	source string // "literal", "env:NAME", "file:/path", or "" when unset
}

// NewSecret returns a literal secret (for tests and programmatic configs).
func NewSecret(v string) Secret { return Secret{value: v, source: "literal"} }

// Value returns the secret itself. Only pass it to the code that uses it.
func (s Secret) Value() string { return s.value }

// IsSet reports whether a value was configured.
func (s Secret) IsSet() bool { return s.source != "" }

// String redacts.
func (s Secret) String() string {
	if !s.IsSet() {
		return ""
	}
	return "[redacted " + s.source + "]"
}

// GoString redacts too, so %#v cannot leak it.
func (s Secret) GoString() string { return s.String() }

// S3 holds the keys every S3-writing destination type shares.
type S3 struct {
	Bucket             string
	Key                string // key template
	Region             string
	Endpoint           string
	PathStyle          bool
	AccessKeyID        string
	SecretAccessKey    Secret
	SessionToken       Secret
	Profile            string
	ACL                string
	ContentType        string
	ContentDisposition string
	CacheControl       string
	StorageClass       string
	Metadata           map[string]string
	SSE                string
	SSEKMSKeyID        string
	Checksum           string // crc32c | md5 | none
}

// Destination is one [destination.NAME] table. Type selects which of the
// platform fields apply; validation rejects keys that do not belong to Type.
type Destination struct {
	Name string
	Type string // s3 | bluebillywig | jwplayer | wistia | skylark
	S3   S3

	APIURL          string
	UploadURL       string
	WaitFor         string // "", "ready", "processed" (per type)
	RegisterTimeout time.Duration
	PollInterval    time.Duration

	// bluebillywig
	Publication string
	Account     string
	APIKeyID    string
	// jwplayer
	SiteID string
	API    string // v2 (default) | v1
	APIKey string // v1
	// shared secret: BB shared secret, JW v2 secret / v1 secret
	APISecret Secret
	// wistia / skylark
	Token       Secret
	ProjectID   string
	ContactID   string
	Description string
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
