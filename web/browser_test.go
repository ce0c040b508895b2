package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/internal/testenv"
)

// One headless chromium serves every browser test of the binary (each
// test gets its own browser context: separate cookies); it starts on the
// first use and stops after the tests.
var chromium struct {
	once    sync.Once
	ctx     context.Context
	cancel  func()
	dataDir string
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chromium.cancel != nil {
		chromium.cancel()
		os.RemoveAll(chromium.dataDir)
	}
	os.Exit(code)
}

// Browser returns a fresh tab in its own browser context, closed at the
// end of the test. Chromium comes from the Debian package the test setup
// installs (make test-deps).
func Browser(t testing.TB) context.Context {
	t.Helper()
	chromium.once.Do(startChromium)
	if chromium.err != nil {
		t.Fatalf("chromium: %v", chromium.err)
	}
	tab, cancel := chromedp.NewContext(chromium.ctx, chromedp.WithNewBrowserContext())
	ctx, cancelT := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(func() { cancelT(); cancel() })
	// A dialog would block the page. An alert means injected script ran;
	// a confirm is an operator button's question, answered yes.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	alerts := make(chan string, 8)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			if ev.Type == page.DialogTypeAlert {
				select {
				case alerts <- ev.Message:
				default:
				}
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: ev.Type == page.DialogTypeConfirm})
		}
	}()
	t.Cleanup(func() {
		select {
		case m := <-alerts:
			t.Errorf("a page opened an alert: %q", m)
		default:
		}
	})
	return ctx
}

func startChromium() {
	path, err := exec.LookPath("chromium")
	if err != nil {
		chromium.err = err
		return
	}
	dir, err := os.MkdirTemp("", "wf-chromium-")
	if err != nil {
		chromium.err = err
		return
	}
	chromium.dataDir = dir
	// The test network is closed: everything that would call home is off.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(alloc)
	if err := chromedp.Do(bctx); err != nil {
		cancelB()
		cancelAlloc()
		chromium.err = err
		return
	}
	chromium.ctx = bctx
	chromium.cancel = func() { cancelB(); cancelAlloc() }
}

// Screenshot saves a full-page PNG in the test's artifact directory (kept
// with `go test -artifacts`) and returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	return p
}

// WaitJS evaluates a JavaScript expression until it is true. Errors while
// the page navigates (a form was submitted) are retried.
func WaitJS(t testing.TB, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, lastErr, body)
}

func evalJS[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func openPage(t testing.TB, src Source) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(newTestServer(t, config.Web{Listen: "127.0.0.1:0"}, src).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestBrowserOverviewAndScreenshot(t *testing.T) {
	srv := openPage(t, SampleSource())
	ctx := Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, ctx, "the in-flight table", `!!document.querySelector("table.inflight progress")`)
	text := evalJS[string](t, ctx, `document.querySelector("main").innerText`)
	for _, want := range []string{"evening/bulletin-1900.mxf", "48.0 MiB/s", "interviews/mayor.mp4", "m2c4Pq4Z",
		"Media must be at least 2 seconds long", xssName} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	// The hostile name is text, not an element.
	if n := evalJS[int](t, ctx, `document.querySelectorAll("main img").length`); n != 0 {
		t.Errorf("%d <img> elements in the page", n)
	}
	WaitJS(t, ctx, "the event stream", `document.getElementById("live").classList.contains("on")`)
	p := Screenshot(t, ctx, "status-page.png")
	if os.Getenv("WATCHFOLDER_UPDATE_SCREENSHOT") != "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		if err := os.WriteFile(filepath.Join(root, "docs", "status-page.png"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrowserXSSNameRendersAsText(t *testing.T) {
	srv := openPage(t, SampleSource())
	ctx := Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/jobs/3")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, ctx, "the file name", `!!document.querySelector("h1.filename")`)
	name := evalJS[string](t, ctx, `document.querySelector("h1.filename").firstChild.textContent.trim()`)
	if name != xssName {
		t.Errorf("heading shows %q, want %q", name, xssName)
	}
	if n := evalJS[int](t, ctx, `document.querySelectorAll("img").length`); n != 0 {
		t.Errorf("%d <img> elements in the page", n)
	}
	Screenshot(t, ctx, "xss-name.png")
}

func TestBrowserFailedFileShowsReason(t *testing.T) {
	srv := openPage(t, SampleSource())
	ctx := Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/jobs/2")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, ctx, "the reason", `!!document.querySelector(".failure .reason")`)
	got := evalJS[string](t, ctx, `document.querySelector(".failure .reason").innerText`)
	if want := "jw: the platform refused the media: Media must be at least 2 seconds long"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	// A local (open) page is view-only: no retry button.
	if n := evalJS[int](t, ctx, `document.querySelectorAll("button.op-retry").length`); n != 0 {
		t.Error("retry button on a view-only page")
	}
	Screenshot(t, ctx, "failed-file.png")
}

// A file moves from uploading to done while the page is open; the page
// follows without being reloaded.
func TestBrowserLiveUpdateWithoutReload(t *testing.T) {
	src := SampleSource()
	srv := openPage(t, src)
	ctx := Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/folders/news")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, ctx, "the event stream", `document.getElementById("live").classList.contains("on")`)
	// A reload would lose this.
	evalJS[int](t, ctx, `window.noReloadMark = 7`)

	src.SetInFlight("news", Transfer{ID: 4, Name: "evening/bulletin-1900.mxf", Destination: "archive", State: "uploading",
		Size: 4 << 30, Done: 3 << 30, Rate: 50 << 20, ETA: 20 * time.Second})
	WaitJS(t, ctx, "progress at 75%", `[...document.querySelectorAll("table.inflight td")].some(td => td.innerText.includes("75% of 4.0 GiB"))`)

	src.SetInFlight("news")
	src.Put(Job{ID: 4, Folder: "news", Name: "evening/bulletin-1900.mxf", State: "done", Size: 4 << 30,
		Destinations: []Dest{{Name: "archive", Type: "s3", State: "done"}, {Name: "wistia", Type: "wistia", State: "done",
			VendorID: "e4a27b971d", URL: "https://home.wistia.com/medias/e4a27b971d"}}})
	WaitJS(t, ctx, "the file under finished", `!document.querySelector("table.inflight") &&
		[...document.querySelectorAll("tr.job")].some(tr => tr.innerText.includes("bulletin-1900.mxf") && tr.innerText.includes("done") && tr.innerText.includes("e4a27b971d"))`)
	if mark := evalJS[int](t, ctx, `window.noReloadMark || 0`); mark != 7 {
		t.Errorf("the page was reloaded")
	}
}

// Non-loopback listener with a users_file: nobody gets in without signing
// in; editors see no operator buttons; operators' buttons work (CSRF token
// and same-origin checks pass for a real browser).
func TestBrowserAccessControl(t *testing.T) {
	src := SampleSource()
	users := WriteUsers(t, "eddie:editor-pw", "olga:operator-pw:operator")
	s := newTestServer(t, config.Web{Listen: "0.0.0.0:0", UsersFile: users, SessionTTL: time.Hour}, src)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, port, _ := strings.Cut(s.Addr(), "]:")
	if port == "" {
		_, port, _ = strings.Cut(s.Addr(), ":")
	}
	base := "http://127.0.0.1:" + port

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(base + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous API: %d", resp.StatusCode)
	}

	ctx := Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/jobs/2")); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(loc, "/login") {
		t.Fatalf("anonymous browser at %s, want the login page", loc)
	}
	if txt := evalJS[string](t, ctx, `document.body.innerText`); strings.Contains(txt, "flood-report") {
		t.Fatal("login page shows job data")
	}
	login := func(ctx context.Context, user, pw string) {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS(`input[name=user]`), user),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), pw),
			chromedp.Submit(chromedp.CSS(`input[name=password]`)),
		); err != nil {
			t.Fatal(err)
		}
	}
	login(ctx, "eddie", "wrong")
	WaitJS(t, ctx, "the refusal", `document.body.innerText.includes("wrong user name or password")`)
	login(ctx, "eddie", "editor-pw")
	WaitJS(t, ctx, "the failed file's page", `!!document.querySelector(".failure")`)
	if n := evalJS[int](t, ctx, `document.querySelectorAll("button.op-retry, button.op-pause").length`); n != 0 {
		t.Errorf("editor sees %d operator buttons", n)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, ctx, "the overview", `!!document.querySelector("section.folder")`)
	if n := evalJS[int](t, ctx, `document.querySelectorAll("button.op-retry, button.op-pause").length`); n != 0 {
		t.Errorf("editor sees %d operator buttons on the overview", n)
	}
	Screenshot(t, ctx, "editor.png")

	op := Browser(t)
	if err := chromedp.Do(op, chromedp.Navigate(base+"/login?next=/folders/news")); err != nil {
		t.Fatal(err)
	}
	login(op, "olga", "operator-pw")
	WaitJS(t, op, "the pause button", `!!document.querySelector("button.op-pause")`)
	if err := chromedp.Do(op, chromedp.Click(chromedp.CSS(`button.op-pause`))); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, op, "the folder paused", `!!document.querySelector("h1 .paused")`)
	if !src.paused("news") {
		t.Error("source not paused")
	}
	if err := chromedp.Do(op, chromedp.Navigate(base+"/jobs/2")); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, op, "the retry button", `!!document.querySelector("button.op-retry")`)
	if err := chromedp.Do(op, chromedp.Click(chromedp.CSS(`button.op-retry`))); err != nil {
		t.Fatal(err)
	}
	WaitJS(t, op, "the retried job", `!document.querySelector("button.op-retry") && document.body.innerText.includes("queued")`)
	if got := src.retried(); len(got) != 1 || got[0] != 2 {
		t.Errorf("retried %v", got)
	}
	Screenshot(t, op, "operator.png")
}
