package jwplayer

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

var bucketSeq atomic.Int64

func setup(t *testing.T) *fakeJW {
	t.Helper()
	bucket := fmt.Sprintf("jw-%d", bucketSeq.Add(1))
	minio.MakeBucket(t, bucket)
	return newFakeJW(t, minio, bucket)
}

func newDest(t *testing.T, f *fakeJW, mutate func(*Options)) *Destination {
	t.Helper()
	o := Options{Name: "jw", SiteID: f.site, APISecret: f.secret, APIURL: f.srv.URL,
		PollInterval: 5 * time.Millisecond, RegisterTimeout: 10 * time.Second,
		PartSize: 5 << 20, Concurrency: 2, HTTPClient: &http.Client{Timeout: 30 * time.Second},
		Logger: slog.New(slog.DiscardHandler)}
	if mutate != nil {
		mutate(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func writeSource(t *testing.T, name string, size int, meta uploader.Metadata) (*uploader.Source, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	return &uploader.Source{JobID: 9, Folder: "news", Path: p, RelPath: name, Size: st.Size(), ModTime: st.ModTime(),
		Found: time.Now(), Meta: meta}, data
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name   string
		o      Options
		errHas string
		base   string
	}{
		{"v2 defaults", Options{Name: "j", SiteID: "s", APISecret: "x"}, "", "https://api.jwplayer.com"},
		{"v1 defaults", Options{Name: "j", API: "v1", APIKey: "k", APISecret: "x"}, "", "https://api.jwplatform.com"},
		{"no name", Options{SiteID: "s", APISecret: "x"}, "name is required", ""},
		{"bad api", Options{Name: "j", API: "v3", SiteID: "s", APISecret: "x"}, "v1 or v2", ""},
		{"no site", Options{Name: "j", APISecret: "x"}, "site id", ""},
		{"no v1 key", Options{Name: "j", API: "v1", APISecret: "x"}, "api key", ""},
		{"no secret", Options{Name: "j", SiteID: "s"}, "secret is required", ""},
		{"small parts", Options{Name: "j", SiteID: "s", APISecret: "x", PartSize: 1 << 20}, "5 MiB", ""},
		{"bad wait", Options{Name: "j", SiteID: "s", APISecret: "x", WaitFor: "done"}, "wait_for", ""},
		{"bad url", Options{Name: "j", SiteID: "s", APISecret: "x", APIURL: "api.jwplayer.com"}, "http(s) URL", ""},
	}
	for _, tt := range tests {
		d, err := New(tt.o)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("%s: err %v, want containing %q", tt.name, err, tt.errHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if d.base != tt.base || d.Type() != "jwplayer" || d.o.PartSize != 16<<20 || d.o.Concurrency != 4 {
			t.Errorf("%s: base %q type %q part %d conc %d", tt.name, d.base, d.Type(), d.o.PartSize, d.o.Concurrency)
		}
	}
}

func TestCanonicalV1(t *testing.T) {
	// Expected values computed with Python's quote(v.encode(), safe='~'),
	// sorted(params.items()) and hashlib.sha1.
	p := url.Values{}
	for k, v := range map[string]string{"api_format": "json", "api_key": "KEY", "api_nonce": "012345678",
		"api_timestamp": "1700000000", "upload_method": "s3", "title": "A/B c~d*é+x",
		"custom.genre": "news & views", "tags": "a,b"} {
		p.Set(k, v)
	}
	want := "api_format=json&api_key=KEY&api_nonce=012345678&api_timestamp=1700000000&custom.genre=news%20%26%20views&tags=a%2Cb&title=A%2FB%20c~d%2A%C3%A9%2Bx&upload_method=s3"
	if got := canonicalV1(p); got != want {
		t.Errorf("canonicalV1 =\n%s\nwant\n%s", got, want)
	}
	d, _ := New(Options{Name: "j", API: "v1", APIKey: "KEY", APISecret: "SECRET", Now: func() time.Time { return time.Unix(1700000000, 0) }})
	d.nonce = func() string { return "012345678" }
	in := url.Values{"upload_method": {"s3"}, "title": {"A/B c~d*é+x"}, "custom.genre": {"news & views"}, "tags": {"a,b"}}
	if got := d.signV1(in); got != want+"&api_signature=85d3eaf145cec36b16156d4e81b8bd8afaa0940c" {
		t.Errorf("signV1 = %s", got)
	}
	if n := randomNonce(); len(n) != 9 || strings.Trim(n, "0123456789") != "" {
		t.Errorf("nonce %q is not 9 digits", n)
	}
}

func TestPartSize(t *testing.T) {
	d, _ := New(Options{Name: "j", SiteID: "s", APISecret: "x"})
	tests := []struct{ size, want int64 }{
		{1, 16 << 20},
		{10000 * (16 << 20), 16 << 20},
		{10000*(16<<20) + 1, 17 << 20},
		{1 << 40, 105 << 20},
	}
	for _, tt := range tests {
		got := d.partSize(tt.size)
		if got != tt.want || (tt.size+got-1)/got > maxParts {
			t.Errorf("partSize(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}

func TestUploadV2(t *testing.T) {
	meta := uploader.Metadata{Title: "Evening", Description: "desc", Tags: []string{"a", "b"}, Custom: map[string]string{"desk": "sports"}}
	tests := []struct {
		name        string
		size        int
		directLimit int64
		meta        uploader.Metadata
		script      []int
		retryAfter  string
		wantParts   int
	}{
		{name: "direct", size: 300 << 10, meta: meta},
		{name: "direct, title from stem", size: 1000},
		{name: "multipart", size: 12 << 20, directLimit: 1 << 20, meta: meta, wantParts: 3},
		{name: "429 then 5xx burst", size: 1000, script: []int{429, 503, 500}, retryAfter: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			f.script, f.retryAfter = tt.script, tt.retryAfter
			d := newDest(t, f, func(o *Options) { o.DirectLimit = tt.directLimit })
			src, data := writeSource(t, "evening show.mp4", tt.size, tt.meta)
			cp := &uploader.Checkpoint{}
			sess := &memSession{}
			if err := d.Upload(ctxT(t), src, cp, sess); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if !cp.Uploaded || cp.VendorID == "" {
				t.Fatalf("cp = %+v", cp)
			}
			m := f.media[cp.VendorID]
			if m == nil || len(f.media) != 1 {
				t.Fatalf("fake holds %d media, none %q", len(f.media), cp.VendorID)
			}
			if got := minio.GetObject(t, f.bucket, m.key); !bytes.Equal(got, data) {
				t.Fatalf("uploaded bytes differ (%d vs %d)", len(got), len(data))
			}
			wantTitle := "evening show"
			if tt.meta.Title != "" {
				wantTitle = tt.meta.Title
				if m.metadata["description"] != "desc" || fmt.Sprint(m.metadata["tags"]) != "[a b]" ||
					fmt.Sprint(m.metadata["custom_params"]) != "map[desk:sports]" {
					t.Errorf("metadata = %v", m.metadata)
				}
			}
			if m.metadata["title"] != wantTitle || m.metadata["external_id"] != externalID(src) {
				t.Errorf("metadata = %v", m.metadata)
			}
			first := sess.saves[0]
			if first.VendorID != cp.VendorID || first.Uploaded || first.Extra["method"] == "" {
				t.Errorf("handles not saved before the bytes: %+v", first)
			}
			if tt.wantParts > 0 {
				if m.method != "multipart" || !m.completed || first.Extra["secret_upload_token"] == "" || first.Extra["upload_id"] == "" {
					t.Errorf("multipart not used/completed: %+v / %+v", m, first)
				}
				parts := f.proxy.parts()
				if len(parts) != tt.wantParts || len(cp.Parts) != tt.wantParts {
					t.Errorf("part PUTs %v, cp.Parts %d, want %d", parts, len(cp.Parts), tt.wantParts)
				}
				if _, ok := parts[tt.wantParts+1]; ok {
					t.Errorf("uploaded a part beyond the file")
				}
			} else {
				if m.method != "direct" || first.Extra["secret_upload_link"] == "" || f.proxy.directPut != 1 {
					t.Errorf("direct not used: %+v, %d PUTs", m, f.proxy.directPut)
				}
				if ct := f.proxy.contentTy[0]; ct != "" {
					t.Errorf("direct PUT sent Content-Type %q", ct)
				}
				if cp.ETag == "" {
					t.Errorf("ETag not recorded")
				}
			}
			if sess.bytes != int64(tt.size) {
				t.Errorf("progress %d, want %d", sess.bytes, tt.size)
			}
		})
	}
}

func TestUploadV2Errors(t *testing.T) {
	f := setup(t)
	d := newDest(t, f, func(o *Options) { o.APISecret = "wrong-secret" })
	src, _ := writeSource(t, "x.mp4", 100, uploader.Metadata{})
	err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{})
	if err == nil || !uploader.IsPermanent(err) || !strings.Contains(err.Error(), "Invalid API credentials") {
		t.Fatalf("err = %v, want a permanent error with JW's message", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("error leaks the secret: %v", err)
	}

	// A file that changed since the job was made is not sent.
	d = newDest(t, f, nil)
	src.Size++
	if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{}); err == nil || !strings.Contains(err.Error(), uploader.ErrSourceChanged.Error()) {
		t.Errorf("err = %v, want ErrSourceChanged", err)
	}
}

// TestMultipartResume interrupts a multipart upload after some parts and
// resumes it with a new Destination from the saved checkpoint.
func TestMultipartResume(t *testing.T) {
	f := setup(t)
	f.proxy.failPart[3] = true
	d := newDest(t, f, func(o *Options) { o.DirectLimit = 1 << 20; o.Concurrency = 1 })
	d.retries = 1
	src, data := writeSource(t, "long.mov", 12<<20, uploader.Metadata{})
	sess := &memSession{}
	if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, sess); err == nil {
		t.Fatal("Upload succeeded though part 3 fails")
	}
	saved := sess.last()
	if len(saved.Parts) != 2 || saved.Uploaded {
		t.Fatalf("saved cp has %d parts, uploaded %v", len(saved.Parts), saved.Uploaded)
	}
	before := f.proxy.parts()
	f.proxy.mu.Lock()
	f.proxy.failPart[3] = false
	f.proxy.mu.Unlock()

	// Drop the recorded parts too: the server's etags alone drive the skip.
	saved.Parts = nil
	d2 := newDest(t, f, func(o *Options) { o.DirectLimit = 1 << 20 })
	if err := d2.Upload(ctxT(t), src, &saved, &memSession{}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	after := f.proxy.parts()
	if after[1] != before[1] || after[2] != before[2] || after[3] != before[3]+1 {
		t.Errorf("part PUTs before %v after %v: parts 1-2 must be skipped, 3 sent once", before, after)
	}
	if len(f.media) != 1 {
		t.Errorf("fake holds %d media", len(f.media))
	}
	if got := minio.GetObject(t, f.bucket, f.media[saved.VendorID].key); !bytes.Equal(got, data) {
		t.Errorf("resumed object differs")
	}
}

// TestCrashBetweenCreateAndCommit: the checkpoint holding the new media id is
// lost; the retry must find the media by external_id, not create another.
func TestCrashBetweenCreateAndCommit(t *testing.T) {
	for _, method := range []string{"direct", "multipart"} {
		t.Run(method, func(t *testing.T) {
			f := setup(t)
			limit := int64(0)
			if method == "multipart" {
				limit = 1 << 20
			}
			// A media from another job whose external id shares a prefix
			// must not be taken for ours.
			other, _ := writeSource(t, "c.mp4", 100, uploader.Metadata{})
			other.JobID = 900
			d := newDest(t, f, func(o *Options) { o.DirectLimit = limit })
			if err := d.Upload(ctxT(t), other, &uploader.Checkpoint{}, &memSession{}); err != nil {
				t.Fatal(err)
			}
			src, data := writeSource(t, "c.mp4", 6<<20, uploader.Metadata{})
			if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{failSaves: 1}); err == nil {
				t.Fatal("Upload succeeded though the save failed")
			}
			if len(f.media) != 2 {
				t.Fatalf("fake holds %d media after the crash", len(f.media))
			}
			cp := &uploader.Checkpoint{}
			if err := d.Upload(ctxT(t), src, cp, &memSession{}); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if len(f.media) != 2 {
				t.Errorf("fake holds %d media, want 2 (no duplicate)", len(f.media))
			}
			m := f.media[cp.VendorID]
			if m == nil || m.externalID != externalID(src) {
				t.Fatalf("cp.VendorID %q is not the crashed job's media", cp.VendorID)
			}
			if got := minio.GetObject(t, f.bucket, m.key); !bytes.Equal(got, data) {
				t.Errorf("object differs")
			}
		})
	}
}

// TestCrashAfterBytes: the bytes went in but Uploaded was never committed;
// the retry sees the media processing and does not send again.
func TestCrashAfterBytes(t *testing.T) {
	f := setup(t)
	d := newDest(t, f, nil)
	src, _ := writeSource(t, "d.mp4", 1000, uploader.Metadata{})
	sess := &memSession{}
	if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, sess); err != nil {
		t.Fatal(err)
	}
	pre := sess.saves[0] // handles saved, not yet uploaded
	if pre.Uploaded {
		t.Fatal("first save already uploaded")
	}
	if err := d.Upload(ctxT(t), src, &pre, &memSession{}); err != nil {
		t.Fatal(err)
	}
	if !pre.Uploaded || f.proxy.directPut != 1 {
		t.Errorf("uploaded %v, %d direct PUTs (want 1)", pre.Uploaded, f.proxy.directPut)
	}
}

func TestRegisterV2(t *testing.T) {
	tests := []struct {
		name      string
		waitFor   string
		statuses  []string
		errMsg    string
		timeout   time.Duration
		wantErr   string
		permanent bool
		minPolls  int
	}{
		{name: "no wait", statuses: []string{"processing"}},
		{name: "ready", waitFor: "ready", statuses: []string{"processing", "processing", "weird-new-state", "ready"}, minPolls: 4},
		{name: "failed", waitFor: "ready", statuses: []string{"processing", "failed"}, errMsg: "Media is shorter than 2 seconds",
			wantErr: "Media is shorter than 2 seconds", permanent: true},
		{name: "timeout", waitFor: "ready", statuses: []string{"processing"}, timeout: 100 * time.Millisecond, wantErr: "not ready within 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			f.statuses, f.errMsg = tt.statuses, tt.errMsg
			d := newDest(t, f, func(o *Options) { o.WaitFor = tt.waitFor; o.RegisterTimeout = tt.timeout })
			src, _ := writeSource(t, "r.mp4", 1000, uploader.Metadata{})
			cp := &uploader.Checkpoint{}
			if err := d.Upload(ctxT(t), src, cp, &memSession{}); err != nil {
				t.Fatal(err)
			}
			err := d.Register(ctxT(t), src, cp, &memSession{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || uploader.IsPermanent(err) != tt.permanent {
					t.Fatalf("err = %v (permanent %v), want %q (permanent %v)", err, uploader.IsPermanent(err), tt.wantErr, tt.permanent)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if polls := f.media[cp.VendorID].polls; polls < tt.minPolls || (tt.waitFor == "" && polls != 0) {
				t.Errorf("polled %d times, want >= %d", polls, tt.minPolls)
			}
		})
	}
}

func TestUploadV1(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		wantErr string
	}{
		{name: "ok"},
		{name: "wrong secret", secret: "not-it", wantErr: "PermissionDenied: Invalid signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			d := newDest(t, f, func(o *Options) {
				o.API, o.APIKey = "v1", f.v1Key
				if tt.secret != "" {
					o.APISecret = tt.secret
				}
			})
			meta := uploader.Metadata{Title: "A/B c~d*é+x", Tags: []string{"x y", "z"}, Custom: map[string]string{"genre": "news & views"}}
			src, data := writeSource(t, "v1 clip.mp4", 200<<10, meta)
			cp := &uploader.Checkpoint{}
			sess := &memSession{}
			err := d.Upload(ctxT(t), src, cp, sess)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !uploader.IsPermanent(err) {
					t.Fatalf("err = %v, want permanent %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "not-it") {
					t.Errorf("error leaks the secret")
				}
				return
			}
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			m := f.media[cp.VendorID]
			if m == nil || !cp.Uploaded || sess.saves[0].VendorID != cp.VendorID {
				t.Fatalf("cp = %+v", cp)
			}
			if m.metadata["title"] != meta.Title || m.metadata["tags"] != "x y,z" || m.metadata["custom.genre"] != "news & views" {
				t.Errorf("v1 params = %v", m.metadata)
			}
			if got := minio.GetObject(t, f.bucket, m.key); !bytes.Equal(got, data) {
				t.Errorf("object differs")
			}
			if err := d.Register(ctxT(t), src, cp, sess); err != nil {
				t.Errorf("Register: %v", err)
			}
		})
	}
}
