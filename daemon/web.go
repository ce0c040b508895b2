package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/web"
)

// startWeb serves the status page when [web] listen is set. It returns a
// nil server (whose Close does nothing) when the page is off.
func (d *Daemon) startWeb() (*web.Server, error) {
	cfg := d.Config().Web
	if cfg.Listen == "" {
		return nil, nil
	}
	s, err := web.New(web.Options{Config: cfg, Source: newWebSource(d), Logger: d.log})
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// webSource is the status page's view of the daemon.
type webSource struct {
	d     *Daemon
	hub   *changeHub
	cache pageCache
}

func newWebSource(d *Daemon) *webSource {
	return &webSource{d: d, hub: &changeHub{d: d, subs: map[chan struct{}]struct{}{}}}
}

// pageCache keeps the filtered pages (the costly ones: up to scanBudget
// jobs read) while the per-state counts stay the same. Live pages ask
// again every second while bytes move; the lists they show change only
// when a job changes state, which changes the counts. The TTL bounds what
// a change within a state (a retry's next attempt time) can leave stale.
type pageCache struct {
	mu      sync.Mutex
	counts  uint64
	entries map[string]pageEntry
}

type pageEntry struct {
	at   time.Time
	page *web.Page
}

const (
	pageCacheTTL = 5 * time.Second
	pageCacheMax = 256
)

func (c *pageCache) get(counts uint64, key string) *web.Page {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != counts {
		return nil
	}
	e, ok := c.entries[key]
	if !ok || time.Since(e.at) > pageCacheTTL {
		return nil
	}
	return e.page
}

func (c *pageCache) put(counts uint64, key string, p *web.Page) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != counts || c.entries == nil || len(c.entries) >= pageCacheMax {
		c.counts, c.entries = counts, map[string]pageEntry{}
	}
	c.entries[key] = pageEntry{at: time.Now(), page: p}
}

func (c *pageCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = nil
}

// countsPrint sums up the counts bucket (one small read).
func (s *webSource) countsPrint(ctx context.Context) (uint64, error) {
	counts, err := s.d.store.Counts(ctx)
	if err != nil {
		return 0, err
	}
	return hashCounts(counts), nil
}

func hashCounts(counts map[string]map[state.State]int) uint64 {
	f := fnv.New64a()
	folders := make([]string, 0, len(counts))
	for k := range counts {
		folders = append(folders, k)
	}
	slices.Sort(folders)
	for _, k := range folders {
		for _, st := range state.AllStates() {
			fmt.Fprintf(f, "%s/%s=%d;", k, st, counts[k][st])
		}
	}
	return f.Sum64()
}

// Listing limits. A page of a filtered list is read from the state index
// in chunks (newest first) and filtered here; scanBudget bounds the work
// one request does, so a rare name or folder in a history of millions of
// jobs answers at once with "look further back" rather than scanning it all.
const (
	scanChunk   = 500
	scanBudget  = 5000
	maxPageRows = 500
)

// sourceErr carries a message for the page and the kind of error (web's
// ErrNotFound or ErrConflict) for its status code.
type sourceErr struct {
	kind error
	msg  string
}

func (e *sourceErr) Error() string { return e.msg }
func (e *sourceErr) Unwrap() error { return e.kind }

func (s *webSource) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, state.ErrNotFound):
		return &sourceErr{web.ErrNotFound, s.paths().Replace(err.Error())}
	case errors.Is(err, ErrConflict):
		return &sourceErr{web.ErrConflict, s.paths().Replace(err.Error())}
	}
	return err
}

func (s *webSource) StatusJSON(ctx context.Context) (any, error) { return s.d.status(ctx) }

func (s *webSource) Summary(ctx context.Context) (*web.Summary, error) {
	st, err := s.d.status(ctx)
	if err != nil {
		return nil, err
	}
	sum := &web.Summary{Version: st.Version, Uptime: time.Duration(st.UptimeSeconds * float64(time.Second)),
		QueueDepth: st.QueueDepth}
	for _, s := range state.AllStates() {
		sum.States = append(sum.States, string(s))
	}
	for _, name := range st.Folders {
		f := web.Folder{Name: name, Paused: s.d.pause.paused(name), Counts: map[string]int{}}
		for k, n := range st.Counts[name] {
			f.Counts[string(k)] = n
		}
		for _, t := range st.InFlight {
			if t.Folder != name {
				continue
			}
			f.InFlight = append(f.InFlight, web.Transfer{ID: t.ID, Name: t.RelPath, Destination: t.Destination,
				State: t.State, Size: t.Size, Done: t.BytesDone, Rate: t.Rate,
				ETA: time.Duration(t.ETASeconds * float64(time.Second))})
		}
		sum.Folders = append(sum.Folders, f)
	}
	return sum, nil
}

func (s *webSource) Jobs(ctx context.Context, q web.Query) (page *web.Page, err error) {
	var states []state.State
	for _, name := range q.States {
		st := state.State(name)
		if !validState(st) {
			return nil, &sourceErr{web.ErrNotFound, fmt.Sprintf("unknown state %q", name)}
		}
		states = append(states, st)
	}
	limit := q.Limit
	if limit <= 0 || limit > maxPageRows {
		limit = 50
	}
	cfg := s.d.Config()
	page = &web.Page{}
	var out []*state.Job
	if q.Folder == "" && q.Name == "" && q.Since.IsZero() {
		// Every candidate matches: one index walk of limit+1 jobs.
		jobs, err := s.d.store.List(ctx, state.Filter{States: states, Limit: limit + 1, AfterID: q.Before})
		if err != nil {
			return nil, err
		}
		page.Scanned = len(jobs)
		out = jobs
	} else {
		counts, err := s.countsPrint(ctx)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("%q|%q|%q|%d|%d|%d", q.Folder, q.States, q.Name, q.Since.UnixNano(), q.Before, limit)
		if p := s.cache.get(counts, key); p != nil {
			return p, nil
		}
		defer func() {
			if page != nil {
				s.cache.put(counts, key, page)
			}
		}()
		needle := strings.ToLower(q.Name)
		after, exhausted := q.Before, false
		// The first chunk is the page itself (a common folder fills it at
		// once); later ones grow up to scanChunk.
		want := limit + 1
		for page.Scanned < scanBudget && len(out) <= limit {
			want = min(want, scanBudget-page.Scanned)
			chunk, err := s.d.store.List(ctx, state.Filter{States: states, Limit: want, AfterID: after})
			if err != nil {
				return nil, err
			}
			for _, j := range chunk {
				page.Scanned++
				after = j.ID
				if (q.Folder == "" || j.Folder == q.Folder) && (q.Since.IsZero() || !j.Updated.Before(q.Since)) &&
					(needle == "" || strings.Contains(strings.ToLower(j.RelPath), needle)) {
					out = append(out, j)
					if len(out) > limit {
						break
					}
				}
			}
			if len(chunk) < want {
				exhausted = true
				break
			}
			want = min(2*want, scanChunk)
		}
		if len(out) <= limit && !exhausted && after > 1 {
			page.Next, page.Partial = after, true
		}
	}
	if len(out) > limit {
		out = out[:limit]
		page.Next = out[limit-1].ID
	}
	for _, j := range out {
		page.Jobs = append(page.Jobs, s.view(cfg, j, false))
	}
	return page, nil
}

func (s *webSource) Job(ctx context.Context, id uint64) (*web.Job, error) {
	j, err := s.d.store.Get(ctx, id)
	if err != nil {
		return nil, s.wrap(err)
	}
	v := s.view(s.d.Config(), j, true)
	return &v, nil
}

func (s *webSource) Retry(ctx context.Context, id uint64) error {
	_, err := s.d.Retry(ctx, id)
	return s.wrap(err)
}

func (s *webSource) SetPaused(ctx context.Context, folder string, paused bool) error {
	if folder == "" {
		return &sourceErr{web.ErrNotFound, "no folder named"}
	}
	return s.wrap(s.d.SetPaused(folder, paused))
}

func (s *webSource) Changes(ctx context.Context) <-chan struct{} { return s.hub.subscribe(ctx) }

// view turns a job into the page's shape: paths below the folder, no
// checkpoints, the platform's link for each id.
func (s *webSource) view(cfg *config.Config, j *state.Job, full bool) web.Job {
	p := pathReplacer(cfg)
	v := web.Job{ID: j.ID, Folder: j.Folder, Name: j.RelPath, State: string(j.State), Size: j.Size,
		ModTime: j.ModTime, Created: j.Created, Updated: j.Updated, Error: p.Replace(j.Error),
		Attempts: j.Attempts, SHA256: j.SHA256}
	if !j.State.Terminal() {
		v.NextAttempt = j.NextAttempt
	}
	if f := cfg.Folder(j.Folder); f != nil {
		if j.FinalPath != "" {
			v.FiledAs = filedAs(f, j.FinalPath)
		}
		if j.Sidecar != "" {
			v.Sidecar = filedAs(f, j.Sidecar)
		}
	}
	for _, ds := range j.Destinations {
		wd := web.Dest{Name: ds.Name, Type: ds.Type, State: string(ds.State), VendorID: ds.VendorID,
			Object: ds.Object, Done: ds.BytesDone, Error: p.Replace(ds.Error), Attempts: ds.Attempts}
		if ds.VendorID != "" {
			wd.URL = mediaURL(cfg, ds.Name, ds.Type, ds.VendorID)
		}
		v.Destinations = append(v.Destinations, wd)
	}
	if !full {
		return v
	}
	for _, h := range j.History {
		v.History = append(v.History, web.Event{At: h.At, From: string(h.From), To: string(h.To), Dest: h.Dest,
			Error: p.Replace(h.Error), Note: p.Replace(h.Note)})
	}
	v.Media = webFacts(mediaFacts(j))
	switch j.State {
	case state.Failed:
		v.Reason = p.Replace(reasonText(j, j.Updated))
	case state.Done:
		v.Receipt = string(receipt(j, j.Updated))
	}
	return v
}

func (s *webSource) paths() *strings.Replacer { return pathReplacer(s.d.Config()) }

// pathReplacer turns the absolute paths of the configured folders into
// names a reader of the page knows ("news/sub/clip.mp4", "news/failed").
// Longer paths come first so processed/ inside a folder wins over it.
func pathReplacer(cfg *config.Config) *strings.Replacer {
	type pair struct{ from, to string }
	var pairs []pair
	for i := range cfg.Folders {
		f := &cfg.Folders[i]
		pairs = append(pairs,
			pair{f.Path, f.Name},
			pair{f.ProcessedDir, dirLabel(f, f.ProcessedDir, "processed")},
			pair{f.FailedDir, dirLabel(f, f.FailedDir, "failed")})
	}
	pairs = append(pairs, pair{cfg.StateDir, "[state_dir]"})
	sort.SliceStable(pairs, func(a, b int) bool { return len(pairs[a].from) > len(pairs[b].from) })
	var args []string
	for _, p := range pairs {
		if p.from != "" && p.from != "/" {
			args = append(args, p.from, p.to)
		}
	}
	return strings.NewReplacer(args...)
}

func dirLabel(f *config.Folder, dir, label string) string {
	if rel, err := filepath.Rel(f.Path, dir); err == nil && !strings.HasPrefix(rel, "..") {
		return f.Name + "/" + filepath.ToSlash(rel)
	}
	return f.Name + " (" + label + ")"
}

// filedAs names p relative to the folder it belongs to: "processed/a.mp4".
func filedAs(f *config.Folder, p string) string {
	for _, d := range []struct{ dir, label string }{{f.ProcessedDir, "processed"}, {f.FailedDir, "failed"}, {f.Path, ""}} {
		rel, err := filepath.Rel(d.dir, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		rel = filepath.ToSlash(rel)
		if d.label == "" {
			return rel
		}
		return d.label + "/" + rel
	}
	return filepath.Base(p)
}

// mediaURL is the platform's own page for a media id: [web.media_links]
// by destination name, then by type, then the built-in public pages.
func mediaURL(cfg *config.Config, dest, typ, id string) string {
	tmpl := cfg.Web.MediaLinks[dest]
	if tmpl == "" {
		tmpl = cfg.Web.MediaLinks[typ]
	}
	if tmpl == "" {
		switch typ {
		case "jwplayer":
			tmpl = "https://cdn.jwplayer.com/previews/{id}"
		case "wistia":
			tmpl = "https://home.wistia.com/medias/{id}"
		default:
			return ""
		}
	}
	r := []string{"{id}", url.PathEscape(id)}
	if dc := cfg.Destinations[dest]; dc != nil {
		for _, k := range []string{"publication", "site_id"} {
			if v, ok := dc.Value(k); ok {
				if s, ok := v.(string); ok && s != "" {
					r = append(r, "{"+k+"}", url.PathEscape(s))
				}
			}
		}
	}
	u := strings.NewReplacer(r...).Replace(tmpl)
	if strings.Contains(u, "{") {
		return "" // a placeholder the destination cannot fill
	}
	return u
}

// changeHub tells event-stream subscribers when something visible
// changed. It polls cheap figures (the counts bucket, the live byte
// counters, the pause list) while anyone listens: the pipeline itself
// needs no hook, and an idle page costs nothing.
type changeHub struct {
	d *Daemon

	mu      sync.Mutex
	subs    map[chan struct{}]struct{}
	running bool
}

// changePoll is how often the hub looks; progress bars move at this pace.
const changePoll = 500 * time.Millisecond

func (h *changeHub) subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	if !h.running {
		h.running = true
		go h.poll()
	}
	h.mu.Unlock()
	go func() {
		<-ctx.Done()
		h.mu.Lock()
		delete(h.subs, ch)
		close(ch)
		h.mu.Unlock()
	}()
	return ch
}

func (h *changeHub) poll() {
	t := time.NewTicker(changePoll)
	defer t.Stop()
	last := h.fingerprint()
	for range t.C {
		fp := h.fingerprint()
		h.mu.Lock()
		if len(h.subs) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		if fp != last {
			for ch := range h.subs {
				select {
				case ch <- struct{}{}:
				default: // one pending change is enough
				}
			}
		}
		h.mu.Unlock()
		last = fp
	}
}

// fingerprint sums up what the pages show that can change.
func (h *changeHub) fingerprint() uint64 {
	counts, err := h.d.store.Counts(context.Background())
	if err != nil {
		return 0
	}
	f := fnv.New64a()
	fmt.Fprint(f, hashCounts(counts))
	var prog []string
	h.d.progress.Range(func(k, v any) bool {
		pk := k.(progressKey)
		prog = append(prog, fmt.Sprintf("%d/%s=%d", pk.id, pk.dest, v.(*progress).bytes.Load()))
		return true
	})
	slices.Sort(prog)
	fmt.Fprint(f, strings.Join(prog, ";"), h.d.pause.list())
	return f.Sum64()
}
