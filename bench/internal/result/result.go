// Package result is the record every benchmark helper appends to the
// results file (JSON lines), and the report reads back.
package result

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// Record is one measured run of one tool in one scenario.
type Record struct {
	Scenario string  `json:"scenario"` // "1gib", "burst", "resume"
	Tool     string  `json:"tool"`     // "watchfolder", "mc", "rclone"
	Run      int     `json:"run"`
	WallS    float64 `json:"wall_s"`
	UserS    float64 `json:"user_s"`
	SysS     float64 `json:"sys_s"`
	RSSMiB   float64 `json:"rss_mib"` // peak resident set size
	// Extra holds scenario-specific figures (e.g. bytes re-sent on resume).
	Extra map[string]float64 `json:"extra,omitempty"`
}

// CPUS is user+sys CPU seconds.
func (r Record) CPUS() float64 { return r.UserS + r.SysS }

// Append writes r as one JSON line to path (created if missing).
func Append(path string, r Record) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		f.Close()
		return fmt.Errorf("encode result: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// Load reads every record of path.
func Load(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// Line is the one-line summary the helpers print after a run.
func (r Record) Line() string {
	s := fmt.Sprintf("%-7s %-12s run %d: wall %7.2fs  cpu %7.2fs (user %.2f sys %.2f)  peak RSS %6.1f MiB",
		r.Scenario, r.Tool, r.Run, r.WallS, r.CPUS(), r.UserS, r.SysS, r.RSSMiB)
	for k, v := range r.Extra {
		s += fmt.Sprintf("  %s=%.0f", k, v)
	}
	return s
}

// AnnotateLast adds extra to the last record of path (the run just
// measured), rewriting the file through a temporary one.
func AnnotateLast(path string, extra map[string]float64) error {
	recs, err := Load(path)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("%s holds no results to annotate", path)
	}
	last := &recs[len(recs)-1]
	if last.Extra == nil {
		last.Extra = map[string]float64{}
	}
	for k, v := range extra {
		last.Extra[k] = v
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	for _, r := range recs {
		if err := Append(tmp, r); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}
