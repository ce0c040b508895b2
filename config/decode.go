package config

import (
	"fmt"
	"strings"

	"github.com/watchfolder/watchfolder/config/table"
)

// KeyError is one problem with one key. Key is the full dotted key with
// array indexes, e.g. "folder[1].stable_after" or "destination.jw.bucket".
type KeyError = table.KeyError

// Secret is a configured secret: a literal, "${ENV}" or "file:/path". Its
// String and GoString never reveal the value.
type Secret = table.Secret

// NewSecret returns a literal secret (for tests and programmatic configs).
func NewSecret(v string) Secret { return table.NewSecret(v) }

// ParseSize parses a byte size such as "16MiB" (see table.ParseSize).
func ParseSize(s string) (int64, error) { return table.ParseSize(s) }

// Byte sizes the range checks refer to.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

func formatSize(n int64) string { return table.FormatSize(n) }

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
