// Package table is the strict configuration reader: it walks one decoded
// TOML table, reads each key with a typed accessor, and collects every
// problem (naming its full key) instead of stopping at the first. config
// uses it for the whole file; each destination type uses it for its own
// [destination.NAME] table, declaring its keys, defaults, checks and
// secrets where the destination is implemented.
package table

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"mime"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyError is one problem with one key. Key is the full dotted key with
// array indexes, e.g. "folder[1].stable_after" or "destination.jw.bucket".
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Problems collects KeyErrors (and warnings) while the whole file is walked.
type Problems struct {
	Errs  []error
	Warns []string
	// SkipSecrets leaves ${ENV} and file: secrets unresolved (LoadClient).
	SkipSecrets bool
}

func (p *Problems) Warn(msg string) { p.Warns = append(p.Warns, msg) }

func (p *Problems) Add(key, format string, args ...any) {
	p.Errs = append(p.Errs, &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Table walks one decoded TOML Table. Every key read is remembered so that
// whatever is left over can be reported as unknown with its full key; this
// is done here rather than with toml.MetaData.Undecoded because MetaData keys
// carry no array index ("folder.x" for every [[folder]]) and a struct decode
// stops at the first type mismatch, while we want all Problems at once.
type Table struct {
	path  string // full key of this Table; "" at the top level
	m     map[string]any
	asked []string // keys the reader knows, for "did you mean" hints
	p     *Problems
}

func New(path string, m map[string]any, p *Problems) *Table {
	if m == nil {
		m = map[string]any{}
	}
	return &Table{path: path, m: m, p: p}
}

// key returns the full name of k inside this Table.
func (t *Table) Key(k string) string {
	if t.path == "" {
		return k
	}
	return t.path + "." + k
}

func (t *Table) Errf(k, format string, args ...any) { t.p.Add(t.Key(k), format, args...) }

func (t *Table) Get(k string) (any, bool) {
	if !slices.Contains(t.asked, k) {
		t.asked = append(t.asked, k)
	}
	v, ok := t.m[k]
	return v, ok
}

func (t *Table) Has(k string) bool { _, ok := t.m[k]; return ok }

// str returns the string at k and whether it was present and a string.
func (t *Table) Str(k string) (string, bool) {
	v, ok := t.Get(k)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		t.Errf(k, "want a string, got %s", TypeName(v))
		return "", false
	}
	return s, true
}

// strOr returns the string at k, or def when it is absent or empty: for
// these keys an empty value has no meaning of its own.
func (t *Table) StrOr(k, def string) string {
	if s, ok := t.Str(k); ok && s != "" {
		return s
	}
	return def
}

// oneOf reads a string that must be one of allowed; def when absent.
func (t *Table) OneOf(k, def string, allowed ...string) string {
	s, ok := t.Str(k)
	if !ok {
		return def
	}
	if !slices.Contains(allowed, s) {
		t.Errf(k, "%q is not one of %s", s, QuoteList(allowed))
		return def
	}
	return s
}

func (t *Table) Boolean(k string, def bool) bool {
	v, ok := t.Get(k)
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.Errf(k, "want true or false, got %s", TypeName(v))
		return def
	}
	return b
}

// integer reads an integer within [lo, hi].
func (t *Table) Integer(k string, def, lo, hi int) int {
	v, ok := t.Get(k)
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		t.Errf(k, "want an integer, got %s", TypeName(v))
		return def
	}
	if n < int64(lo) || n > int64(hi) {
		t.Errf(k, "%d is out of range %d..%d", n, lo, hi)
		return def
	}
	return int(n)
}

// duration reads a Go duration string ("5s", "1m30s") that is at least min.
// Bare integers are refused: seconds or nanoseconds would be a guess.
func (t *Table) Duration(k string, def, min time.Duration) time.Duration {
	v, ok := t.Get(k)
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.Errf(k, `want a duration string such as "30s" or "1m30s", got %s`, TypeName(v))
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		t.Errf(k, `invalid duration %q: want Go syntax such as "30s", "1m30s", "2h"`, s)
		return def
	}
	if d < min {
		if min == 0 {
			t.Errf(k, "%s is negative", d)
		} else {
			t.Errf(k, "%s is below the minimum %s", d, min)
		}
		return def
	}
	return d
}

// size reads a byte count: an integer or a string such as "16MiB".
// The boolean is false when the key was absent or invalid.
func (t *Table) Size(k string) (int64, bool) {
	v, ok := t.Get(k)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case int64:
		if x < 0 {
			t.Errf(k, "%d is negative", x)
			return 0, false
		}
		return x, true
	case string:
		n, err := ParseSize(x)
		if err != nil {
			t.Errf(k, "%v", err)
			return 0, false
		}
		return n, true
	}
	t.Errf(k, `want a size such as "16MiB" or a byte count, got %s`, TypeName(v))
	return 0, false
}

// sizeIn reads a size within [lo, hi], def when absent or invalid.
func (t *Table) SizeIn(k string, def, lo, hi int64) int64 {
	n, ok := t.Size(k)
	if !ok {
		return def
	}
	if n < lo || n > hi {
		t.Errf(k, "%s is out of range %s..%s", FormatSize(n), FormatSize(lo), FormatSize(hi))
		return def
	}
	return n
}

// strings reads an array of strings.
func (t *Table) Strings(k string) []string {
	v, ok := t.Get(k)
	if !ok {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		t.Errf(k, "want an array of strings, got %s", TypeName(v))
		return nil
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			t.p.Add(fmt.Sprintf("%s[%d]", t.Key(k), i), "want a string, got %s", TypeName(e))
			continue
		}
		out = append(out, s)
	}
	return out
}

// sub returns the Table at k; an empty one when absent or of the wrong type
// (the latter reported), so callers can read defaults from it either way.
func (t *Table) Sub(k string) *Table {
	v, ok := t.Get(k)
	if !ok {
		return New(t.Key(k), nil, t.p)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Errf(k, "want a Table ([%s]), got %s", t.Key(k), TypeName(v))
		return New(t.Key(k), nil, t.p)
	}
	return New(t.Key(k), m, t.p)
}

// tables returns the array of tables at k ([[k]] or k = [{...}]).
func (t *Table) Tables(k string) []*Table {
	v, ok := t.Get(k)
	if !ok {
		return nil
	}
	var ms []map[string]any
	switch x := v.(type) {
	case []map[string]any:
		ms = x
	case []any:
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				t.p.Add(fmt.Sprintf("%s[%d]", t.Key(k), i), "want a Table, got %s", TypeName(e))
				continue
			}
			ms = append(ms, m)
		}
	default:
		t.Errf(k, "want an array of tables ([[%s]]), got %s", t.Key(k), TypeName(v))
		return nil
	}
	out := make([]*Table, len(ms))
	for i, m := range ms {
		out[i] = New(fmt.Sprintf("%s[%d]", t.Key(k), i), m, t.p)
	}
	return out
}

// unknown reports every key of t that no reader asked for. foreign, when
// non-nil, explains keys that exist elsewhere but not here.
func (t *Table) Unknown(foreign func(k string) string) {
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		if !slices.Contains(t.asked, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if foreign != nil {
			if msg := foreign(k); msg != "" {
				t.Errf(k, "%s", msg)
				continue
			}
		}
		if s := suggest(k, t.asked); s != "" {
			t.Errf(k, "unknown key (did you mean %s?)", s)
		} else {
			t.Errf(k, "unknown key")
		}
	}
}

// suggest returns the known key closest to k if it is a likely typo.
func suggest(k string, known []string) string {
	best, bestD := "", math.MaxInt
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= 2 && bestD < len(k) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// TypeName names a decoded TOML value's type without printing the value,
// which might be a secret.
func TypeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "Table"
	case []map[string]any, []any:
		return "array"
	case time.Time:
		return "datetime"
	}
	return "date/time"
}

func QuoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// Secret is a configured secret: a literal, "${ENV}" or "file:/path". Its
// String and GoString never reveal the value.
//
// The value sits behind a pointer: fmt prints a nested pointer as an
// address, so even a struct that holds a Secret in an unexported field
// (where fmt cannot call String) never prints the value.
type Secret struct {
	value  *string
	source string // "literal", "env:NAME", "file:/path", or "" when unset
}

func secretOf(v, source string) Secret { return Secret{value: &v, source: source} }

// NewSecret returns a literal secret (for tests and programmatic configs).
func NewSecret(v string) Secret { return secretOf(v, "literal") }

// Value returns the secret itself. Only pass it to the code that uses it.
func (s Secret) Value() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

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

// maxSecretFile bounds what a file: secret may read, so a mistyped path
// (a log, a disk image) fails fast instead of filling memory.
const maxSecretFile = 64 << 10

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secret reads the secret at k and resolves it. Errors name the key and the
// variable or file, never the value.
func (t *Table) Secret(k string) Secret {
	s, ok := t.Str(k)
	if !ok || s == "" {
		return Secret{}
	}
	if t.p.SkipSecrets {
		return Secret{source: "unresolved"}
	}
	sec, warn, err := ResolveSecret(s)
	if err != nil {
		t.Errf(k, "%v", err)
		return Secret{}
	}
	if warn != "" {
		t.p.Warn(t.Key(k) + ": " + warn)
	}
	return sec
}

// ResolveSecret turns "${NAME}", "file:/path" or a literal into a Secret.
// warn is set when the secret is readable by more people than it should be.
func ResolveSecret(s string) (sec Secret, warn string, err error) {
	switch {
	case strings.HasPrefix(s, "${") && strings.HasSuffix(s, "}"):
		name := s[2 : len(s)-1]
		if !envName.MatchString(name) {
			return Secret{}, "", fmt.Errorf("invalid environment variable reference: want ${NAME} with NAME made of letters, digits and _")
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return Secret{}, "", fmt.Errorf("environment variable %s is not set", name)
		}
		if v == "" {
			return Secret{}, "", fmt.Errorf("environment variable %s is empty", name)
		}
		return secretOf(v, "env:"+name), "", nil

	case strings.HasPrefix(s, "file:"):
		p, err := expandEnv(strings.TrimPrefix(s, "file:"))
		if err != nil {
			return Secret{}, "", err
		}
		if !filepath.IsAbs(p) {
			return Secret{}, "", fmt.Errorf("secret file %q: path must be absolute", p)
		}
		p = filepath.Clean(p)
		v, mode, err := readSecretFile(p)
		if err != nil {
			return Secret{}, "", err
		}
		// Group-readable (0640 root:watchfolder) is how the service user
		// reads it; world-readable is the leak.
		if mode&0o007 != 0 {
			warn = fmt.Sprintf("secret file %s is readable by others (mode %#o): chmod 600", p, mode&fs.ModePerm)
		}
		return secretOf(v, "file:"+p), warn, nil
	}
	return secretOf(s, "literal"), "", nil
}

// expandEnv expands ${VAR} and $VAR in a secret file path, so that
// "file:${CREDENTIALS_DIRECTORY}/jw" works with systemd credentials. An
// unset variable is an error: it would silently turn into "/jw".
func expandEnv(p string) (string, error) {
	var missing []string
	out := os.Expand(p, func(name string) string {
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("secret file path %q: environment variable %s is not set", p, missing[0])
	}
	return out, nil
}

// readSecretFile reads a regular file and trims one trailing newline, which
// editors and `echo` add and which is never part of a key.
func readSecretFile(p string) (string, fs.FileMode, error) {
	// Stat first: opening a FIFO or a device would block or read forever.
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0, fmt.Errorf("secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("secret file %s is not a regular file", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", 0, fmt.Errorf("secret file %s: %w", p, err)
	}
	if len(b) > maxSecretFile {
		return "", 0, fmt.Errorf("secret file %s is larger than %d bytes", p, maxSecretFile)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", 0, fmt.Errorf("secret file %s is empty", p)
	}
	return string(b), fi.Mode().Perm(), nil
}

// IsLiteral reports whether the secret was written into the config itself.
func (s Secret) IsLiteral() bool { return s.source == "literal" }

// Byte sizes the range checks refer to.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

var sizeUnits = map[string]int64{
	"":   1,
	"b":  1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
}

// ParseSize parses a byte size: a non-negative integer optionally followed
// by a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers
// of 1024), case-insensitive, with an optional space: "16MiB", "5 gb", "1024".
// Fractions are refused so that the result is always exact.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number with an optional unit such as \"16MiB\", \"5GB\", \"1024\"", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: number too large", s)
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, t[i:])
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// FormatSize prints n in the largest binary unit that divides it exactly,
// so that the output parses back to the same number.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// CheckURL accepts absolute http and https URLs. It does not print the URL:
// webhook URLs often carry a token.
func CheckURL(s string) error {
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

// HeaderValue rejects what cannot go into an HTTP header value.
func HeaderValue(s string) error {
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

// HeaderToken reports whether s is an RFC 9110 token (a header name).
func HeaderToken(s string) bool {
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

// ContentType checks a media type like "video/mp4".
func ContentType(s string) error {
	if err := HeaderValue(s); err != nil {
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

// Path returns the full key of this table ("" at the top level).
func (t *Table) Path() string { return t.path }

// Raw returns the value at k as decoded, without marking it as read or
// checking its type.
func (t *Table) Raw(k string) (any, bool) { v, ok := t.m[k]; return v, ok }

// Keys returns every key present, sorted.
func (t *Table) Keys() []string {
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// SkipSecrets reports whether secrets are left unresolved (commands that
// only talk to the daemon).
func (t *Table) SkipSecrets() bool { return t.p.SkipSecrets }

// Warn records a warning about key k.
func (t *Table) Warn(k, format string, args ...any) {
	t.p.Warn(t.Key(k) + ": " + fmt.Sprintf(format, args...))
}

// Missing reports whether k is absent or an empty string. A value of the
// wrong type is not missing: it is reported as such when read.
func (t *Table) Missing(k string) bool {
	v, ok := t.Get(k)
	return !ok || v == ""
}

// NonEmpty reports whether k holds a non-empty string, valid or not, so a
// broken secret reference is not also reported as "missing".
func (t *Table) NonEmpty(k string) bool {
	s, ok := t.m[k].(string)
	return ok && s != ""
}

// Required reads a secret that must be set.
func (t *Table) Required(k string) Secret {
	if t.Missing(k) {
		t.Errf(k, "required")
		return Secret{}
	}
	return t.Secret(k)
}

// Source names where a secret came from ("literal", "env:NAME",
// "file:/path"), "" when unset.
func (s Secret) Source() string { return s.source }

var urlSafeID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ID reads an identifier that goes into URLs or headers verbatim.
func (t *Table) ID(k string) string {
	s, ok := t.Str(k)
	if ok && s != "" && !urlSafeID.MatchString(s) {
		t.Errf(k, "%q must match [A-Za-z0-9_-]+", s)
		return ""
	}
	return s
}

// URL reads an http(s) base URL, without its trailing slash so that
// clients can append paths; def when absent or empty.
func (t *Table) URL(k, def string) string {
	s := t.StrOr(k, def)
	if s == "" {
		return ""
	}
	if err := CheckURL(s); err != nil {
		t.Errf(k, "%v", err)
		return def
	}
	return strings.TrimRight(s, "/")
}

// Timing reads register_timeout and poll_interval, both above zero and the
// poll no longer than the timeout.
func (t *Table) Timing(timeout, poll time.Duration) (time.Duration, time.Duration) {
	rt := t.Duration("register_timeout", timeout, 0)
	pi := t.Duration("poll_interval", poll, 0)
	if rt <= 0 {
		t.Errf("register_timeout", "must be greater than zero")
	}
	if pi <= 0 {
		t.Errf("poll_interval", "must be greater than zero")
	} else if pi > rt && rt > 0 {
		t.Errf("poll_interval", "%s is longer than register_timeout (%s)", pi, rt)
	}
	return rt, pi
}

// Asked returns the keys a reader asked for so far (present or not).
func (t *Table) Asked() []string { return slices.Clone(t.asked) }
