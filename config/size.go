package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

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

// formatSize prints n in the largest binary unit that divides it exactly,
// so that the output parses back to the same number.
func formatSize(n int64) string {
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

// parseBandwidth parses "50MiB/s" (a size per second) into bytes per second.
func parseBandwidth(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if !strings.HasSuffix(t, "/s") {
		return 0, fmt.Errorf("invalid bandwidth %q: want a size per second such as \"50MiB/s\"", s)
	}
	n, err := ParseSize(strings.TrimSuffix(t, "/s"))
	if err != nil {
		return 0, fmt.Errorf("invalid bandwidth %q: want a size per second such as \"50MiB/s\"", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("bandwidth %q is zero; leave it empty for no cap", s)
	}
	return n, nil
}
