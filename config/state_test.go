package config

import (
	"strings"
	"testing"
	"time"
)

func TestStateKeepDone(t *testing.T) {
	const folder = "[[folder]]\nname = \"n\"\npath = \"/srv/n\"\ndestinations = [\"a\"]\n[destination.a]\ntype = \"s3\"\nbucket = \"abc\"\n"
	tests := []struct {
		toml string
		want time.Duration
		err  string
	}{
		{"", 0, ""},
		{"[state]\nkeep_done = \"90d\"\n", 90 * 24 * time.Hour, ""},
		{"[state]\nkeep_done = \"1d12h\"\n", 36 * time.Hour, ""},
		{"[state]\nkeep_done = \"soon\"\n", 0, "state.keep_done"},
		{"[state]\nkeep_done = \"0d\"\n", 0, "state.keep_done"},
		{"[state]\nkeep_dune = \"1d\"\n", 0, "keep_dune"},
	}
	for _, tc := range tests {
		c, err := Parse([]byte(tc.toml+folder), "t.toml")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want one naming %s", tc.toml, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.toml, err)
			continue
		}
		if c.State.KeepDone != tc.want {
			t.Errorf("%q: keep_done %v, want %v", tc.toml, c.State.KeepDone, tc.want)
		}
	}
}
