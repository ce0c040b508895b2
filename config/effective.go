package config

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// Warnings returns problems that do not stop the daemon but that an
// operator should fix: literal secrets in a file others can read, secret
// files others can read, destinations that no folder uses.
func (c *Config) Warnings() []string {
	var out []string
	// Group-readable is the packaged setup (0640 root:watchfolder: the
	// service and its operators read it); only world-readable is a leak.
	if c.mode&0o004 != 0 && c.hasLiteralSecrets() {
		out = append(out, fmt.Sprintf("config %s holds literal secrets and is readable by others (mode %#o): chmod 600 or use ${ENV}/file:", c.Path, c.mode))
	}
	return append(out, c.warnings...)
}

func (c *Config) hasLiteralSecrets() bool {
	for _, n := range c.Notify {
		if n.Secret.IsLiteral() {
			return true
		}
	}
	for _, d := range c.Destinations {
		if d.Settings == nil {
			continue
		}
		for _, f := range d.Settings.Fields() {
			if s, ok := f.Value.(Secret); ok && s.IsLiteral() {
				return true
			}
		}
	}
	return false
}

// WriteEffective writes the configuration with every default applied, as
// TOML that Parse accepts again. Secrets appear only as their source
// ("[redacted env:NAME]"), never as values, so the output can be pasted
// into a ticket.
func (c *Config) WriteEffective(w io.Writer) error {
	e := &emitter{}
	e.comment("Effective configuration of " + c.Path + ": defaults applied, secrets redacted.")
	e.str("state_dir", c.StateDir)
	e.str("control_socket", c.ControlSocket)
	e.dur("shutdown_timeout", c.ShutdownTimeout)

	e.section("[log]")
	e.str("level", c.Log.Level)
	e.str("format", c.Log.Format)

	e.section("[retry]")
	e.int("max_attempts", int64(c.Retry.MaxAttempts))
	e.dur("initial_backoff", c.Retry.InitialBackoff)
	e.dur("max_backoff", c.Retry.MaxBackoff)

	e.section("[upload]")
	e.str("part_size", formatSize(c.Upload.PartSize))
	e.int("concurrency", int64(c.Upload.Concurrency))
	e.int("max_files", int64(c.Upload.MaxFiles))
	e.str("multipart_threshold", formatSize(c.Upload.MultipartThreshold))
	if c.Upload.MaxBandwidth > 0 {
		e.str("max_bandwidth", formatSize(c.Upload.MaxBandwidth)+"/s")
	} else {
		e.str("max_bandwidth", "")
	}

	e.section("[metrics]")
	e.str("listen", c.Metrics.Listen)
	c.Web.writeEffective(e)

	e.section("[state]")
	if c.State.KeepDone > 0 {
		e.dur("keep_done", c.State.KeepDone)
	} else {
		e.str("keep_done", "")
	}
	writeStateBackend(e, c.State)

	for _, n := range c.Notify {
		e.section("[[notify]]")
		e.str("url", redactURL(n.URL))
		e.list("events", n.Events)
		e.secret("secret", n.Secret)
		e.dur("timeout", n.Timeout)
	}

	for _, f := range c.Folders {
		e.section("[[folder]]")
		e.str("name", f.Name)
		e.str("path", f.Path)
		e.str("processed_dir", f.ProcessedDir)
		e.str("failed_dir", f.FailedDir)
		e.list("destinations", f.Destinations)
		e.dur("stable_after", f.StableAfter)
		e.dur("rescan_interval", f.RescanInterval)
		e.list("include", f.Include)
		e.list("exclude", f.Exclude)
		e.str("sidecar", f.Sidecar)
		e.dur("sidecar_wait", f.SidecarWait)
		e.line("receipts", strconv.FormatBool(f.Receipts))
		e.str("probe", f.Probe)
	}

	names := make([]string, 0, len(c.Destinations))
	for n := range c.Destinations {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		d := c.Destinations[n]
		e.section("[destination." + tomlKey(n) + "]")
		e.str("type", d.Type)
		if d.Settings == nil {
			continue
		}
		// Each type declares its keys; what it declares secret is shown
		// only as its source.
		for _, f := range d.Settings.Fields() {
			e.field(f)
		}
	}
	_, err := io.WriteString(w, e.b.String())
	return err
}

func (e *emitter) field(f uploader.Field) {
	switch v := f.Value.(type) {
	case Secret:
		e.secret(f.Key, v)
	case string:
		if f.Secret && v != "" {
			e.str(f.Key, "[redacted]")
			return
		}
		e.str(f.Key, v)
	case bool:
		e.line(f.Key, strconv.FormatBool(v))
	case int64:
		e.int(f.Key, v)
	case int:
		e.int(f.Key, int64(v))
	case time.Duration:
		e.dur(f.Key, v)
	case []string:
		e.list(f.Key, v)
	case map[string]string:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = tomlKey(k) + " = " + tomlString(v[k])
		}
		e.line(f.Key, "{"+strings.Join(parts, ", ")+"}")
	default:
		// A declaration error: never print an unknown value, it might
		// be a secret.
		e.comment(f.Key + ": value of unsupported type not shown")
	}
}

// emitter builds TOML text; it only ever writes values of known shape, so
// a general encoder (which cannot redact) is not needed.
type emitter struct{ b strings.Builder }

func (e *emitter) comment(s string) { e.b.WriteString("# " + strings.ReplaceAll(s, "\n", " ") + "\n") }
func (e *emitter) section(h string) { e.b.WriteString("\n" + h + "\n") }
func (e *emitter) line(k, v string) { e.b.WriteString(k + " = " + v + "\n") }
func (e *emitter) str(k, v string)  { e.line(k, tomlString(v)) }
func (e *emitter) int(k string, v int64) {
	e.line(k, strconv.FormatInt(v, 10))
}
func (e *emitter) dur(k string, d time.Duration) { e.str(k, formatDuration(d)) }
func (e *emitter) secret(k string, s Secret)     { e.str(k, s.String()) }
func (e *emitter) list(k string, vs []string) {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = tomlString(v)
	}
	e.line(k, "["+strings.Join(q, ", ")+"]")
}

// formatDuration drops the zero tails Go prints ("1m0s" -> "1m").
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// tomlString quotes s as a TOML basic string. strconv.Quote is not used:
// its \x and \a escapes are not TOML.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlKey writes k bare when TOML allows it, quoted otherwise.
func tomlKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return tomlString(k)
		}
	}
	return k
}

// redactURL keeps a webhook URL's scheme and host only: Slack-style hooks
// carry their token in the path, others in the query.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "[redacted]"
	}
	if (u.Path == "" || u.Path == "/") && u.RawQuery == "" {
		return s
	}
	return u.Scheme + "://" + u.Host + "/[redacted]"
}
