package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/bmatcuk/doublestar/v4"

	"github.com/watchfolder/watchfolder/config/table"
)

// Defaults that more than one place refers to.
const (
	DefaultStateDir      = "/var/lib/watchfolder"
	DefaultControlSocket = "/run/watchfolder/control.sock"
	DefaultKeyTemplate   = "{folder}/{relpath}"
	DefaultRegion        = "us-east-1"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Load reads and validates the file at path. All problems are reported at
// once (an *Error wrapping one *KeyError per problem), each naming its key,
// e.g. `destination.archive.bucket: required`.
func Load(path string) (*Config, error) { return load(path, false) }

// LoadClient loads the config for commands that only talk to the daemon or
// read its state (list, show, status): secrets are validated for shape but
// not resolved, so their environment variables and files need not be
// available to the operator running the command.
func LoadClient(path string) (*Config, error) { return load(path, true) }

func load(path string, skipSecrets bool) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("config %s: is a directory", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := parse(data, path, skipSecrets)
	if err != nil {
		return nil, err
	}
	c.mode = fi.Mode().Perm()
	return c, nil
}

// Parse validates a configuration held in memory; name is used in messages
// and as Config.Path. Secrets are resolved (environment, files) as in Load.
func Parse(data []byte, name string) (*Config, error) { return parse(data, name, false) }

func parse(data []byte, name string, skipSecrets bool) (*Config, error) {
	if err := checkShape(data); err != nil {
		return nil, &Error{File: name, Problems: []error{err}}
	}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Problems: []error{&SyntaxError{Line: pe.Position.Line, Col: pe.Position.Col, Msg: pe.Message}}}
		}
		return nil, &Error{File: name, Problems: []error{err}}
	}
	p := &table.Problems{SkipSecrets: skipSecrets}
	c := build(table.New("", doc, p))
	p.Warns = append(p.Warns, unusedDestinations(c)...)
	c.Path = name
	if len(p.Errs) > 0 {
		return nil, &Error{File: name, Problems: p.Errs}
	}
	c.warnings = p.Warns
	return c, nil
}

// build walks the document, applying defaults and collecting problems in
// the table's problems.
func build(top *table.Table) *Config {
	c := &Config{
		StateDir:        absPath(top, "state_dir", DefaultStateDir),
		ControlSocket:   absPath(top, "control_socket", DefaultControlSocket),
		ShutdownTimeout: top.Duration("shutdown_timeout", 30*time.Second, 0),
	}

	lg := top.Sub("log")
	c.Log = Log{
		Level:  lg.OneOf("level", "info", "debug", "info", "warn", "error"),
		Format: lg.OneOf("format", "text", "text", "json"),
	}
	lg.Unknown(nil)

	c.Retry = buildRetry(top.Sub("retry"))
	c.Upload = buildUpload(top.Sub("upload"))
	c.State = buildState(top.Sub("state"))

	m := top.Sub("metrics")
	if l, ok := m.Str("listen"); ok && l != "" {
		if err := checkListen(l); err != nil {
			m.Errf("listen", "%v", err)
		} else {
			c.Metrics.Listen = l
		}
	}
	m.Unknown(nil)
	c.Web = buildWeb(top.Sub("web"))

	for _, n := range top.Tables("notify") {
		c.Notify = append(c.Notify, buildNotify(n))
	}

	// Destinations before folders, so folders can check their references.
	c.Destinations = map[string]*Destination{}
	dt := top.Sub("destination")
	for _, name := range dt.Keys() {
		d := dt.Sub(name)
		if v, _ := dt.Raw(name); !isTable(v) {
			continue // reported by sub
		}
		if !nameRE.MatchString(name) {
			dt.Errf(name, "destination name must match [A-Za-z0-9._-]+")
			continue
		}
		c.Destinations[name] = buildDestination(name, d)
	}

	ft := top.Tables("folder")
	if !top.Has("folder") {
		top.Errf("folder", "at least one [[folder]] is required")
	}
	for _, f := range ft {
		c.Folders = append(c.Folders, buildFolder(f, dt))
	}
	checkFolders(c, ft, top)

	top.Unknown(nil)
	return c
}

func isTable(v any) bool { _, ok := v.(map[string]any); return ok }

// absPath reads an absolute path and cleans it; def when absent or empty.
func absPath(t *table.Table, k, def string) string {
	s := t.StrOr(k, def)
	if !filepath.IsAbs(s) {
		t.Errf(k, "%q is not an absolute path", s)
		return def
	}
	return filepath.Clean(s)
}

func buildRetry(t *table.Table) Retry {
	r := Retry{
		MaxAttempts:    t.Integer("max_attempts", 8, 1, 1_000_000),
		InitialBackoff: t.Duration("initial_backoff", 5*time.Second, 0),
		MaxBackoff:     t.Duration("max_backoff", 10*time.Minute, 0),
	}
	if r.InitialBackoff <= 0 {
		t.Errf("initial_backoff", "must be greater than zero")
	}
	if r.MaxBackoff < r.InitialBackoff {
		t.Errf("max_backoff", "%s is below initial_backoff (%s)", r.MaxBackoff, r.InitialBackoff)
	}
	t.Unknown(nil)
	return r
}

func buildUpload(t *table.Table) Upload {
	u := Upload{
		PartSize:    t.SizeIn("part_size", 16*MiB, 5*MiB, 5*GiB),
		Concurrency: t.Integer("concurrency", 32, 1, 64),
		MaxFiles:    t.Integer("max_files", 16, 1, 256),
	}
	// The threshold defaults to the part size: below it a file is one part
	// anyway. Above 5 GiB a single PUT is refused by S3.
	u.MultipartThreshold = t.SizeIn("multipart_threshold", u.PartSize, 5*MiB, 5*GiB)
	if v, ok := t.Get("max_bandwidth"); ok {
		switch x := v.(type) {
		case string:
			if x != "" {
				bw, err := parseBandwidth(x)
				if err != nil {
					t.Errf("max_bandwidth", "%v", err)
				}
				u.MaxBandwidth = bw
			}
		case int64:
			if x < 0 {
				t.Errf("max_bandwidth", "%d is negative", x)
			} else {
				u.MaxBandwidth = x
			}
		default:
			t.Errf("max_bandwidth", `want a rate such as "50MiB/s", got %s`, table.TypeName(v))
		}
	}
	t.Unknown(nil)
	return u
}

func checkListen(l string) error {
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return fmt.Errorf("%q is not host:port", l)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port must be a number 1..65535", l)
	}
	return nil
}

func buildNotify(t *table.Table) Notify {
	n := Notify{
		Timeout: t.Duration("timeout", 10*time.Second, 0),
		Secret:  t.Secret("secret"),
	}
	if n.Timeout <= 0 {
		t.Errf("timeout", "must be greater than zero")
	}
	u, ok := t.Str("url")
	switch {
	case !ok && !t.Has("url"):
		t.Errf("url", "required")
	case ok:
		if err := table.CheckURL(u); err != nil {
			t.Errf("url", "%v", err)
		}
		n.URL = u
	}
	if t.Has("events") {
		for _, e := range t.Strings("events") {
			if e != "done" && e != "failed" {
				t.Errf("events", "%q is not one of \"done\", \"failed\"", e)
				continue
			}
			if slices.Contains(n.Events, e) {
				t.Errf("events", "%q is listed twice", e)
				continue
			}
			n.Events = append(n.Events, e)
		}
		if len(n.Events) == 0 {
			t.Errf("events", "must not be empty; remove the key for both events")
		}
	} else {
		n.Events = []string{"done", "failed"}
	}
	t.Unknown(nil)
	return n
}

func buildFolder(t *table.Table, dests *table.Table) Folder {
	f := Folder{
		StableAfter:    t.Duration("stable_after", 5*time.Second, 0),
		RescanInterval: t.Duration("rescan_interval", time.Minute, time.Second),
		Sidecar:        t.OneOf("sidecar", "optional", "optional", "required", "ignore"),
		SidecarWait:    t.Duration("sidecar_wait", 30*time.Second, 0),
		Receipts:       t.Boolean("receipts", false),
		Probe:          t.OneOf("probe", "require", "require", "warn", "off", "ffprobe"),
	}
	if name, ok := t.Str("name"); !ok {
		if !t.Has("name") {
			t.Errf("name", "required")
		}
	} else if !nameRE.MatchString(name) {
		t.Errf("name", "%q must match [A-Za-z0-9._-]+", name)
	} else {
		f.Name = name
	}
	if p, ok := t.Str("path"); !ok {
		if !t.Has("path") {
			t.Errf("path", "required")
		}
	} else if !filepath.IsAbs(p) {
		t.Errf("path", "%q is not an absolute path", p)
	} else {
		f.Path = filepath.Clean(p)
	}
	dir := func(k string) string {
		s, ok := t.Str(k)
		if !ok || s == "" {
			if f.Path == "" {
				return ""
			}
			return filepath.Join(f.Path, strings.TrimSuffix(k, "_dir"))
		}
		if !filepath.IsAbs(s) {
			t.Errf(k, "%q is not an absolute path", s)
			return ""
		}
		return filepath.Clean(s)
	}
	f.ProcessedDir = dir("processed_dir")
	f.FailedDir = dir("failed_dir")
	if f.Path != "" {
		if f.ProcessedDir == f.Path {
			t.Errf("processed_dir", "must differ from path: the folder's own files would be moved onto themselves")
		}
		if f.FailedDir == f.Path {
			t.Errf("failed_dir", "must differ from path: the folder's own files would be moved onto themselves")
		}
	}
	if f.Path != "" {
		for _, k := range []struct{ key, dir string }{{"processed_dir", f.ProcessedDir}, {"failed_dir", f.FailedDir}} {
			if k.dir == f.Path {
				continue // reported above
			}
			if err := checkFiledDir(f.Path, k.dir); err != nil {
				t.Errf(k.key, "%v", err)
			}
		}
	}
	if f.ProcessedDir != "" && f.ProcessedDir == f.FailedDir {
		t.Errf("failed_dir", "must differ from processed_dir (%s)", f.ProcessedDir)
	}

	if !t.Has("destinations") {
		t.Errf("destinations", "required: list the [destination.NAME] tables to upload to")
	} else if ds := t.Strings("destinations"); len(ds) == 0 {
		t.Errf("destinations", "must not be empty")
	} else {
		for _, d := range ds {
			switch {
			case slices.Contains(f.Destinations, d):
				t.Errf("destinations", "%q is listed twice", d)
			case !dests.Has(d):
				t.Errf("destinations", "%q: no [destination.%s] is defined", d, d)
			default:
				f.Destinations = append(f.Destinations, d)
			}
		}
	}
	f.Include = globs(t, "include")
	f.Exclude = globs(t, "exclude")
	t.Unknown(nil)
	return f
}

// globs reads include/exclude patterns. The watcher matches them against
// the base name, or against the path below the folder when they name
// directories; `**` and `{a,b}` work (doublestar syntax).
func globs(t *table.Table, k string) []string {
	var out []string
	for _, g := range t.Strings(k) {
		switch {
		case g == "":
			t.Errf(k, "empty pattern")
		case strings.HasPrefix(g, "/"):
			t.Errf(k, "pattern %q: must be relative to the folder (no leading /)", g)
		case !doublestar.ValidatePattern(strings.ToLower(g)):
			t.Errf(k, "pattern %q: %v", g, doublestar.ErrBadPattern)
		default:
			out = append(out, g)
		}
	}
	return out
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	if p == dir {
		return true
	}
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, dir+"/")
}

// checkFolders runs the checks that need every folder: unique names, no
// folder inside another (a file would belong to two jobs), and no
// processed/failed dir inside another folder (moved files would be
// picked up again and uploaded twice).
func checkFolders(c *Config, ts []*table.Table, top *table.Table) {
	for i := range c.Folders {
		fi := &c.Folders[i]
		for j := range i {
			fj := &c.Folders[j]
			if fi.Name != "" && fi.Name == fj.Name {
				ts[i].Errf("name", "%q is also the name of folder[%d]", fi.Name, j)
			}
			if fi.Path == "" || fj.Path == "" {
				continue
			}
			switch {
			case fi.Path == fj.Path:
				ts[i].Errf("path", "folder %q and folder %q both watch %s", fi.Name, fj.Name, fi.Path)
			case within(fi.Path, fj.Path):
				ts[i].Errf("path", "folder %q (%s) is inside folder %q (%s): folders must not overlap", fi.Name, fi.Path, fj.Name, fj.Path)
			case within(fj.Path, fi.Path):
				ts[i].Errf("path", "folder %q (%s) contains folder %q (%s): folders must not overlap", fi.Name, fi.Path, fj.Name, fj.Path)
			}
		}
		for j := range c.Folders {
			fj := &c.Folders[j]
			// A folder inside another has its default dirs there too;
			// the overlap is reported once, above.
			if i == j || fj.Path == "" || within(fi.Path, fj.Path) {
				continue
			}
			for _, d := range []struct{ key, dir string }{{"processed_dir", fi.ProcessedDir}, {"failed_dir", fi.FailedDir}} {
				if d.dir != "" && within(d.dir, fj.Path) {
					ts[i].Errf(d.key, "%s is inside folder %q (%s), which would watch it", d.dir, fj.Name, fj.Path)
				}
			}
		}
		if fi.Path != "" && within(c.StateDir, fi.Path) {
			top.Errf("state_dir", "%s is inside folder %q (%s), which would watch it", c.StateDir, fi.Name, fi.Path)
		}
	}
}

func unusedDestinations(c *Config) []string {
	var out []string
	names := make([]string, 0, len(c.Destinations))
	for n := range c.Destinations {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		used := false
		for _, f := range c.Folders {
			used = used || slices.Contains(f.Destinations, n)
		}
		if !used {
			out = append(out, fmt.Sprintf("destination.%s is not used by any folder", n))
		}
	}
	return out
}
