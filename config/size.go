package config

import (
	"fmt"
	"strings"
)

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
