package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/watchfolder/watchfolder/config"
)

const xssName = `<img src=x onerror=alert(1)>.mp4`

// WriteUsers writes a users_file with bcrypt entries (cheap cost: tests).
// Each entry is "name:password[:role]".
func WriteUsers(t testing.TB, entries ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n")
	for _, e := range entries {
		parts := strings.SplitN(e, ":", 3)
		h, err := bcrypt.GenerateFromPassword([]byte(parts[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(parts[0] + ":" + string(h))
		if len(parts) == 3 {
			b.WriteString(":" + parts[2])
		}
		b.WriteString("\n")
	}
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestServer(t testing.TB, cfg config.Web, src Source) *Server {
	t.Helper()
	s, err := New(Options{Config: cfg, Source: src, Logger: quietLog()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// SampleSource is a folder with one job in every interesting state,
// including a file whose name is an HTML injection attempt.
func SampleSource() *FakeSource {
	f := NewFakeSource("news", "sport")
	now := time.Now()
	f.Put(Job{ID: 1, Folder: "news", Name: "interviews/mayor.mp4", State: "done", Size: 734003200, Updated: now.Add(-40 * time.Minute),
		Destinations: []Dest{
			{Name: "archive", Type: "s3", State: "done", Object: "s3://media-archive/news/interviews/mayor.mp4"},
			{Name: "jw", Type: "jwplayer", State: "done", VendorID: "m2c4Pq4Z", URL: "https://cdn.jwplayer.com/previews/m2c4Pq4Z"},
		},
		Receipt: `{"job": 1}`})
	f.Put(Job{ID: 2, Folder: "news", Name: "flood-report.mov", State: "failed", Size: 52428800, Updated: now.Add(-20 * time.Minute),
		Error:        "jw: the platform refused the media: Media must be at least 2 seconds long",
		FiledAs:      "failed/flood-report.mov",
		Destinations: []Dest{{Name: "jw", Type: "jwplayer", State: "failed", Error: "Media must be at least 2 seconds long"}},
		History: []Event{{At: now.Add(-25 * time.Minute), To: "queued"}, {At: now.Add(-20 * time.Minute), From: "registering", To: "failed",
			Error: "Media must be at least 2 seconds long"}},
		Reason: "watchfolder could not deliver this file.\n\nLast error:  Media must be at least 2 seconds long\n"})
	f.Put(Job{ID: 3, Folder: "news", Name: xssName, State: "failed", Size: 1024, Updated: now.Add(-10 * time.Minute),
		Error: "refused: " + xssName})
	f.Put(Job{ID: 4, Folder: "news", Name: "evening/bulletin-1900.mxf", State: "uploading", Size: 4 << 30,
		Destinations: []Dest{{Name: "archive", Type: "s3", State: "uploading", Done: 1 << 30}}})
	f.Put(Job{ID: 5, Folder: "sport", Name: "derby-highlights.mp4", State: "queued", Size: 300 << 20})
	f.SetInFlight("news", Transfer{ID: 4, Name: "evening/bulletin-1900.mxf", Destination: "archive", State: "uploading",
		Size: 4 << 30, Done: 1 << 30, Rate: 48 << 20, ETA: 64 * time.Second})
	return f
}

func get(t testing.TB, h http.Handler, target string, mod ...func(*http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Host = "127.0.0.1:8080"
	for _, m := range mod {
		m(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestNewRefusesReachableListenerWithoutAccessControl(t *testing.T) {
	users := WriteUsers(t, "ed:pw")
	lo := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	for _, tc := range []struct {
		name string
		cfg  config.Web
		ok   bool
	}{
		{"any address, no auth", config.Web{Listen: "0.0.0.0:8080"}, false},
		{"empty host, no auth", config.Web{Listen: ":8080"}, false},
		{"lan address, no auth", config.Web{Listen: "192.168.1.5:8080"}, false},
		{"loopback v4", config.Web{Listen: "127.0.0.1:8080"}, true},
		{"loopback v6", config.Web{Listen: "[::1]:8080"}, true},
		{"localhost", config.Web{Listen: "localhost:8080"}, true},
		{"any address, users file", config.Web{Listen: "0.0.0.0:8080", UsersFile: users}, true},
		{"any address, proxy", config.Web{Listen: "0.0.0.0:8080", TrustedProxyHeader: "X-Forwarded-User", TrustedProxies: lo}, true},
		{"proxy header without proxies", config.Web{Listen: "0.0.0.0:8080", TrustedProxyHeader: "X-Forwarded-User"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Config: tc.cfg, Source: NewFakeSource(), Logger: quietLog()})
			if (err == nil) != tc.ok {
				t.Fatalf("New(%+v) err = %v, want ok=%v", tc.cfg, err, tc.ok)
			}
		})
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, SampleSource()).Handler()
	if w := get(t, h, "/static/"); w.Code != http.StatusNotFound {
		t.Errorf("/static/ lists the assets: %d", w.Code)
	}
	for _, path := range []string{"/", "/jobs", "/jobs/2", "/jobs/999", "/folders/news", "/static/app.js", "/healthz", "/api/v1/status"} {
		w := get(t, h, path)
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", path, w.Header())
		}
	}
}

// No page may carry inline script or style: the CSP would block them, and
// their absence is what makes the CSP safe to be strict.
func TestPagesHaveNoInlineScriptOrStyle(t *testing.T) {
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, SampleSource()).Handler()
	inline := regexp.MustCompile(`(?i)<script>|<script[^>]*>[^<]|<[a-z][^>]*\s(on[a-z]+|style)=|<style`)
	for _, path := range []string{"/", "/jobs?q=a", "/jobs/1", "/jobs/2", "/jobs/3", "/folders/news"} {
		body := get(t, h, path).Body.String()
		if m := inline.FindString(body); m != "" {
			t.Errorf("%s: inline script/style %q", path, m)
		}
	}
}

func TestNamesAreEscaped(t *testing.T) {
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, SampleSource()).Handler()
	for _, path := range []string{"/", "/jobs?state=failed", "/jobs/3", "/jobs?q=" + url.QueryEscape("<img")} {
		w := get(t, h, path)
		body := w.Body.String()
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d", path, w.Code)
		}
		if strings.Contains(body, "<img") {
			t.Errorf("%s: raw <img in the page", path)
		}
		if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;.mp4") {
			t.Errorf("%s: escaped name missing", path)
		}
	}
}

func TestPagesShowWhatEditorsAskFor(t *testing.T) {
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, SampleSource()).Handler()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{"evening/bulletin-1900.mxf", "<progress", "48.0 MiB/s", "1m04s", "archive",
			"interviews/mayor.mp4", `href="https://cdn.jwplayer.com/previews/m2c4Pq4Z"`, "m2c4Pq4Z",
			"Media must be at least 2 seconds long", "derby-highlights.mp4"}},
		{"/jobs/2", []string{"Why it failed", "Media must be at least 2 seconds long", "failed/flood-report.mov",
			"registering → failed", "watchfolder could not deliver this file."}},
		{"/jobs/1", []string{"Receipt", "s3://media-archive/news/interviews/mayor.mp4"}},
		{"/jobs?state=failed", []string{"flood-report.mov"}},
	} {
		body := get(t, h, tc.path).Body.String()
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: missing %q", tc.path, w)
			}
		}
	}
	// Editors on an open loopback page see no operator buttons.
	if body := get(t, h, "/").Body.String(); strings.Contains(body, "op-pause") {
		t.Error("local editor sees the pause button")
	}
}

// The open loopback page does not answer requests for other host names
// (DNS rebinding: a site's name pointed at 127.0.0.1).
func TestOpenPageOnlyForLoopbackHostNames(t *testing.T) {
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:8080"}, SampleSource()).Handler()
	for host, ok := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true, "LOCALHOST": true,
		"evil.example:8080": false, "192.168.1.5:8080": false,
	} {
		w := get(t, h, "/api/v1/status", func(r *http.Request) { r.Host = host })
		if (w.Code == http.StatusOK) != ok {
			t.Errorf("Host %s: %d", host, w.Code)
		}
	}
}

func TestPagingNewestFirst(t *testing.T) {
	f := NewFakeSource("news")
	for i := 1; i <= 120; i++ {
		f.Put(Job{ID: uint64(i), Folder: "news", Name: fmt.Sprintf("clip-%03d.mp4", i), State: "done"})
	}
	h := newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, f).Handler()
	next := "/jobs?folder=news"
	var pages [][]string
	rowRE := regexp.MustCompile(`href="/jobs/(\d+)"`)
	nextRE := regexp.MustCompile(`href="(/jobs\?[^"]*before=\d+[^"]*)" rel="next"`)
	for next != "" && len(pages) < 5 {
		body := get(t, h, next).Body.String()
		var ids []string
		for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
			ids = append(ids, m[1])
		}
		pages = append(pages, ids)
		next = ""
		if m := nextRE.FindStringSubmatch(body); m != nil {
			next = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(pages) != 3 || len(pages[0]) != 50 || len(pages[1]) != 50 || len(pages[2]) != 20 {
		t.Fatalf("pages: %d (%v)", len(pages), pages)
	}
	if pages[0][0] != "120" || pages[1][0] != "70" || pages[2][19] != "1" {
		t.Errorf("order: first %s, second page starts %s, last %s", pages[0][0], pages[1][0], pages[2][19])
	}
}

func TestUsersFileAuth(t *testing.T) {
	src := SampleSource()
	users := WriteUsers(t, "ed:edpw", "op:oppw:operator")
	s := newTestServer(t, config.Web{Listen: "0.0.0.0:0", UsersFile: users, SessionTTL: time.Hour}, src)
	h := s.Handler()

	if w := get(t, h, "/", func(r *http.Request) { r.Header.Set("Accept", "text/html") }); w.Code != http.StatusSeeOther ||
		!strings.HasPrefix(w.Header().Get("Location"), "/login?next=") {
		t.Fatalf("anonymous page: %d %s", w.Code, w.Header().Get("Location"))
	}
	for _, p := range []string{"/api/v1/status", "/events", "/jobs/1"} {
		if w := get(t, h, p, func(r *http.Request) { r.Header.Set("Accept", "application/json") }); w.Code != http.StatusUnauthorized {
			t.Errorf("anonymous %s: %d", p, w.Code)
		}
	}
	if w := get(t, h, "/healthz"); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "ok" {
		t.Errorf("healthz: %d %q", w.Code, w.Body.String())
	}
	if w := get(t, h, "/api/v1/status", func(r *http.Request) { r.SetBasicAuth("ed", "edpw") }); w.Code != http.StatusOK ||
		!strings.Contains(w.Body.String(), `"version": "test"`) {
		t.Errorf("basic auth status: %d %s", w.Code, w.Body.String())
	}

	login := func(user, pw, remote string) *httptest.ResponseRecorder {
		form := url.Values{"user": {user}, "password": {pw}, "next": {"/jobs/2"}}
		r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := login("ed", "edpw", "192.0.2.1:1000")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/jobs/2" {
		t.Fatalf("login: %d %s", w.Code, w.Header().Get("Location"))
	}
	edCookie := w.Result().Cookies()[0]
	if !edCookie.HttpOnly || edCookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie flags: %+v", edCookie)
	}
	withCookie := func(c *http.Cookie) func(*http.Request) {
		return func(r *http.Request) { r.AddCookie(c); r.Header.Set("Accept", "application/json") }
	}
	body := get(t, h, "/jobs/2", withCookie(edCookie)).Body.String()
	if !strings.Contains(body, "Why it failed") || strings.Contains(body, "op-retry") {
		t.Errorf("editor's failed page: retry button shown or reason missing")
	}
	opCookie := login("op", "oppw", "192.0.2.1:1000").Result().Cookies()[0]
	body = get(t, h, "/jobs/2", withCookie(opCookie)).Body.String()
	if !strings.Contains(body, "op-retry") {
		t.Fatalf("operator sees no retry button")
	}
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if tok == nil {
		t.Fatal("no CSRF token in the operator's form")
	}

	post := func(path, csrf string, c *http.Cookie, mod ...func(*http.Request)) int {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.AddCookie(c)
		for _, m := range mod {
			m(r)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if code := post("/jobs/2/retry", tok[1], edCookie); code != http.StatusForbidden {
		t.Errorf("editor retry: %d", code)
	}
	if code := post("/jobs/2/retry", "forged", opCookie); code != http.StatusForbidden {
		t.Errorf("retry with a wrong token: %d", code)
	}
	crossSite := func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }
	if code := post("/jobs/2/retry", tok[1], opCookie, crossSite); code != http.StatusForbidden {
		t.Errorf("cross-site retry: %d", code)
	}
	if got := src.retried(); len(got) != 0 {
		t.Fatalf("refused requests retried %v", got)
	}
	if code := post("/jobs/2/retry", tok[1], opCookie); code != http.StatusSeeOther {
		t.Errorf("operator retry: %d", code)
	}
	if got := src.retried(); len(got) != 1 || got[0] != 2 {
		t.Errorf("retried %v, want [2]", got)
	}
	if code := post("/folders/news/pause", tok[1], opCookie); code != http.StatusSeeOther || !src.paused("news") {
		t.Errorf("pause: %d paused=%v", code, src.paused("news"))
	}

	// A forged or expired cookie is nobody.
	opHash, _, _ := s.users.lookup("op")
	bad := &http.Cookie{Name: sessionCookie, Value: s.sessionValue("op", opHash.hash, time.Now().Add(-time.Minute))}
	if w := get(t, h, "/api/v1/status", withCookie(bad)); w.Code != http.StatusUnauthorized {
		t.Errorf("expired session: %d", w.Code)
	}
	tampered := *opCookie
	tampered.Value = strings.Replace(tampered.Value, tampered.Value[:2], "ZW", 1)
	if w := get(t, h, "/api/v1/status", withCookie(&tampered)); w.Code != http.StatusUnauthorized {
		t.Errorf("tampered session: %d", w.Code)
	}

	// A new password ends the user's sessions (the file is read again
	// when it changes).
	if w := get(t, h, "/api/v1/status", withCookie(edCookie)); w.Code != http.StatusOK {
		t.Fatalf("editor session before the change: %d", w.Code)
	}
	rewritten := WriteUsers(t, "ed:new-pw", "op:oppw:operator")
	data, _ := os.ReadFile(rewritten)
	if err := os.WriteFile(users, data, 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	os.Chtimes(users, future, future)
	s.users.mu.Lock()
	s.users.checked = time.Time{} // do not wait for the recheck interval
	s.users.mu.Unlock()
	if w := get(t, h, "/api/v1/status", withCookie(edCookie)); w.Code != http.StatusUnauthorized {
		t.Errorf("editor session after a new password: %d", w.Code)
	}

	// Login rate limit: after loginMaxFailures wrong passwords from one
	// address, even the right password is refused for a while.
	for i := 0; i < loginMaxFailures; i++ {
		if w := login("op", "wrong", "198.51.100.7:1"); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, w.Code)
		}
	}
	if w := login("ed", "edpw", "198.51.100.7:1"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("after %d failures: %d", loginMaxFailures, w.Code)
	}
	// ...and the user name under attack is locked for other addresses too.
	if w := login("op", "oppw", "203.0.113.9:1"); w.Code != http.StatusTooManyRequests {
		t.Errorf("locked name from another address: %d", w.Code)
	}
}

func TestTrustedProxyHeader(t *testing.T) {
	cfg := config.Web{Listen: "0.0.0.0:0", TrustedProxyHeader: "X-Forwarded-User",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, ProxyOperators: []string{"olga"}}
	h := newTestServer(t, cfg, SampleSource()).Handler()
	from := func(remote, user string) func(*http.Request) {
		return func(r *http.Request) {
			r.RemoteAddr = remote
			if user != "" {
				r.Header.Set("X-Forwarded-User", user)
			}
		}
	}
	for _, tc := range []struct {
		name, remote, user string
		code               int
		operator           bool
	}{
		{"trusted proxy, editor", "192.0.2.10:5000", "eddie", http.StatusOK, false},
		{"trusted proxy, operator", "192.0.2.10:5000", "olga", http.StatusOK, true},
		{"trusted proxy, no user", "192.0.2.10:5000", "", http.StatusUnauthorized, false},
		{"header from elsewhere", "198.51.100.1:5000", "olga", http.StatusUnauthorized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := get(t, h, "/jobs/2", from(tc.remote, tc.user))
			if w.Code != tc.code {
				t.Fatalf("code %d, want %d", w.Code, tc.code)
			}
			if got := strings.Contains(w.Body.String(), "op-retry"); got != tc.operator {
				t.Errorf("retry button shown=%v, want %v", got, tc.operator)
			}
		})
	}
}

func TestEventStream(t *testing.T) {
	src := SampleSource()
	srv := httptest.NewServer(newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, src).Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Keep bumping until the subscription is in place and one arrives.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if l == "event: change" {
				return
			}
		case <-tick.C:
			src.Bump()
		case <-ctx.Done():
			t.Fatal("no change event")
		}
	}
}

func TestScrub(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"open /etc/watchfolder/secret.key: permission denied", "open …/secret.key: permission denied"},
		{`moved to "/srv/other/x.mp4"`, `moved to "…/x.mp4"`},
		{"see https://example.com/a/b and s3://bucket/key/x", "see https://example.com/a/b and s3://bucket/key/x"},
		{"news/sub/clip.mp4 failed", "news/sub/clip.mp4 failed"},
		{"/single", "/single"},
	} {
		if got := scrub(tc.in); got != tc.want {
			t.Errorf("scrub(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/jobs/2": "/jobs/2", "": "/", "//evil.example/": "/", "/\\evil": "/", "https://evil.example/": "/", "jobs": "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseUsers(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	for _, tc := range []struct {
		name, data string
		ok         bool
		role       Role
	}{
		{"editor by default", "a:" + string(h), true, RoleEditor},
		{"operator", "a:" + string(h) + ":operator", true, RoleOperator},
		{"unknown role", "a:" + string(h) + ":admin", false, 0},
		{"md5 entry refused", "a:$apr1$abc$def", false, 0},
		{"plain text refused", "a:secret", false, 0},
		{"comment and blank", "# x\n\na:" + string(h), true, RoleEditor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			users, err := parseUsers([]byte(tc.data))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "$apr1$abc$def") {
				t.Errorf("error shows the hash: %v", err)
			}
			if tc.ok && users["a"].role != tc.role {
				t.Errorf("role %v, want %v", users["a"].role, tc.role)
			}
		})
	}
}
