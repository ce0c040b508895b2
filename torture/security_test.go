package torture

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeWistia answers the three calls the wistia destination makes, and
// checks the Bearer token on each.
type fakeWistia struct {
	srv      *httptest.Server
	token    string
	copies   atomic.Int64
	badAuth  atomic.Int64
	mu       sync.Mutex
	names    map[string]string // name -> hashed id
	received []string
}

func newFakeWistia(t *testing.T, token string) *fakeWistia {
	w := &fakeWistia{token: token, names: map[string]string{}}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.badAuth.Add(1)
			http.Error(rw, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		r.ParseForm()
		w.mu.Lock()
		defer w.mu.Unlock()
		w.received = append(w.received, r.Method+" "+r.URL.Path)
		rw.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/s3_copy":
			n := w.copies.Add(1)
			id := fmt.Sprintf("wis%04d", n)
			w.names[r.Form.Get("name")] = id
			json.NewEncoder(rw).Encode(map[string]any{"id": n, "hashed_id": id, "name": r.Form.Get("name"), "status": "queued"})
		case r.Method == http.MethodGet && r.URL.Path == "/v1/medias.json":
			var out []map[string]any
			if id, ok := w.names[r.Form.Get("name")]; ok {
				out = append(out, map[string]any{"hashed_id": id, "name": r.Form.Get("name"), "status": "queued"})
			}
			json.NewEncoder(rw).Encode(out)
		case strings.HasPrefix(r.URL.Path, "/v1/medias/"):
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/medias/"), ".json")
			json.NewEncoder(rw).Encode(map[string]any{"hashed_id": id, "name": r.Form.Get("name"), "status": "ready"})
		default:
			http.NotFound(rw, r)
		}
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// TestSecretsNeverLeak runs a full delivery with log level debug, an S3
// destination (secret from the environment) and a Wistia destination (a
// literal token), including a failed file, then greps every output the
// operator can see for the secret values.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	const token = "wistia-T0KEN-8c1f2e9d7a6b5c4d3e2f"
	wis := newFakeWistia(t, token)
	wisBucket := newBucket(t, "w")
	raw := fmt.Sprintf(`[destination.wistia]
type = "wistia"
bucket = %q
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = "${WF_TEST_SECRET}"
token = %q
upload_url = %q
api_url = %q
poll_interval = "200ms"
`, wisBucket, minio.Endpoint, minio.AccessKey, token, wis.srv.URL, wis.srv.URL)
	s := newSite(t, siteConfig{level: "debug", maxAttempts: 2,
		dests:       []destSpec{{name: "archive", bucket: newBucket(t, "a")}},
		rawDests:    raw,
		folderDests: []string{"archive", "wistia"},
	})
	secrets := map[string]string{"S3 secret key": minio.SecretKey, "Wistia token": token}

	e := newExpect()
	for i := range 3 {
		data := []byte(fmt.Sprintf("clip %d", i))
		rel := fmt.Sprintf("clip-%d.mp4", i)
		s.drop(rel, data)
		e.delivered[rel] = sum(data)
	}
	s.drop("empty.mp4", nil)
	e.failed["empty.mp4"] = "empty file"
	s.drop("sub/with-meta.mp4", []byte("has a sidecar"))
	s.drop("sub/with-meta.json", []byte(`{"title":"A title","tags":["x"]}`))
	e.delivered["sub/with-meta.mp4"] = sum([]byte("has a sidecar"))
	e.sidecars["sub/with-meta.json"] = true

	// The config holds a literal token: readable by others -> a warning.
	if err := os.Chmod(s.cfgPath, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := s.cli("check")
	if code != 0 || !strings.Contains(errOut, "readable by others") {
		t.Errorf("check on a 0644 config with a literal secret: exit %d, stderr %q: want a warning", code, errOut)
	}
	os.Chmod(s.cfgPath, 0o600)
	_, errOut, _ = s.cli("check")
	if strings.Contains(errOut, "readable by others") {
		t.Errorf("check warns on a 0600 config: %q", errOut)
	}

	var outputs []struct{ name, text string }
	capture := func(name string, args ...string) {
		out, errOut, code := s.cli(args...)
		outputs = append(outputs, struct{ name, text string }{name, out + errOut})
		if code != 0 {
			t.Errorf("%s: exit %d: %s", name, code, errOut)
		}
	}
	capture("check", "check")
	s.start()
	s.waitIdle(2 * time.Minute)
	capture("status", "status")
	capture("status --json", "status", "--json")
	capture("list", "list")
	capture("list --json", "list", "--json")
	jobs, err := s.list()
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		capture(fmt.Sprintf("show %d", j.ID), "show", fmt.Sprint(j.ID))
		capture(fmt.Sprintf("show %d --json", j.ID), "show", fmt.Sprint(j.ID), "--json")
	}
	s.stop()
	capture("list --json (offline)", "list", "--json")
	if len(jobs) > 0 {
		capture("show --json (offline)", "show", fmt.Sprint(jobs[0].ID), "--json")
	}
	fig := s.verify(e)

	files := []string{s.logPath, filepath.Join(s.stateDir, "state.db")}
	for _, dir := range []string{filepath.Join(s.inbox, "processed"), filepath.Join(s.inbox, "failed")} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".receipt.json") || strings.HasSuffix(p, ".error.txt")) {
				files = append(files, p)
			}
			return nil
		})
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("read %s: %v", f, err)
			continue
		}
		outputs = append(outputs, struct{ name, text string }{f, string(b)})
	}
	bytes := 0
	for _, o := range outputs {
		bytes += len(o.text)
		for what, secret := range secrets {
			if strings.Contains(o.text, secret) {
				t.Errorf("%s appears in %s", what, o.name)
			}
		}
	}
	if !strings.Contains(outputs[0].text, "wistia") || !strings.Contains(s.logTail(1<<20), "level=DEBUG") {
		t.Errorf("the outputs searched do not look complete (no wistia in check, or no debug lines)")
	}
	if wis.badAuth.Load() != 0 || wis.copies.Load() != int64(len(e.delivered)) {
		t.Errorf("fake Wistia: %d unauthorised calls, %d copies for %d files", wis.badAuth.Load(), wis.copies.Load(), len(e.delivered))
	}
	t.Logf("secrets: searched %d outputs (%d bytes) for %d secrets: none found unless reported above; %s; wistia copies %d",
		len(outputs), bytes, len(secrets), fig, wis.copies.Load())
}
