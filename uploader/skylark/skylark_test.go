package skylark

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

const token = "tok-skylark-secret"

// fakeSkylark plays the platform: it ingests objects dropped into the
// watchfolder bucket (moving them under processed/) and serves assets by
// data-source name over HTTP.
type fakeSkylark struct {
	t        *testing.T
	bucket   string
	client   *s3.Client
	delay    time.Duration
	basename bool // move to processed/<base name> instead of processed/<key>
	ingest   bool

	mu        sync.Mutex
	assets    map[string]string // data-source name -> uid
	seenMeta  map[string]string // key -> x-amz-meta-asset as received
	apiCalls  int
	firstSeen map[string]time.Time
	errs      []string
}

func startFakeSkylark(t *testing.T, bucket string, ingest bool) (*fakeSkylark, *httptest.Server) {
	f := &fakeSkylark{t: t, bucket: bucket, client: minio.Client(), delay: 50 * time.Millisecond, ingest: ingest,
		assets: map[string]string{}, seenMeta: map[string]string{}, firstSeen: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(http.HandlerFunc(f.api))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeSkylark) run(ctx context.Context) {
	for ctx.Err() == nil {
		if f.ingest {
			f.scan(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (f *fakeSkylark) fail(format string, a ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
	f.mu.Unlock()
}

func (f *fakeSkylark) scan(ctx context.Context) {
	out, err := f.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(f.bucket)})
	if err != nil {
		return
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		if strings.HasPrefix(key, "processed/") {
			continue
		}
		f.mu.Lock()
		seen, ok := f.firstSeen[key]
		if !ok {
			f.firstSeen[key] = time.Now()
		}
		f.mu.Unlock()
		if !ok || time.Since(seen) < f.delay {
			continue
		}
		head, err := f.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
		if err != nil {
			continue
		}
		base := path.Base(key)
		stem := strings.TrimSuffix(base, path.Ext(base))
		f.mu.Lock()
		if a, ok := head.Metadata["asset"]; ok {
			f.seenMeta[key] = a
			var obj map[string]any
			if err := json.Unmarshal([]byte(a), &obj); err != nil {
				f.errs = append(f.errs, fmt.Sprintf("asset metadata %q is not JSON: %v", a, err))
			} else if uid, ok := obj["uid"].(string); ok {
				f.assets[stem] = uid
			} else {
				f.assets[stem] = fmt.Sprintf("asse_new%03d", len(f.assets))
			}
		} else {
			f.assets[stem] = fmt.Sprintf("asse_%03d", len(f.assets)+100)
		}
		f.mu.Unlock()
		dst := "processed/" + key
		if f.basename {
			dst = "processed/" + base
		}
		src := f.bucket + "/" + (&url.URL{Path: key}).EscapedPath()
		if _, err := f.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(dst), CopySource: aws.String(src)}); err != nil {
			f.fail("copy %s: %v", key, err)
			continue
		}
		f.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	}
}

func (f *fakeSkylark) api(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiCalls++
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+token {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"message":"Unauthorized"}`)
		return
	}
	const prefix = "/api/assets/versions/data-source/"
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, prefix) {
		f.errs = append(f.errs, "unexpected "+r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, prefix)
	uid, ok := f.assets[name]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not found"}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"uid": uid, "title": name, "self": "/api/assets/" + uid + "/"})
}

func (f *fakeSkylark) state() (assets, meta map[string]string, calls int, errs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	assets, meta = map[string]string{}, map[string]string{}
	for k, v := range f.assets {
		assets[k] = v
	}
	for k, v := range f.seenMeta {
		meta[k] = v
	}
	return assets, meta, f.apiCalls, append([]string(nil), f.errs...)
}

type memSession struct {
	mu    sync.Mutex
	saved []uploader.Checkpoint
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	b, _ := json.Marshal(cp)
	var c uploader.Checkpoint
	json.Unmarshal(b, &c)
	s.mu.Lock()
	s.saved = append(s.saved, c)
	s.mu.Unlock()
	return nil
}

func (s *memSession) Progress(int64) {}

var bucketSeq struct {
	sync.Mutex
	n int
}

func newBucket(t *testing.T) string {
	bucketSeq.Lock()
	bucketSeq.n++
	name := fmt.Sprintf("skylark-%d", bucketSeq.n)
	bucketSeq.Unlock()
	minio.MakeBucket(t, name)
	return name
}

func newEngine(t *testing.T, bucket string) *uploader.S3 {
	t.Helper()
	eng, err := uploader.NewS3(context.Background(), uploader.S3Options{
		Bucket: bucket, Region: minio.Region, Endpoint: minio.Endpoint, PathStyle: true,
		AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
	}, uploader.EngineOptions{})
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return eng
}

func testSource(t *testing.T, rel string, meta uploader.Metadata) *uploader.Source {
	p := filepath.Join(t.TempDir(), filepath.FromSlash(rel))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, bytes.Repeat([]byte("skylark "), 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	return &uploader.Source{JobID: 7, Folder: "promo", Path: p, RelPath: rel, Size: st.Size(), ModTime: st.ModTime(),
		Found: time.Now(), Meta: meta}
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func sidecar(v string) uploader.Metadata {
	return uploader.Metadata{Platform: map[string]json.RawMessage{"skylark": json.RawMessage(v)}}
}

func TestDeliver(t *testing.T) {
	cases := []struct {
		name      string
		rel       string
		tmpl      string
		meta      uploader.Metadata
		api       bool
		badToken  bool
		waitFor   string
		basename  bool
		ingest    bool
		stale     bool // an older processed/ object of the same name exists
		wantUID   string
		wantAPI   bool   // uid must come from the fake's asset table
		wantMeta  string // x-amz-meta-asset the platform saw
		wantProc  string
		wantErr   string
		permanent bool
	}{
		{name: "simple mode via API", rel: "clip.mp4", api: true, ingest: true, wantAPI: true, wantProc: "processed/clip.mp4"},
		{name: "simple mode without API", rel: "clip.mp4", ingest: true, wantProc: "processed/clip.mp4"},
		{name: "advanced uid", rel: "clip.mp4", api: true, ingest: true, meta: sidecar(`{ "uid": "asse_123" }`),
			wantUID: "asse_123", wantMeta: `{"uid":"asse_123"}`, wantProc: "processed/clip.mp4"},
		{name: "advanced new asset non-ascii", rel: "clip.mp4", ingest: true, meta: sidecar(`{"title": "Café ☕"}`),
			wantMeta: `{"title":"Caf\u00e9 \u2615"}`, wantProc: "processed/clip.mp4"},
		{name: "nested key moved by base name", rel: "sub/clip.mp4", tmpl: "{relpath}", api: true, basename: true, ingest: true,
			wantAPI: true, wantProc: "processed/clip.mp4"},
		{name: "no wait, advanced", rel: "clip.mp4", waitFor: "none", meta: sidecar(`{"uid":"asse_9"}`), wantUID: "asse_9"},
		{name: "processed timeout", rel: "clip.mp4", ingest: false, wantErr: "not ingested"},
		{name: "stale processed object ignored", rel: "clip.mp4", ingest: false, stale: true, wantErr: "not ingested"},
		{name: "wrong API token", rel: "clip.mp4", api: true, badToken: true, ingest: true, wantErr: "401", permanent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bucket := newBucket(t)
			f, srv := startFakeSkylark(t, bucket, c.ingest)
			f.basename = c.basename
			if c.stale {
				_, err := minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket),
					Key: aws.String("processed/clip.mp4"), Body: bytes.NewReader(bytes.Repeat([]byte("skylark "), 2000)),
					Metadata: map[string]string{"watchfolder-job": "someoneelse"}})
				if err != nil {
					t.Fatal(err)
				}
			}
			o := Options{Name: "sky", KeyTemplate: c.tmpl, S3: newEngine(t, bucket), WaitFor: c.waitFor,
				PollInterval: 10 * time.Millisecond, RegisterTimeout: 10 * time.Second, HTTPClient: srv.Client(),
				Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))}
			if c.wantErr == "not ingested" {
				o.RegisterTimeout = 400 * time.Millisecond
			}
			if c.api {
				o.APIURL, o.Token = srv.URL, token
				if c.badToken {
					o.Token = "wrong"
				}
			}
			d, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			src := testSource(t, c.rel, c.meta)
			cp := &uploader.Checkpoint{}
			s := &memSession{}
			if err := d.Upload(ctx, src, cp, s); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			err = d.Register(ctx, src, cp, s)
			assets, meta, calls, errs := f.state()
			if len(errs) > 0 {
				t.Fatalf("platform saw: %q", errs)
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || uploader.IsPermanent(err) != c.permanent {
					t.Fatalf("err = %v (permanent %v), want %q permanent %v", err, uploader.IsPermanent(err), c.wantErr, c.permanent)
				}
				if strings.Contains(err.Error(), o.Token) && o.Token != "" {
					t.Fatalf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			want := c.wantUID
			if c.wantAPI {
				want = assets["clip"]
				if want == "" {
					t.Fatalf("platform created no asset: %v", assets)
				}
			}
			last := s.saved[len(s.saved)-1]
			if last.VendorID != want {
				t.Fatalf("VendorID = %q, want %q", last.VendorID, want)
			}
			if got := meta[cp.Key]; got != c.wantMeta {
				t.Fatalf("asset metadata = %q, want %q", got, c.wantMeta)
			}
			if c.wantUID != "" && calls != 0 {
				t.Fatalf("advanced mode called the API %d times", calls)
			}
			if last.Extra[extraProcessedKey] != c.wantProc {
				t.Fatalf("processed_key = %q, want %q", last.Extra[extraProcessedKey], c.wantProc)
			}
			if c.wantProc != "" && last.Object != "s3://"+bucket+"/"+c.wantProc {
				t.Fatalf("Object = %q", last.Object)
			}
		})
	}
}

func TestMalformedSidecar(t *testing.T) {
	cases := []struct{ name, v, want string }{
		{"string", `"asse_1"`, "JSON object"},
		{"array", `[{"uid":"asse_1"}]`, "JSON object"},
		{"null", `null`, "JSON object"},
		{"numeric uid", `{"uid": 5}`, "uid"},
		{"empty uid", `{"uid": ""}`, "uid"},
		{"too big", `{"uid":"asse_1","description":"` + strings.Repeat("x", 2100) + `"}`, "2 KB"},
	}
	bucket := newBucket(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The engine is never reached: a zero S3 would panic if it were.
			d, err := New(Options{Name: "sky", S3: new(uploader.S3)})
			if err != nil {
				t.Fatal(err)
			}
			cp := &uploader.Checkpoint{}
			err = d.Upload(context.Background(), testSource(t, "clip.mp4", sidecar(c.v)), cp, &memSession{})
			if !uploader.IsPermanent(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "clip.mp4") {
				t.Fatalf("err = %v, want permanent mentioning %q and the file", err, c.want)
			}
			if cp.Uploaded || len(minio.ListKeys(t, bucket)) != 0 {
				t.Fatal("something was uploaded")
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"defaults", Options{Name: "s", S3: new(uploader.S3)}, ""},
		{"no s3", Options{Name: "s"}, "S3"},
		{"bad wait", Options{Name: "s", S3: new(uploader.S3), WaitFor: "ready"}, "wait_for"},
		{"api without token", Options{Name: "s", S3: new(uploader.S3), APIURL: "https://api.example"}, "token"},
		{"into processed", Options{Name: "s", S3: new(uploader.S3), KeyTemplate: "processed/{name}"}, "processed/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := New(c.o)
			if c.want == "" {
				if err != nil || d.o.KeyTemplate != "{name}" || d.o.WaitFor != "processed" || d.Type() != "skylark" {
					t.Fatalf("New = %+v, %v", d, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}
