package web_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/web"
)

// The whole way through: a real daemon uploading to MinIO serves the page;
// a file dropped into the folder shows up uploading (the upload is slowed
// by max_bandwidth so it can be seen) and then done, without a reload.
func TestBrowserRealDaemon(t *testing.T) {
	minio := testenv.StartMinIOT(t)
	minio.MakeBucket(t, "wf-web")
	dir := t.TempDir()
	inbox := filepath.Join(dir, "inbox")
	if err := os.MkdirAll(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
state_dir = %q
control_socket = %q
shutdown_timeout = "4s"
[upload]
max_bandwidth = "1MiB/s"
[web]
listen = %q
[[folder]]
name = "news"
path = %q
destinations = ["archive"]
stable_after = "200ms"
rescan_interval = "1s"
# The test drops bytes, not media: the media check would fail them.
probe = "off"
[destination.archive]
type = "s3"
bucket = "wf-web"
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = %q
`, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"), addr, inbox, minio.Endpoint,
		minio.AccessKey, minio.SecretKey), "web-test.toml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, daemon.Options{Config: cfg, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	base := "http://" + addr
	waitHTTP(t, base+"/healthz")

	b := web.Browser(t)
	if err := chromedp.Do(b, chromedp.Navigate(base+"/folders/news")); err != nil {
		t.Fatal(err)
	}
	web.WaitJS(t, b, "the event stream", `document.getElementById("live").classList.contains("on")`)
	if _, err := chromedp.Run(b, chromedp.Evaluate[int](`window.noReloadMark = 7`)); err != nil {
		t.Fatal(err)
	}

	const name = "evening bulletin.mp4"
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(inbox, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	web.WaitJS(t, b, "the file uploading", `[...document.querySelectorAll("table.inflight tr.transfer")].some(tr => tr.innerText.includes("`+name+`"))`)
	web.Screenshot(t, b, "real-daemon-uploading.png")
	web.WaitJS(t, b, "the file done", `!document.querySelector("table.inflight") &&
		[...document.querySelectorAll("tr.job")].some(tr => tr.innerText.includes("`+name+`") && tr.innerText.includes("done"))`)
	mark, err := chromedp.Run(b, chromedp.Evaluate[int](`window.noReloadMark || 0`))
	if err != nil || mark != 7 {
		t.Errorf("the page was reloaded (mark %d, %v)", mark, err)
	}
	web.Screenshot(t, b, "real-daemon-done.png")

	// The API answers with the same JSON as `status --json`.
	resp, err := http.Get(base + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"recent_failures"`) ||
		!strings.Contains(string(body), `"done": 1`) {
		t.Errorf("status API: %d %s", resp.StatusCode, body)
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer", url)
}
