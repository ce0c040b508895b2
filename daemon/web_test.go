package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/web"
)

// newWebDaemon builds a daemon (not running) whose store the tests fill
// directly, with folders "news" and "sport".
func newWebDaemon(t testing.TB, extra string) (*Daemon, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(fmt.Appendf(nil, `
state_dir = %q
control_socket = ""
%s
[[folder]]
name = "news"
path = %q
destinations = ["archive", "jw"]
[[folder]]
name = "sport"
path = %q
failed_dir = %q
destinations = ["archive"]
[destination.archive]
type = "s3"
bucket = "wf-web"
endpoint = "http://127.0.0.1:1"
access_key_id = "k"
secret_access_key = "s"
[destination.jw]
type = "jwplayer"
site_id = "AbCd1234"
api_secret = "not-a-real-secret"
`, filepath.Join(dir, "state"), extra, filepath.Join(dir, "news"), filepath.Join(dir, "sport"), filepath.Join(dir, "elsewhere", "sport-failed")), "web.toml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.store.Close() })
	return d, dir
}

// addJobs creates n jobs; folderOf and nameOf pick each one's folder and
// file name from its 0-based index.
func addJobs(t testing.TB, d *Daemon, n int, folderOf func(int) string, nameOf func(int) string) {
	t.Helper()
	jobs := make([]*state.Job, n)
	for i := range jobs {
		f := folderOf(i)
		jobs[i] = &state.Job{Folder: f, RelPath: nameOf(i), Path: "/srv/" + f + "/" + nameOf(i), Size: int64(i), State: state.Queued}
	}
	for len(jobs) > 0 {
		k := min(len(jobs), 10000)
		if err := d.store.CreateMany(context.Background(), jobs[:k]); err != nil {
			t.Fatal(err)
		}
		jobs = jobs[k:]
	}
}

func TestWebSourcePagesNewestFirst(t *testing.T) {
	d, _ := newWebDaemon(t, "")
	folderOf := func(i int) string {
		if i%100 == 0 {
			return "sport"
		}
		return "news"
	}
	addJobs(t, d, 1200, folderOf, func(i int) string { return fmt.Sprintf("clip-%04d.mp4", i) })
	src := newWebSource(d)
	ctx := context.Background()

	for _, tc := range []struct {
		name  string
		q     web.Query
		total int
	}{
		{"everything", web.Query{Limit: 50}, 1200},
		{"one state", web.Query{States: []string{"queued"}, Limit: 50}, 1200},
		{"rare folder", web.Query{Folder: "sport", Limit: 5}, 12},
		{"name", web.Query{Name: "CLIP-01", Limit: 7}, 100},
		{"no such state", web.Query{States: []string{"done"}, Limit: 50}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen, last := 0, uint64(0)
			q := tc.q
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				p, err := src.Jobs(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Jobs) > q.Limit {
					t.Fatalf("page of %d, limit %d", len(p.Jobs), q.Limit)
				}
				for _, j := range p.Jobs {
					if last != 0 && j.ID >= last {
						t.Fatalf("job %d after %d: not newest first", j.ID, last)
					}
					last = j.ID
					if q.Folder != "" && j.Folder != q.Folder || q.Name != "" && !strings.Contains(strings.ToLower(j.Name), strings.ToLower(q.Name)) {
						t.Fatalf("job %d (%s/%s) does not match %+v", j.ID, j.Folder, j.Name, q)
					}
					seen++
				}
				if p.Next == 0 {
					break
				}
				q.Before = p.Next
			}
			if seen != tc.total {
				t.Errorf("saw %d jobs, want %d", seen, tc.total)
			}
		})
	}
}

// A search for something rare in a long history answers after scanBudget
// jobs with a cursor to look further, instead of reading them all.
func TestWebSourceSearchIsBounded(t *testing.T) {
	d, _ := newWebDaemon(t, "")
	n := scanBudget + 1500
	addJobs(t, d, n, func(int) string { return "news" }, func(i int) string {
		if i == 10 {
			return "needle.mp4"
		}
		return fmt.Sprintf("clip-%05d.mp4", i)
	})
	src := newWebSource(d)
	p, err := src.Jobs(context.Background(), web.Query{Name: "needle", Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Jobs) != 0 || !p.Partial || p.Next == 0 || p.Scanned != scanBudget {
		t.Fatalf("first page: %d jobs, partial %v, next %d, scanned %d", len(p.Jobs), p.Partial, p.Next, p.Scanned)
	}
	p, err = src.Jobs(context.Background(), web.Query{Name: "needle", Limit: 50, Before: p.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Jobs) != 1 || p.Jobs[0].Name != "needle.mp4" || p.Next != 0 || p.Partial {
		t.Fatalf("second page: %+v", p)
	}
}

// Pages carry no absolute paths and no secrets: the folders' paths become
// their names, the failed dir outside the folder a label.
func TestWebSourceViewHidesPathsAndSecrets(t *testing.T) {
	d, dir := newWebDaemon(t, "")
	cfg := d.Config()
	news, sport := cfg.Folder("news"), cfg.Folder("sport")
	j := &state.Job{Folder: "sport", RelPath: "a/b.mp4", Path: filepath.Join(sport.Path, "a/b.mp4"), Size: 1, State: state.Queued,
		Destinations: []state.Dest{{Name: "archive", Type: "s3", State: state.DestPending,
			Checkpoint: []byte(`{"upload_id":"u","extra":{"secret_token":"hunter2"}}`)}}}
	if err := d.store.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(sport.FailedDir, "a/b.mp4")
	for _, st := range []state.State{state.Uploading, state.Moving, state.Failed} {
		if _, err := d.store.Update(context.Background(), j.ID, func(j *state.Job) error {
			j.State = st
			j.Error = "open " + j.Path + ": permission denied (also " + news.Path + "/x and /etc/watchfolder/token)"
			j.FinalPath = final
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	src := newWebSource(d)
	v, err := src.Job(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.FiledAs != "failed/a/b.mp4" {
		t.Errorf("FiledAs %q", v.FiledAs)
	}
	all := fmt.Sprintf("%+v", *v)
	for _, bad := range []string{dir, "hunter2", "upload_id"} {
		if strings.Contains(all, bad) {
			t.Errorf("view contains %q:\n%s", bad, all)
		}
	}
	if !strings.Contains(v.Error, "open sport/a/b.mp4: permission denied (also news/x") {
		t.Errorf("error %q", v.Error)
	}
	if !strings.Contains(v.Reason, "watchfolder could not deliver this file.") || !strings.Contains(v.Reason, "File:        a/b.mp4") {
		t.Errorf("reason %q", v.Reason)
	}

	if _, err := src.Job(context.Background(), 999); !errors.Is(err, web.ErrNotFound) {
		t.Errorf("missing job: %v", err)
	}
	if err := src.Retry(context.Background(), 999); !errors.Is(err, web.ErrNotFound) {
		t.Errorf("retry of a missing job: %v", err)
	}
	if err := src.SetPaused(context.Background(), "nope", true); !errors.Is(err, web.ErrNotFound) {
		t.Errorf("pause of a missing folder: %v", err)
	}
}

func TestMediaURL(t *testing.T) {
	d, _ := newWebDaemon(t, `[web.media_links]
archive = "https://store.example/view/{id}"
jw = "https://dashboard.example/p/{site_id}/media/{id}"
bluebillywig = "https://{publication}.example/clip/{id}"`)
	cfg := d.Config()
	for _, tc := range []struct{ dest, typ, id, want string }{
		{"jw", "jwplayer", "m2c4Pq4Z", "https://dashboard.example/p/AbCd1234/media/m2c4Pq4Z"},
		{"jw2", "jwplayer", "m2c4Pq4Z", "https://cdn.jwplayer.com/previews/m2c4Pq4Z"},
		{"w", "wistia", "e4a27b971d", "https://home.wistia.com/medias/e4a27b971d"},
		{"archive", "s3", "k", "https://store.example/view/k"},
		{"bb", "bluebillywig", "12/34", ""}, // not configured: no publication to fill in
		{"sky", "skylark", "asse_1", ""},
	} {
		if got := mediaURL(cfg, tc.dest, tc.typ, tc.id); got != tc.want {
			t.Errorf("mediaURL(%s, %s, %s) = %q, want %q", tc.dest, tc.typ, tc.id, got, tc.want)
		}
	}
}

func TestWebChangesFollowTheStore(t *testing.T) {
	d, _ := newWebDaemon(t, "")
	src := newWebSource(d)
	ctx, cancel := context.WithCancel(context.Background())
	ch := src.Changes(ctx)
	// New jobs keep coming until one is reported: the hub's first look
	// may come after the first job.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for n := 0; ; n++ {
		select {
		case <-ch:
		case <-tick.C:
			addJobs(t, d, 1, func(int) string { return "news" }, func(int) string { return fmt.Sprintf("new-%d.mp4", n) })
			continue
		case <-deadline:
			t.Fatal("no change reported after new jobs")
		}
		break
	}
	cancel()
	for range ch { // closed once the subscriber is gone
	}
}

// BenchmarkWebJobs measures the status page's queries on a large history
// (WATCHFOLDER_BENCH_JOBS jobs, default 1,000,000; building it takes a
// while): every page must cost about the same however long the history.
func BenchmarkWebJobs(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("WATCHFOLDER_BENCH_JOBS"); v != "" {
		fmt.Sscan(v, &n)
	}
	d, _ := newWebDaemon(b, "")
	addJobs(b, d, n, func(i int) string {
		if i%1000 == 0 {
			return "sport"
		}
		return "news"
	}, func(i int) string { return fmt.Sprintf("day-%03d/clip-%07d.mp4", i/5000, i) })
	src := newWebSource(d)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		q    web.Query
	}{
		{"newest", web.Query{Limit: 50}},
		{"deep-page", web.Query{Limit: 50, Before: uint64(n / 2)}},
		{"state", web.Query{States: []string{"queued"}, Limit: 50}},
		{"folder-common", web.Query{Folder: "news", Limit: 50}},
		{"folder-rare", web.Query{Folder: "sport", Limit: 50}},
		{"name-search", web.Query{Name: "clip-0000042", Limit: 50}},
		{"finished-today-none", web.Query{States: []string{"done"}, Since: time.Now().Add(-time.Hour), Limit: 10}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				src.cache.reset() // the cost of a first look
				if _, err := src.Jobs(ctx, bc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What a live page pays per refresh while only bytes move.
	b.Run("folder-rare-cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := src.Jobs(ctx, web.Query{Folder: "sport", Limit: 50}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("job", func(b *testing.B) {
		for b.Loop() {
			if _, err := src.Job(ctx, uint64(n/3)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("summary", func(b *testing.B) {
		for b.Loop() {
			if _, err := src.Summary(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestStartWeb(t *testing.T) {
	d, _ := newWebDaemon(t, "")
	if s, err := d.startWeb(); s != nil || err != nil {
		t.Fatalf("web off: %v %v", s, err)
	}
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	d, _ = newWebDaemon(t, "[web]\nlisten = \""+addr+"\"\nusers_file = \"/nonexistent/web.htpasswd\"\n")
	if _, err := d.startWeb(); err == nil || !strings.Contains(err.Error(), "users_file") {
		t.Fatalf("missing users_file: %v", err)
	}
	d, _ = newWebDaemon(t, "[web]\nlisten = \""+addr+"\"\n")
	s, err := d.startWeb()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"folders": [`) || !strings.Contains(string(body), `"news"`) {
		t.Errorf("status: %d %s", resp.StatusCode, body)
	}
}
