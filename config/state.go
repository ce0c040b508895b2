package config

import (
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
)

// StateSettings is the [state] table.
type StateSettings struct {
	// KeepDone, when positive, is how long done and gone jobs stay in the
	// database before the daemon prunes them; 0 keeps them all.
	KeepDone time.Duration
}

func buildState(t *table.Table) StateSettings {
	var s StateSettings
	if v, ok := t.Str("keep_done"); ok && v != "" {
		d, err := ParseAge(v)
		if err != nil || d <= 0 {
			t.Errf("keep_done", `invalid age %q: want a positive duration such as "90d", "36h" or "1d12h"`, v)
		} else {
			s.KeepDone = d
		}
	}
	t.Unknown(nil)
	return s
}

// ParseAge reads a duration that may start with a number of days ("90d",
// "1d12h", "0.5d"), as retention is thought of in days; the rest is Go
// duration syntax.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || n < 0 || i == 0 {
			return 0, &ageError{s}
		}
		days = time.Duration(n * float64(24*time.Hour))
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &ageError{s}
	}
	return days + d, nil
}

type ageError struct{ s string }

func (e *ageError) Error() string {
	return strconv.Quote(e.s) + " is not a duration (e.g. 90m, 24h, 7d)"
}
