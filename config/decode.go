package config

import (
	"fmt"
	"math"
	"slices"
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

// SyntaxError is a TOML syntax error; nothing else can be checked until it
// is fixed, so it is the only problem reported.
type SyntaxError struct {
	Line, Col int
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Msg)
}

// Error is returned by Parse and Load. It carries every problem found, so
// an operator fixes the file in one pass instead of one error per restart.
// errors.As finds each *KeyError through Unwrap.
type Error struct {
	File     string
	Problems []error
}

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "config " + e.File + ": " + e.Problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problems:", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap exposes the individual problems to errors.Is and errors.As.
func (e *Error) Unwrap() []error { return e.Problems }

// problems collects KeyErrors (and warnings) while the whole file is walked.
type problems struct {
	errs  []error
	warns []string
	// skipSecrets leaves ${ENV} and file: secrets unresolved (LoadClient).
	skipSecrets bool
}

func (p *problems) warn(msg string) { p.warns = append(p.warns, msg) }

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// table walks one decoded TOML table. Every key read is remembered so that
// whatever is left over can be reported as unknown with its full key; this
// is done here rather than with toml.MetaData.Undecoded because MetaData keys
// carry no array index ("folder.x" for every [[folder]]) and a struct decode
// stops at the first type mismatch, while we want all problems at once.
type table struct {
	path  string // full key of this table; "" at the top level
	m     map[string]any
	asked []string // keys the reader knows, for "did you mean" hints
	p     *problems
}

func newTable(path string, m map[string]any, p *problems) *table {
	if m == nil {
		m = map[string]any{}
	}
	return &table{path: path, m: m, p: p}
}

// key returns the full name of k inside this table.
func (t *table) key(k string) string {
	if t.path == "" {
		return k
	}
	return t.path + "." + k
}

func (t *table) errf(k, format string, args ...any) { t.p.add(t.key(k), format, args...) }

func (t *table) get(k string) (any, bool) {
	if !slices.Contains(t.asked, k) {
		t.asked = append(t.asked, k)
	}
	v, ok := t.m[k]
	return v, ok
}

func (t *table) has(k string) bool { _, ok := t.m[k]; return ok }

// str returns the string at k and whether it was present and a string.
func (t *table) str(k string) (string, bool) {
	v, ok := t.get(k)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		t.errf(k, "want a string, got %s", typeName(v))
		return "", false
	}
	return s, true
}

// strOr returns the string at k, or def when it is absent or empty: for
// these keys an empty value has no meaning of its own.
func (t *table) strOr(k, def string) string {
	if s, ok := t.str(k); ok && s != "" {
		return s
	}
	return def
}

// oneOf reads a string that must be one of allowed; def when absent.
func (t *table) oneOf(k, def string, allowed ...string) string {
	s, ok := t.str(k)
	if !ok {
		return def
	}
	if !slices.Contains(allowed, s) {
		t.errf(k, "%q is not one of %s", s, quoteList(allowed))
		return def
	}
	return s
}

func (t *table) boolean(k string, def bool) bool {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.errf(k, "want true or false, got %s", typeName(v))
		return def
	}
	return b
}

// integer reads an integer within [lo, hi].
func (t *table) integer(k string, def, lo, hi int) int {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		t.errf(k, "want an integer, got %s", typeName(v))
		return def
	}
	if n < int64(lo) || n > int64(hi) {
		t.errf(k, "%d is out of range %d..%d", n, lo, hi)
		return def
	}
	return int(n)
}

// duration reads a Go duration string ("5s", "1m30s") that is at least min.
// Bare integers are refused: seconds or nanoseconds would be a guess.
func (t *table) duration(k string, def, min time.Duration) time.Duration {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.errf(k, `want a duration string such as "30s" or "1m30s", got %s`, typeName(v))
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		t.errf(k, `invalid duration %q: want Go syntax such as "30s", "1m30s", "2h"`, s)
		return def
	}
	if d < min {
		if min == 0 {
			t.errf(k, "%s is negative", d)
		} else {
			t.errf(k, "%s is below the minimum %s", d, min)
		}
		return def
	}
	return d
}

// size reads a byte count: an integer or a string such as "16MiB".
// The boolean is false when the key was absent or invalid.
func (t *table) size(k string) (int64, bool) {
	v, ok := t.get(k)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case int64:
		if x < 0 {
			t.errf(k, "%d is negative", x)
			return 0, false
		}
		return x, true
	case string:
		n, err := ParseSize(x)
		if err != nil {
			t.errf(k, "%v", err)
			return 0, false
		}
		return n, true
	}
	t.errf(k, `want a size such as "16MiB" or a byte count, got %s`, typeName(v))
	return 0, false
}

// sizeIn reads a size within [lo, hi], def when absent or invalid.
func (t *table) sizeIn(k string, def, lo, hi int64) int64 {
	n, ok := t.size(k)
	if !ok {
		return def
	}
	if n < lo || n > hi {
		t.errf(k, "%s is out of range %s..%s", formatSize(n), formatSize(lo), formatSize(hi))
		return def
	}
	return n
}

// strings reads an array of strings.
func (t *table) strings(k string) []string {
	v, ok := t.get(k)
	if !ok {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		t.errf(k, "want an array of strings, got %s", typeName(v))
		return nil
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			t.p.add(fmt.Sprintf("%s[%d]", t.key(k), i), "want a string, got %s", typeName(e))
			continue
		}
		out = append(out, s)
	}
	return out
}

// sub returns the table at k; an empty one when absent or of the wrong type
// (the latter reported), so callers can read defaults from it either way.
func (t *table) sub(k string) *table {
	v, ok := t.get(k)
	if !ok {
		return newTable(t.key(k), nil, t.p)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.errf(k, "want a table ([%s]), got %s", t.key(k), typeName(v))
		return newTable(t.key(k), nil, t.p)
	}
	return newTable(t.key(k), m, t.p)
}

// tables returns the array of tables at k ([[k]] or k = [{...}]).
func (t *table) tables(k string) []*table {
	v, ok := t.get(k)
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
				t.p.add(fmt.Sprintf("%s[%d]", t.key(k), i), "want a table, got %s", typeName(e))
				continue
			}
			ms = append(ms, m)
		}
	default:
		t.errf(k, "want an array of tables ([[%s]]), got %s", t.key(k), typeName(v))
		return nil
	}
	out := make([]*table, len(ms))
	for i, m := range ms {
		out[i] = newTable(fmt.Sprintf("%s[%d]", t.key(k), i), m, t.p)
	}
	return out
}

// unknown reports every key of t that no reader asked for. foreign, when
// non-nil, explains keys that exist elsewhere but not here.
func (t *table) unknown(foreign func(k string) string) {
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
				t.errf(k, "%s", msg)
				continue
			}
		}
		if s := suggest(k, t.asked); s != "" {
			t.errf(k, "unknown key (did you mean %s?)", s)
		} else {
			t.errf(k, "unknown key")
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

// typeName names a decoded TOML value's type without printing the value,
// which might be a secret.
func typeName(v any) string {
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
		return "table"
	case []map[string]any, []any:
		return "array"
	case time.Time:
		return "datetime"
	}
	return "date/time"
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
