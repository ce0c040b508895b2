package web

import (
	"crypto/hmac"
	"fmt"
	"html/template"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/internal/human"
)

func (s *Server) parseTemplates() error {
	funcs := template.FuncMap{
		"bytes": humanBytes,
		"rate":  humanRate,
		"eta":   humanETA,
		"when":  when,
		"stamp": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
		"pct":   pct,
		"scrub": scrub,
		"count": func(m map[string]int, k string) int { return m[k] },
		"plural": func(n int, one, many string) string {
			if n == 1 {
				return one
			}
			return many
		},
	}
	s.pages = map[string]*template.Template{}
	for _, p := range []string{"overview.html", "jobs.html", "job.html", "login.html", "error.html"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/parts.html", "templates/"+p)
		if err != nil {
			return fmt.Errorf("web: template %s: %w", p, err)
		}
		s.pages[p] = t
	}
	return nil
}

func hmacEqual(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }

func humanBytes(n int64) string { return human.Bytes(n) }

func humanRate(r float64) string {
	if r <= 0 {
		return "–"
	}
	return humanBytes(int64(r)) + "/s"
}

func humanETA(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	d = d.Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// when shows a time as the clock for today, with the date otherwise.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	t = t.Local()
	now := time.Now()
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04")
}

func pct(done, size int64) int {
	if size <= 0 {
		return 0
	}
	return int(math.Min(100, math.Floor(100*float64(done)/float64(size))))
}

// absPathRE finds what looks like an absolute file path: a "/" at the start
// or after a space, quote or bracket (so URLs, whose slashes follow ":" or
// "/", are left alone), then at least one more path element.
var absPathRE = regexp.MustCompile(`(^|[\s"'(\[=])(/[^\s"'()\[\]]+/[^\s"'()\[\]]*)`)

// scrub shortens any absolute path left in a message to its last element:
// the Source already made its own folders' paths relative, so whatever is
// still absolute lies outside them and is nobody's business on this page.
func scrub(s string) string {
	return absPathRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := absPathRE.FindStringSubmatch(m)
		p := strings.TrimRight(sub[2], "/")
		base := p[strings.LastIndex(p, "/")+1:]
		return sub[1] + "…/" + base
	})
}
