package jwplayer

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/jwplayer/jwplayertest"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

var bucketSeq atomic.Int64

func setup(t *testing.T) *jwplayertest.Server {
	t.Helper()
	bucket := fmt.Sprintf("jw-%d", bucketSeq.Add(1))
	minio.MakeBucket(t, bucket)
	return jwplayertest.New(t, minio, bucket)
}

func newDest(t *testing.T, f *jwplayertest.Server, mutate func(*Options)) *Destination {
	t.Helper()
	c := f.Client()
	c.Timeout = 30 * time.Second
	o := Options{Name: "jw", SiteID: f.Site, APISecret: f.Secret, APIURL: f.URL,
		PollInterval: 5 * time.Millisecond, RegisterTimeout: 10 * time.Second,
		PartSize: 5 << 20, Concurrency: 2, HTTPClient: c,
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
		name       string
		size       int
		threshold  int64
		meta       uploader.Metadata
		script     []int
		retryAfter string
		wantParts  int
	}{
		{name: "direct", size: 300 << 10, meta: meta},
		{name: "direct, title from stem", size: 1000},
		{name: "multipart above the threshold", size: 12 << 20, threshold: 1 << 20, meta: meta, wantParts: 3},
		{name: "429 then 5xx burst", size: 1000, script: []int{429, 503, 500}, retryAfter: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			f.Script(tt.retryAfter, tt.script...)
			d := newDest(t, f, func(o *Options) { o.MultipartThreshold = tt.threshold })
			src, data := writeSource(t, "evening show.mp4", tt.size, tt.meta)
			cp := &uploader.Checkpoint{}
			sess := &memSession{}
			if err := d.Upload(ctxT(t), src, cp, sess); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if !cp.Uploaded || cp.VendorID == "" {
				t.Fatalf("cp = %+v", cp)
			}
			m, ok := f.Media(cp.VendorID)
			if !ok || len(f.All()) != 1 {
				t.Fatalf("fake holds %d media, none %q", len(f.All()), cp.VendorID)
			}
			if got := f.Object(m.ID); !bytes.Equal(got, data) {
				t.Fatalf("uploaded bytes differ (%d vs %d)", len(got), len(data))
			}
			wantTitle := "evening show"
			if tt.meta.Title != "" {
				wantTitle = tt.meta.Title
				if m.Metadata["description"] != "desc" || fmt.Sprint(m.Metadata["tags"]) != "[a b]" ||
					fmt.Sprint(m.Metadata["custom_params"]) != "map[desk:sports watchfolder_job:"+jobHandle(src)+"]" {
					t.Errorf("metadata = %v", m.Metadata)
				}
			}
			if m.Metadata["title"] != wantTitle || m.Metadata["external_id"] != externalID(src) {
				t.Errorf("metadata = %v", m.Metadata)
			}
			first := sess.saves[0]
			if first.VendorID != cp.VendorID || first.Uploaded || first.Extra["method"] == "" {
				t.Errorf("handles not saved before the bytes: %+v", first)
			}
			if tt.wantParts > 0 {
				if m.Method != "multipart" || !m.Completed || first.Extra["secret_upload_token"] == "" || first.Extra["upload_id"] == "" {
					t.Errorf("multipart not used/completed: %+v / %+v", m, first)
				}
				parts := f.PartPuts()
				if len(parts) != tt.wantParts || len(cp.Parts) != tt.wantParts {
					t.Errorf("part PUTs %v, cp.Parts %d, want %d", parts, len(cp.Parts), tt.wantParts)
				}
				if _, ok := parts[tt.wantParts+1]; ok {
					t.Errorf("uploaded a part beyond the file")
				}
			} else {
				puts := f.DirectPuts()
				if m.Method != "direct" || first.Extra["secret_upload_link"] == "" || len(puts) != 1 {
					t.Fatalf("direct not used: %+v, PUTs %q", m, puts)
				}
				// The link is presigned over the create's mime_type.
				if puts[0] != "video/mp4" || m.MimeType != "video/mp4" {
					t.Errorf("direct PUT Content-Type %q, create mime_type %q", puts[0], m.MimeType)
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

// TestMultipartThreshold: direct only up to 100 MB by default (JW's
// guidance), settable per destination.
func TestMultipartThreshold(t *testing.T) {
	d, err := New(Options{Name: "j", SiteID: "s", APISecret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if d.o.MultipartThreshold != 100_000_000 {
		t.Errorf("default threshold %d, want 100 MB", d.o.MultipartThreshold)
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

// TestShortMedia: JW refuses media under 2 s; a known short duration fails
// the file before a media is created.
func TestShortMedia(t *testing.T) {
	f := setup(t)
	d := newDest(t, f, nil)
	src, _ := writeSource(t, "blip.mp4", 1000, uploader.Metadata{})
	src.Duration = 1500 * time.Millisecond
	err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{})
	if err == nil || !uploader.IsPermanent(err) || !strings.Contains(err.Error(), "shorter than 2s") {
		t.Fatalf("err = %v, want a permanent refusal", err)
	}
	if n := len(f.All()); n != 0 {
		t.Errorf("%d media created for a refused file", n)
	}
}

// TestMultipartResume interrupts a multipart upload after some parts and
// resumes it with a new Destination from the saved checkpoint.
func TestMultipartResume(t *testing.T) {
	f := setup(t)
	f.FailPart(3, true)
	d := newDest(t, f, func(o *Options) { o.MultipartThreshold = 1 << 20; o.Concurrency = 1 })
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
	before := f.PartPuts()
	f.FailPart(3, false)

	// Drop the recorded parts too: the server's etags alone drive the skip.
	saved.Parts = nil
	d2 := newDest(t, f, func(o *Options) { o.MultipartThreshold = 1 << 20 })
	if err := d2.Upload(ctxT(t), src, &saved, &memSession{}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	after := f.PartPuts()
	if after[1] != before[1] || after[2] != before[2] || after[3] != before[3]+1 {
		t.Errorf("part PUTs before %v after %v: parts 1-2 must be skipped, 3 sent once", before, after)
	}
	if len(f.All()) != 1 {
		t.Errorf("fake holds %d media", len(f.All()))
	}
	if got := f.Object(saved.VendorID); !bytes.Equal(got, data) {
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
			d := newDest(t, f, func(o *Options) { o.MultipartThreshold = limit })
			if err := d.Upload(ctxT(t), other, &uploader.Checkpoint{}, &memSession{}); err != nil {
				t.Fatal(err)
			}
			src, data := writeSource(t, "c.mp4", 6<<20, uploader.Metadata{})
			if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{failSaves: 1}); err == nil {
				t.Fatal("Upload succeeded though the save failed")
			}
			if len(f.All()) != 2 {
				t.Fatalf("fake holds %d media after the crash", len(f.All()))
			}
			cp := &uploader.Checkpoint{}
			if err := d.Upload(ctxT(t), src, cp, &memSession{}); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if len(f.All()) != 2 {
				t.Errorf("fake holds %d media, want 2 (no duplicate)", len(f.All()))
			}
			m, ok := f.Media(cp.VendorID)
			if !ok || m.ExternalID != externalID(src) {
				t.Fatalf("cp.VendorID %q is not the crashed job's media", cp.VendorID)
			}
			if got := f.Object(m.ID); !bytes.Equal(got, data) {
				t.Errorf("object differs")
			}
		})
	}
}

// TestSidecarExternalIDOtherVersion: a sidecar external_id that already
// names a media (made by an earlier version of the file) must not make the
// new version count as done without its bytes: the media's source is
// replaced through reupload.
func TestSidecarExternalIDOtherVersion(t *testing.T) {
	f := setup(t)
	d := newDest(t, f, nil)
	meta := uploader.Metadata{ExternalID: "prog-123"}
	v1src, _ := writeSource(t, "show.mp4", 1000, meta)
	cp1 := &uploader.Checkpoint{}
	if err := d.Upload(ctxT(t), v1src, cp1, &memSession{}); err != nil {
		t.Fatal(err)
	}
	v2src, v2data := writeSource(t, "show.mp4", 2000, meta)
	v2src.JobID = 10
	cp2 := &uploader.Checkpoint{}
	if err := d.Upload(ctxT(t), v2src, cp2, &memSession{}); err != nil {
		t.Fatal(err)
	}
	m, _ := f.Media(cp2.VendorID)
	if cp2.VendorID != cp1.VendorID || len(f.All()) != 1 || m.Reuploads != 1 {
		t.Fatalf("media %q vs %q, %d media, %d reuploads: want the same media re-uploaded once", cp2.VendorID, cp1.VendorID, len(f.All()), m.Reuploads)
	}
	if got := f.Object(m.ID); !bytes.Equal(got, v2data) {
		t.Errorf("media holds the old version's bytes")
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
	if n := len(f.DirectPuts()); !pre.Uploaded || n != 1 {
		t.Errorf("uploaded %v, %d direct PUTs (want 1)", pre.Uploaded, n)
	}
}

// TestExpiredDirectLink: a saved link that expired (403 from S3) is
// replaced through reupload, not a failure.
func TestExpiredDirectLink(t *testing.T) {
	f := setup(t)
	f.SetLinkTTL(time.Second)
	d := newDest(t, f, nil)
	src, data := writeSource(t, "late.mp4", 1000, uploader.Metadata{})
	sess := &memSession{failSaves: 0}
	cp := &uploader.Checkpoint{}
	// Save the handles, then stop before the bytes (a crash).
	stop := &stopAfterSession{memSession: sess, after: 1}
	if err := d.Upload(ctxT(t), src, cp, stop); err == nil {
		t.Fatal("expected the simulated stop")
	}
	saved := sess.last()
	f.SetLinkTTL(15 * time.Minute)
	time.Sleep(2100 * time.Millisecond) // the link's own expiry, enforced by MinIO
	if err := d.Upload(ctxT(t), src, &saved, &memSession{}); err != nil {
		t.Fatalf("resume with an expired link: %v", err)
	}
	if got := f.Object(saved.VendorID); !bytes.Equal(got, data) {
		t.Errorf("object differs")
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
			f.SetStatuses(tt.errMsg, tt.statuses...)
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
			m, _ := f.Media(cp.VendorID)
			if polls := m.Polls; polls < tt.minPolls || (tt.waitFor == "" && polls != 0) {
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
				o.API, o.APIKey = "v1", f.V1Key
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
			m, ok := f.Media(cp.VendorID)
			if !ok || !cp.Uploaded || sess.saves[0].VendorID != cp.VendorID {
				t.Fatalf("cp = %+v", cp)
			}
			if m.Metadata["title"] != meta.Title || m.Metadata["tags"] != "x y,z" || m.Metadata["custom.genre"] != "news & views" {
				t.Errorf("v1 params = %v", m.Metadata)
			}
			// The link says http; the upload host speaks only https.
			if !strings.HasPrefix(sess.saves[0].Extra["secret_upload_url"], "https://") {
				t.Errorf("upload URL is not https")
			}
			if got := f.Object(m.ID); !bytes.Equal(got, data) {
				t.Errorf("object differs")
			}
			if err := d.Register(ctxT(t), src, cp, sess); err != nil {
				t.Errorf("Register: %v", err)
			}
		})
	}
}

// TestV1Idempotent: a crash between create and the checkpoint commit, and
// an expired link on resume: one video, renewed link, bytes delivered.
func TestV1Idempotent(t *testing.T) {
	f := setup(t)
	f.SetLinkTTL(time.Second)
	d := newDest(t, f, func(o *Options) { o.API, o.APIKey = "v1", f.V1Key })
	src, data := writeSource(t, "v1 crash.mp4", 1000, uploader.Metadata{})
	if err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{failSaves: 1}); err == nil {
		t.Fatal("Upload succeeded though the save failed")
	}
	time.Sleep(2100 * time.Millisecond) // the first link expires
	cp := &uploader.Checkpoint{}
	if err := d.Upload(ctxT(t), src, cp, &memSession{}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := len(f.All()); n != 1 {
		t.Fatalf("%d videos, want 1", n)
	}
	if got := f.Object(cp.VendorID); !bytes.Equal(got, data) {
		t.Errorf("object differs")
	}

	// A saved link that expired is renewed through /videos/update.
	src2, data2 := writeSource(t, "v1 late.mp4", 1000, uploader.Metadata{})
	src2.JobID = 77
	sess := &memSession{}
	if err := d.Upload(ctxT(t), src2, &uploader.Checkpoint{}, &stopAfterSession{memSession: sess, after: 1}); err == nil {
		t.Fatal("expected the simulated stop")
	}
	saved := sess.last()
	f.SetLinkTTL(15 * time.Minute)
	time.Sleep(2100 * time.Millisecond)
	if err := d.Upload(ctxT(t), src2, &saved, &memSession{}); err != nil {
		t.Fatalf("resume with an expired link: %v", err)
	}
	if m, _ := f.Media(saved.VendorID); m.Reuploads != 1 {
		t.Errorf("link renewed %d times, want 1", m.Reuploads)
	}
	if got := f.Object(saved.VendorID); !bytes.Equal(got, data2) {
		t.Errorf("object differs")
	}
}

// TestV1TooLarge: v1 is one PUT; 5 GB and more is refused before a video
// is created.
func TestV1TooLarge(t *testing.T) {
	f := setup(t)
	d := newDest(t, f, func(o *Options) { o.API, o.APIKey = "v1", f.V1Key })
	src, _ := writeSource(t, "huge.mxf", 10, uploader.Metadata{})
	src.Size = 5_000_000_000
	err := d.Upload(ctxT(t), src, &uploader.Checkpoint{}, &memSession{})
	if err == nil || !uploader.IsPermanent(err) || !strings.Contains(err.Error(), "5 GB") {
		t.Fatalf("err = %v", err)
	}
	if n := len(f.All()); n != 0 {
		t.Errorf("%d videos created", n)
	}
}
