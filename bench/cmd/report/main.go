// Command report turns the benchmark results (JSON lines from measure and
// wfrun) into a table on stdout, docs/benchmarks.md and an SVG bar chart
// of wall and CPU time per scenario and tool. Figures are medians of the
// runs; the chart needs nothing but this program.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/bench/internal/result"
)

const mib = 1 << 20

var (
	tools = []string{"watchfolder", "mc", "rclone"}
	peers = []string{"mc", "rclone"}
	// variants are watchfolder runs with a non-default setting, shown for
	// comparison after the tools (not in the ratios or targets).
	variants = []string{"watchfolder receipts=true", "watchfolder max_files=4", "watchfolder concurrency=2", "watchfolder max_files=8", "watchfolder baseline"}
	// bestPeers are the peers with their documented parallelism settings
	// (WAN scenarios).
	bestPeers = []string{"mc put --parallel 16", "rclone --s3-upload-concurrency 16"}
	allTools  = slices.Concat(tools, bestPeers, variants)
	scenarios = []struct{ id, title, peerCmd string }{
		{"1gib", "one 1 GiB file", "`mc cp FILE`, `rclone copyto FILE`"},
		{"burst", "2,000 files of 256 KiB at once", "`mc mirror DIR`, `rclone copy --transfers 8 DIR`"},
		{"wan1gib", "one 1 GiB file over a WAN (40 ms RTT, 20 MiB/s per connection)", "`mc cp FILE`, `rclone copyto FILE`, `mc put --parallel 16 FILE`, `rclone copyto --s3-upload-concurrency 16 FILE`"},
		{"wanfar", "one 1 GiB file over a farther, thinner WAN (100 ms RTT, 5 MiB/s per connection)", "`mc put --parallel 16 FILE`, `rclone copyto --s3-upload-concurrency 16 FILE`"},
		{"wan500", "500 files of 2 MiB at once over the 40 ms WAN", "`mc mirror DIR`, `rclone copy --transfers 8 DIR`"},
	}
)

type opts struct {
	results, doc, svg, notes string
	partSize                 float64
	concurrency              float64
	versions                 map[string]string
}

func main() {
	var o opts
	o.versions = map[string]string{}
	flag.StringVar(&o.results, "results", "", "results file (JSON lines)")
	flag.StringVar(&o.doc, "doc", "", "write the Markdown report here")
	flag.StringVar(&o.svg, "svg", "", "write the SVG chart here")
	flag.StringVar(&o.notes, "notes", "", "Markdown file with the conditions/notes section to include")
	flag.Float64Var(&o.partSize, "part-size", 16*mib, "watchfolder part size in bytes (resume target: 2 parts)")
	flag.Float64Var(&o.concurrency, "concurrency", 4, "watchfolder parts in flight per file (resume bound)")
	for _, k := range []string{"watchfolder", "mc", "rclone", "minio", "go"} {
		flag.Func(k+"-version", k+" version string", func(s string) error { o.versions[k] = s; return nil })
	}
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// stat is the median of one scenario/tool.
type stat struct {
	n                int
	wall, cpu, rss   float64
	wallMin, wallMax float64
	extra            map[string]float64 // medians
	extraMin         map[string]float64
	extraMax         map[string]float64
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(recs []result.Record) map[string]map[string]*stat {
	type acc struct {
		wall, cpu, rss []float64
		extra          map[string][]float64
	}
	accs := map[[2]string]*acc{}
	for _, r := range recs {
		k := [2]string{r.Scenario, r.Tool}
		a := accs[k]
		if a == nil {
			a = &acc{extra: map[string][]float64{}}
			accs[k] = a
		}
		a.wall = append(a.wall, r.WallS)
		a.cpu = append(a.cpu, r.CPUS())
		a.rss = append(a.rss, r.RSSMiB)
		for ek, ev := range r.Extra {
			a.extra[ek] = append(a.extra[ek], ev)
		}
	}
	out := map[string]map[string]*stat{}
	for k, a := range accs {
		s := &stat{n: len(a.wall), wall: median(a.wall), cpu: median(a.cpu), rss: median(a.rss),
			wallMin: slices.Min(a.wall), wallMax: slices.Max(a.wall),
			extra: map[string]float64{}, extraMin: map[string]float64{}, extraMax: map[string]float64{}}
		for ek, ev := range a.extra {
			s.extra[ek], s.extraMin[ek], s.extraMax[ek] = median(ev), slices.Min(ev), slices.Max(ev)
		}
		if out[k[0]] == nil {
			out[k[0]] = map[string]*stat{}
		}
		out[k[0]][k[1]] = s
	}
	return out
}

func run(o opts) error {
	if o.results == "" {
		return errors.New("-results is required")
	}
	recs, err := result.Load(o.results)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("%s holds no results", o.results)
	}
	sum := summarize(recs)
	tables := tablesMarkdown(sum, o)
	fmt.Println(tables)
	if o.svg != "" {
		if err := os.WriteFile(o.svg, chart(sum), 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
	}
	if o.doc != "" {
		doc, err := document(o, tables)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.doc, doc, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func tablesMarkdown(sum map[string]map[string]*stat, o opts) string {
	var b strings.Builder
	for _, sc := range scenarios {
		byTool := sum[sc.id]
		if byTool == nil {
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n", sc.title)
		b.WriteString("| tool | wall s (min–max) | CPU s (user+sys) | peak RSS MiB | runs |\n|---|---:|---:|---:|---:|\n")
		for _, t := range allTools {
			s := byTool[t]
			if s == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %.2f (%.2f–%.2f) | %.2f | %.1f | %d |\n", t, s.wall, s.wallMin, s.wallMax, s.cpu, s.rss, s.n)
		}
		if wf := byTool["watchfolder"]; wf != nil {
			b.WriteString("\n| watchfolder vs | wall | CPU | peak RSS |\n|---|---:|---:|---:|\n")
			for _, p := range slices.Concat(peers, bestPeers) {
				if s := byTool[p]; s != nil {
					fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", p, ratio(wf.wall, s.wall), ratio(wf.cpu, s.cpu), ratio(wf.rss, s.rss))
				}
			}
		}
		b.WriteString(cpuSplit(byTool))
		b.WriteString("\n")
	}
	if byTool := sum["resume"]; byTool != nil {
		b.WriteString("### resume: SIGKILL at 50 % (+ 0, 1/3, 2/3 part) of a 1 GiB upload, restart\n\n")
		b.WriteString("| tool | file | sent before kill | committed at kill | sent after restart | total sent | all bytes − file | **media re-sent** (PUT bodies − file; min–max) | media re-sent / 16 MiB part | restart→done wall s | CPU s | runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, t := range allTools {
			s := byTool[t]
			if s == nil {
				continue
			}
			e := s.extra
			fmt.Fprintf(&b, "| %s | %.0f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.2f MiB | **%.2f MiB** (%.2f–%.2f) | %.2f | %.2f | %.2f | %d |\n",
				t, e["file_bytes"]/mib, e["sent_before_kill"]/mib, e["committed_at_kill"]/mib, e["sent_after_restart"]/mib, e["total_sent"]/mib,
				e["resent"]/mib, e["resent_media"]/mib, s.extraMin["resent_media"]/mib, s.extraMax["resent_media"]/mib, e["resent_media"]/o.partSize, s.wall, s.cpu, s.n)
		}
		b.WriteString("\n")
	}
	b.WriteString(targets(sum, o))
	return b.String()
}

// cpuSplit shows where the machine's CPU went during each tool's runs:
// the tool, the store (MinIO) and the simulated link (the WAN proxy) share
// the same cores, so their sum over the cores is the shortest wall time
// the machine allows that tool (the floor).
func cpuSplit(byTool map[string]*stat) string {
	var b strings.Builder
	cores := float64(runtime.NumCPU())
	for _, t := range allTools {
		s := byTool[t]
		if s == nil {
			continue
		}
		store, ok := s.extra["store_cpu_s"]
		if !ok {
			continue
		}
		if b.Len() == 0 {
			fmt.Fprintf(&b, "\n| CPU of the run (medians) | tool s | store s | link s | floor: all / %.0f cores | wall / floor |\n|---|---:|---:|---:|---:|---:|\n", cores)
		}
		link := s.extra["link_cpu_s"]
		floor := (s.cpu + store + link) / cores
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f s | %s |\n", t, s.cpu, store, link, floor, ratio(s.wall, floor))
	}
	return b.String()
}

func targets(sum map[string]map[string]*stat, o opts) string {
	var b strings.Builder
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	b.WriteString("### Targets\n\n| target | measured | |\n|---|---|---|\n")
	if m := sum["1gib"]; m["watchfolder"] != nil && m["mc"] != nil {
		wf, mc := m["watchfolder"], m["mc"]
		fmt.Fprintf(&b, "| 1 GiB wall ≤ 1.0 × mc cp | %s | %s |\n", ratio(wf.wall, mc.wall), mark(wf.wall <= mc.wall))
		// /proc/PID/stat counts CPU in 10 ms ticks: equal within that is equal.
		fmt.Fprintf(&b, "| 1 GiB CPU ≤ mc cp | %.2f s vs %.2f s | %s |\n", wf.cpu, mc.cpu, mark(wf.cpu <= mc.cpu+0.01))
		fmt.Fprintf(&b, "| 1 GiB peak RSS ≈ ≤ mc cp | %.1f MiB vs %.1f MiB | %s |\n", wf.rss, mc.rss, mark(wf.rss <= mc.rss*1.1))
	}
	if m := sum["burst"]; m["watchfolder"] != nil {
		best, name := math.Inf(1), ""
		for _, p := range peers {
			if s := m[p]; s != nil && s.wall < best {
				best, name = s.wall, p
			}
		}
		if name != "" {
			fmt.Fprintf(&b, "| burst wall ≤ 1.0 × faster peer (%s) | %s | %s |\n", name, ratio(m["watchfolder"].wall, best), mark(m["watchfolder"].wall <= best))
		}
	}
	if m := sum["wan1gib"]; m["watchfolder"] != nil {
		wf := m["watchfolder"]
		if mc := m["mc"]; mc != nil {
			fmt.Fprintf(&b, "| WAN 1 GiB wall ≤ 0.5 × mc cp (defaults) | %s (%.2f s vs %.2f s) | %s |\n", ratio(wf.wall, mc.wall), wf.wall, mc.wall, mark(wf.wall <= 0.5*mc.wall))
		}
		best, name := math.Inf(1), ""
		for _, p := range slices.Concat(peers, bestPeers) {
			if s := m[p]; s != nil && s.wall < best {
				best, name = s.wall, p
			}
		}
		if name != "" {
			fmt.Fprintf(&b, "| WAN 1 GiB wall ≤ 0.8 × best peer setting (%s) | %s (%.2f s vs %.2f s) | %s |\n", name, ratio(wf.wall, best), wf.wall, best, mark(wf.wall <= 0.8*best))
		}
		if mc := m["mc"]; mc != nil {
			fmt.Fprintf(&b, "| WAN 1 GiB peak RSS ≤ mc cp | %.1f MiB vs %.1f MiB | %s |\n", wf.rss, mc.rss, mark(wf.rss <= mc.rss))
		}
	}
	if m := sum["wan500"]; m["watchfolder"] != nil {
		best, name := math.Inf(1), ""
		for _, p := range peers {
			if s := m[p]; s != nil && s.wall < best {
				best, name = s.wall, p
			}
		}
		if name != "" {
			fmt.Fprintf(&b, "| WAN 500 × 2 MiB wall ≤ 0.7 × faster peer (%s) | %s (%.2f s vs %.2f s) | %s |\n", name, ratio(m["watchfolder"].wall, best), m["watchfolder"].wall, best, mark(m["watchfolder"].wall <= 0.7*best))
		}
	}
	if s := sum["resume"]["watchfolder"]; s != nil {
		r := s.extra["resent_media"]
		fmt.Fprintf(&b, "| resume media re-sent ≤ 2 × part size (%.0f MiB), median | %.2f MiB | %s |\n", 2*o.partSize/mib, r/mib, mark(r <= 2*o.partSize))
		// Each stream holds one part: what a kill can waste is bounded by
		// concurrency × part size.
		worst := s.extraMax["resent_media"]
		fmt.Fprintf(&b, "| resume media re-sent ≤ concurrency × part size (%.0f MiB), every run | worst %.2f MiB | %s |\n", o.concurrency*o.partSize/mib, worst/mib, mark(worst <= o.concurrency*o.partSize))
	}
	return b.String()
}

func machine() string {
	var b strings.Builder
	model := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		if strings.Contains(string(data), " sha_ni") {
			model += " (SHA-NI)"
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(data), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	kernel := "?"
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		kernel = strings.TrimSpace(string(out))
	}
	fmt.Fprintf(&b, "- CPU: %d × %s\n- memory: %s\n- kernel: %s, %s/%s\n", runtime.NumCPU(), model, mem, kernel, runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func document(o opts, tables string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Benchmarks: watchfolder vs mc vs rclone\n\n")
	b.WriteString("Generated by `make bench` (`bench/run.sh`); do not edit by hand, re-run it.\n")
	fmt.Fprintf(&b, "Last run: %s. Figures are medians of the runs.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("## Machine and versions\n\n")
	b.WriteString(machine())
	for _, k := range []string{"watchfolder", "mc", "rclone", "minio", "go"} {
		if v := o.versions[k]; v != "" {
			fmt.Fprintf(&b, "- %s: %s\n", k, v)
		}
	}
	b.WriteString("\n## Results\n\n")
	if o.svg != "" {
		rel, err := filepath.Rel(filepath.Dir(o.doc), o.svg)
		if err != nil {
			rel = o.svg
		}
		fmt.Fprintf(&b, "![wall and CPU time per scenario and tool](%s)\n\n", rel)
	}
	b.WriteString(tables)
	if o.notes != "" {
		notes, err := os.ReadFile(o.notes)
		if err != nil {
			return nil, fmt.Errorf("read notes: %w", err)
		}
		b.WriteString("\n")
		b.Write(notes)
	}
	return b.Bytes(), nil
}

// chart draws one panel per scenario and metric (wall, CPU), a horizontal
// bar per tool.
func chart(sum map[string]map[string]*stat) []byte {
	const (
		panelW, barH, gap, labelW, top = 560, 22, 8, 260, 46
	)
	colors := map[string]string{"watchfolder": "#2b7bb9", "mc": "#c8553d", "rclone": "#7a9e3b",
		"mc put --parallel 16": "#e09a8a", "rclone --s3-upload-concurrency 16": "#b5cc8e",
		"watchfolder max_files=4": "#8fb8da", "watchfolder concurrency=2": "#8fb8da", "watchfolder max_files=8": "#8fb8da", "watchfolder receipts=true": "#8fb8da", "watchfolder baseline": "#b0b0b0"}
	type panel struct {
		title string
		vals  []float64
		names []string
	}
	var panels []panel
	for _, sc := range scenarios {
		byTool := sum[sc.id]
		if byTool == nil {
			continue
		}
		for _, metric := range []string{"wall", "CPU"} {
			p := panel{title: fmt.Sprintf("%s: %s time (s)", sc.title, metric)}
			for _, t := range allTools {
				if s := byTool[t]; s != nil {
					v := s.wall
					if metric == "CPU" {
						v = s.cpu
					}
					p.vals, p.names = append(p.vals, v), append(p.names, t)
				}
			}
			panels = append(panels, p)
		}
	}
	rowsMax := 0
	for _, p := range panels {
		rowsMax = max(rowsMax, len(p.vals))
	}
	panelH := top + rowsMax*(barH+gap) + 10
	cols := 2
	rows := (len(panels) + cols - 1) / cols
	w, h := cols*panelW+20, rows*panelH+40
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="10" y="24" font-size="16" font-weight="bold">watchfolder vs mc vs rclone, local MinIO, direct and through a simulated WAN (median; shorter is better)</text>`+"\n")
	for i, p := range panels {
		x0, y0 := 10+(i%cols)*panelW, 40+(i/cols)*panelH
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0, y0+20, html.EscapeString(p.title))
		maxV := slices.Max(p.vals)
		if maxV <= 0 {
			maxV = 1
		}
		scale := float64(panelW-labelW-70) / maxV
		for j, v := range p.vals {
			y := y0 + top - 14 + j*(barH+gap)
			bw := math.Max(1, v*scale)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x0+labelW-6, y+barH-6, p.names[j])
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0+labelW, y, bw, barH, colors[p.names[j]])
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f</text>`+"\n", float64(x0+labelW)+bw+5, y+barH-6, v)
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
