package skylark

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
	"github.com/watchfolder/watchfolder/uploader/skylark/skylarktest"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

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

func newEngine(t *testing.T, bucket string) *s3engine.S3 {
	t.Helper()
	eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
		Bucket: bucket, Region: minio.Region, Endpoint: minio.Endpoint, PathStyle: true,
		AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
	}, s3engine.EngineOptions{})
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
		// Skylark ingests the bucket root only: a prefixed key is never
		// picked up (config check warns about such templates).
		{name: "prefixed key never ingested", rel: "sub/clip.mp4", tmpl: "{relpath}", ingest: true, wantErr: "not ingested"},
		{name: "no wait, advanced", rel: "clip.mp4", waitFor: "none", meta: sidecar(`{"uid":"asse_9"}`), wantUID: "asse_9"},
		{name: "processed timeout", rel: "clip.mp4", ingest: false, wantErr: "not ingested"},
		{name: "stale processed object ignored", rel: "clip.mp4", ingest: false, stale: true, wantErr: "not ingested"},
		{name: "wrong API token", rel: "clip.mp4", api: true, badToken: true, ingest: true, wantErr: "401", permanent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bucket := newBucket(t)
			f := skylarktest.New(t, minio, bucket, 50*time.Millisecond)
			f.SetIngest(c.ingest)
			if c.stale {
				_, err := minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket),
					Key: aws.String("processed/clip.mp4"), Body: bytes.NewReader(bytes.Repeat([]byte("skylark "), 2000)),
					Metadata: map[string]string{"watchfolder-job": "someoneelse"}})
				if err != nil {
					t.Fatal(err)
				}
			}
			o := Options{Name: "sky", KeyTemplate: c.tmpl, S3: newEngine(t, bucket), WaitFor: c.waitFor,
				PollInterval: 10 * time.Millisecond, RegisterTimeout: 10 * time.Second, HTTPClient: http.DefaultClient,
				Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))}
			if c.wantErr == "not ingested" {
				o.RegisterTimeout = 400 * time.Millisecond
			}
			if c.api {
				o.APIURL, o.Token = f.URL, f.Token
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
			assets, meta, calls := f.Assets(), f.AssetMeta(), f.APICalls()
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
			d, err := New(Options{Name: "sky", S3: new(s3engine.S3)})
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
		{"defaults", Options{Name: "s", S3: new(s3engine.S3)}, ""},
		{"no s3", Options{Name: "s"}, "S3"},
		{"bad wait", Options{Name: "s", S3: new(s3engine.S3), WaitFor: "ready"}, "wait_for"},
		{"api without token", Options{Name: "s", S3: new(s3engine.S3), APIURL: "https://api.example"}, "token"},
		{"into processed", Options{Name: "s", S3: new(s3engine.S3), KeyTemplate: "processed/{name}"}, "processed/"},
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

type failLastSave struct{ memSession }

func (s *failLastSave) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	if cp.Uploaded {
		return fmt.Errorf("simulated crash before the upload's commit")
	}
	return s.memSession.Save(ctx, cp)
}

// TestNoSecondPutAfterIngest: the object was sent but its commit was lost,
// and Skylark moved it to processed/ before the retry (the key answers
// 404): the retry must not PUT it again (a second asset).
func TestNoSecondPutAfterIngest(t *testing.T) {
	bucket := newBucket(t)
	f := skylarktest.New(t, minio, bucket, 0)
	d, err := New(Options{Name: "sky", S3: newEngine(t, bucket), PollInterval: 10 * time.Millisecond,
		RegisterTimeout: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := testSource(t, "clip.mp4", uploader.Metadata{})
	if err := d.Upload(ctx, src, &uploader.Checkpoint{}, &failLastSave{}); err == nil {
		t.Fatal("Upload succeeded though its commit failed")
	}
	for f.Ingested()["clip.mp4"] == 0 {
		if ctx.Err() != nil {
			t.Fatal("never ingested")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cp := &uploader.Checkpoint{}
	s := &memSession{}
	if err := d.Upload(ctx, src, cp, s); err != nil {
		t.Fatal(err)
	}
	if err := d.Register(ctx, src, cp, s); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a second object would be ingested by now
	if n := f.Ingested()["clip.mp4"]; n != 1 {
		t.Fatalf("ingested %d times, want 1", n)
	}
	if !cp.Uploaded || cp.Extra[extraProcessedKey] != "processed/clip.mp4" {
		t.Errorf("cp = %+v", cp)
	}
}
