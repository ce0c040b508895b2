package config

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
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
	data, err := io.ReadAll(f)
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
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Problems: []error{&SyntaxError{Line: pe.Position.Line, Col: pe.Position.Col, Msg: pe.Message}}}
		}
		return nil, &Error{File: name, Problems: []error{err}}
	}
	p := &problems{skipSecrets: skipSecrets}
	c := build(newTable("", doc, p))
	c.Path = name
	if len(p.errs) > 0 {
		return nil, &Error{File: name, Problems: p.errs}
	}
	c.warnings = p.warns
	return c, nil
}

// build walks the document, applying defaults and collecting problems in
// the table's problems.
func build(top *table) *Config {
	c := &Config{
		StateDir:        absPath(top, "state_dir", DefaultStateDir),
		ControlSocket:   absPath(top, "control_socket", DefaultControlSocket),
		ShutdownTimeout: top.duration("shutdown_timeout", 30*time.Second, 0),
	}

	lg := top.sub("log")
	c.Log = Log{
		Level:  lg.oneOf("level", "info", "debug", "info", "warn", "error"),
		Format: lg.oneOf("format", "text", "text", "json"),
	}
	lg.unknown(nil)

	c.Retry = buildRetry(top.sub("retry"))
	c.Upload = buildUpload(top.sub("upload"))

	m := top.sub("metrics")
	if l, ok := m.str("listen"); ok && l != "" {
		if err := checkListen(l); err != nil {
			m.errf("listen", "%v", err)
		} else {
			c.Metrics.Listen = l
		}
	}
	m.unknown(nil)

	for _, n := range top.tables("notify") {
		c.Notify = append(c.Notify, buildNotify(n))
	}

	// Destinations before folders, so folders can check their references.
	c.Destinations = map[string]*Destination{}
	dt := top.sub("destination")
	names := make([]string, 0, len(dt.m))
	for k := range dt.m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, name := range names {
		d := dt.sub(name)
		if _, ok := dt.m[name].(map[string]any); !ok {
			continue // reported by sub
		}
		if !nameRE.MatchString(name) {
			dt.errf(name, "destination name must match [A-Za-z0-9._-]+")
			continue
		}
		c.Destinations[name] = buildDestination(name, d)
	}

	ft := top.tables("folder")
	if !top.has("folder") {
		top.errf("folder", "at least one [[folder]] is required")
	}
	for _, f := range ft {
		c.Folders = append(c.Folders, buildFolder(f, dt))
	}
	checkFolders(c, ft, top)

	top.unknown(nil)
	top.p.warns = append(top.p.warns, unusedDestinations(c)...)
	return c
}

// absPath reads an absolute path and cleans it; def when absent or empty.
func absPath(t *table, k, def string) string {
	s := t.strOr(k, def)
	if !filepath.IsAbs(s) {
		t.errf(k, "%q is not an absolute path", s)
		return def
	}
	return filepath.Clean(s)
}

func buildRetry(t *table) Retry {
	r := Retry{
		MaxAttempts:    t.integer("max_attempts", 8, 1, 1_000_000),
		InitialBackoff: t.duration("initial_backoff", 5*time.Second, 0),
		MaxBackoff:     t.duration("max_backoff", 10*time.Minute, 0),
	}
	if r.InitialBackoff <= 0 {
		t.errf("initial_backoff", "must be greater than zero")
	}
	if r.MaxBackoff < r.InitialBackoff {
		t.errf("max_backoff", "%s is below initial_backoff (%s)", r.MaxBackoff, r.InitialBackoff)
	}
	t.unknown(nil)
	return r
}

func buildUpload(t *table) Upload {
	u := Upload{
		PartSize:    t.sizeIn("part_size", 16*MiB, 5*MiB, 5*GiB),
		Concurrency: t.integer("concurrency", 4, 1, 64),
		MaxFiles:    t.integer("max_files", 8, 1, 256),
	}
	// The threshold defaults to the part size: below it a file is one part
	// anyway. Above 5 GiB a single PUT is refused by S3.
	u.MultipartThreshold = t.sizeIn("multipart_threshold", u.PartSize, 5*MiB, 5*GiB)
	if v, ok := t.get("max_bandwidth"); ok {
		switch x := v.(type) {
		case string:
			if x != "" {
				bw, err := parseBandwidth(x)
				if err != nil {
					t.errf("max_bandwidth", "%v", err)
				}
				u.MaxBandwidth = bw
			}
		case int64:
			if x < 0 {
				t.errf("max_bandwidth", "%d is negative", x)
			} else {
				u.MaxBandwidth = x
			}
		default:
			t.errf("max_bandwidth", `want a rate such as "50MiB/s", got %s`, typeName(v))
		}
	}
	t.unknown(nil)
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

func buildNotify(t *table) Notify {
	n := Notify{
		Timeout: t.duration("timeout", 10*time.Second, 0),
		Secret:  t.secret("secret"),
	}
	if n.Timeout <= 0 {
		t.errf("timeout", "must be greater than zero")
	}
	u, ok := t.str("url")
	switch {
	case !ok && !t.has("url"):
		t.errf("url", "required")
	case ok:
		if err := checkURL(u); err != nil {
			t.errf("url", "%v", err)
		}
		n.URL = u
	}
	if t.has("events") {
		for _, e := range t.strings("events") {
			if e != "done" && e != "failed" {
				t.errf("events", "%q is not one of \"done\", \"failed\"", e)
				continue
			}
			if slices.Contains(n.Events, e) {
				t.errf("events", "%q is listed twice", e)
				continue
			}
			n.Events = append(n.Events, e)
		}
		if len(n.Events) == 0 {
			t.errf("events", "must not be empty; remove the key for both events")
		}
	} else {
		n.Events = []string{"done", "failed"}
	}
	t.unknown(nil)
	return n
}

// checkURL accepts absolute http and https URLs. It does not print the URL:
// webhook URLs often carry a token.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	if u.User != nil {
		return errors.New("URL must not carry credentials; use the secret keys")
	}
	if u.Fragment != "" {
		return errors.New("URL must not have a #fragment")
	}
	return nil
}

func buildFolder(t *table, dests *table) Folder {
	f := Folder{
		StableAfter:    t.duration("stable_after", 5*time.Second, 0),
		RescanInterval: t.duration("rescan_interval", time.Minute, time.Second),
		Sidecar:        t.oneOf("sidecar", "optional", "optional", "required", "ignore"),
		SidecarWait:    t.duration("sidecar_wait", 30*time.Second, 0),
		Receipts:       t.boolean("receipts", false),
		Probe:          t.oneOf("probe", "require", "require", "warn", "off", "ffprobe"),
	}
	if name, ok := t.str("name"); !ok {
		if !t.has("name") {
			t.errf("name", "required")
		}
	} else if !nameRE.MatchString(name) {
		t.errf("name", "%q must match [A-Za-z0-9._-]+", name)
	} else {
		f.Name = name
	}
	if p, ok := t.str("path"); !ok {
		if !t.has("path") {
			t.errf("path", "required")
		}
	} else if !filepath.IsAbs(p) {
		t.errf("path", "%q is not an absolute path", p)
	} else {
		f.Path = filepath.Clean(p)
	}
	dir := func(k string) string {
		s, ok := t.str(k)
		if !ok || s == "" {
			if f.Path == "" {
				return ""
			}
			return filepath.Join(f.Path, strings.TrimSuffix(k, "_dir"))
		}
		if !filepath.IsAbs(s) {
			t.errf(k, "%q is not an absolute path", s)
			return ""
		}
		return filepath.Clean(s)
	}
	f.ProcessedDir = dir("processed_dir")
	f.FailedDir = dir("failed_dir")
	if f.Path != "" {
		if f.ProcessedDir == f.Path {
			t.errf("processed_dir", "must differ from path: the folder's own files would be moved onto themselves")
		}
		if f.FailedDir == f.Path {
			t.errf("failed_dir", "must differ from path: the folder's own files would be moved onto themselves")
		}
	}
	if f.ProcessedDir != "" && f.ProcessedDir == f.FailedDir {
		t.errf("failed_dir", "must differ from processed_dir (%s)", f.ProcessedDir)
	}

	if !t.has("destinations") {
		t.errf("destinations", "required: list the [destination.NAME] tables to upload to")
	} else if ds := t.strings("destinations"); len(ds) == 0 {
		t.errf("destinations", "must not be empty")
	} else {
		for _, d := range ds {
			switch {
			case slices.Contains(f.Destinations, d):
				t.errf("destinations", "%q is listed twice", d)
			case !dests.has(d):
				t.errf("destinations", "%q: no [destination.%s] is defined", d, d)
			default:
				f.Destinations = append(f.Destinations, d)
			}
		}
	}
	f.Include = globs(t, "include")
	f.Exclude = globs(t, "exclude")
	t.unknown(nil)
	return f
}

// globs reads patterns matched against a file's base name (see watcher).
func globs(t *table, k string) []string {
	var out []string
	for _, g := range t.strings(k) {
		switch {
		case g == "":
			t.errf(k, "empty pattern")
		case strings.Contains(g, "/"):
			t.errf(k, "pattern %q contains /: patterns match the file name only", g)
		default:
			if _, err := path.Match(g, ""); err != nil {
				t.errf(k, "pattern %q: %v", g, err)
				continue
			}
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
func checkFolders(c *Config, ts []*table, top *table) {
	for i := range c.Folders {
		fi := &c.Folders[i]
		for j := range i {
			fj := &c.Folders[j]
			if fi.Name != "" && fi.Name == fj.Name {
				ts[i].errf("name", "%q is also the name of folder[%d]", fi.Name, j)
			}
			if fi.Path == "" || fj.Path == "" {
				continue
			}
			switch {
			case fi.Path == fj.Path:
				ts[i].errf("path", "folder %q and folder %q both watch %s", fi.Name, fj.Name, fi.Path)
			case within(fi.Path, fj.Path):
				ts[i].errf("path", "folder %q (%s) is inside folder %q (%s): folders must not overlap", fi.Name, fi.Path, fj.Name, fj.Path)
			case within(fj.Path, fi.Path):
				ts[i].errf("path", "folder %q (%s) contains folder %q (%s): folders must not overlap", fi.Name, fi.Path, fj.Name, fj.Path)
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
					ts[i].errf(d.key, "%s is inside folder %q (%s), which would watch it", d.dir, fj.Name, fj.Path)
				}
			}
		}
		if fi.Path != "" && within(c.StateDir, fi.Path) {
			top.errf("state_dir", "%s is inside folder %q (%s), which would watch it", c.StateDir, fi.Name, fi.Path)
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

// headerValue rejects what cannot go into an HTTP header value.
func headerValue(s string) error {
	for _, r := range s {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return errors.New("contains a control character")
		}
		if r > 0x7e {
			return errors.New("contains a non-ASCII character, which S3 does not keep in headers")
		}
	}
	return nil
}

// headerToken reports whether s is an RFC 9110 token (a header name).
func headerToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x7f || r <= 0x20 || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// contentType checks a media type like "video/mp4".
func contentType(s string) error {
	if err := headerValue(s); err != nil {
		return err
	}
	mt, _, err := mime.ParseMediaType(s)
	if err != nil {
		return fmt.Errorf("%q is not a media type: %v", s, err)
	}
	if !strings.Contains(mt, "/") {
		return fmt.Errorf("%q is not a media type: want type/subtype such as video/mp4", s)
	}
	return nil
}
