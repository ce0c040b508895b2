package wistia

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
	"github.com/watchfolder/watchfolder/uploader/wistia/wistiatest"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

const token = "tok-wistia-secret"

// newFakeWistia starts the exported strict Wistia for bucket; region is
// what s3_copy must name ("" = none).
func newFakeWistia(t *testing.T, bucket, region string) (*wistiatest.Server, string) {
	f := wistiatest.New(t, minio, bucket, wistiatest.Options{Token: token, Region: region})
	return f, f.URL
}

type memSession struct {
	mu    sync.Mutex
	saved []uploader.Checkpoint
	fail  func(cp *uploader.Checkpoint) error
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	if s.fail != nil {
		if err := s.fail(cp); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(cp)
	var c uploader.Checkpoint
	json.Unmarshal(b, &c)
	s.mu.Lock()
	s.saved = append(s.saved, c)
	s.mu.Unlock()
	return nil
}

func (s *memSession) Progress(int64) {}

func (s *memSession) last() uploader.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved[len(s.saved)-1]
}

// ---- helpers ----

var bucketSeq struct {
	sync.Mutex
	n int
}

func newBucket(t *testing.T) string {
	bucketSeq.Lock()
	bucketSeq.n++
	name := fmt.Sprintf("wistia-%d", bucketSeq.n)
	bucketSeq.Unlock()
	minio.MakeBucket(t, name)
	return name
}

func putObject(t *testing.T, bucket, key string, data []byte) {
	t.Helper()
	_, err := minio.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("put s3://%s/%s: %v", bucket, key, err)
	}
}

func testSource(t *testing.T, rel string, meta uploader.Metadata) *uploader.Source {
	dir := t.TempDir()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	os.MkdirAll(filepath.Dir(p), 0o755)
	data := bytes.Repeat([]byte("wistia-media "), 1000)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	return &uploader.Source{JobID: 42, Folder: "news", Path: p, RelPath: rel, Size: st.Size(), ModTime: st.ModTime(),
		Found: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Meta: meta}
}

func newDest(t *testing.T, srv string, eng *s3engine.S3, mod func(*Options)) *Destination {
	t.Helper()
	o := Options{Name: "wis", Token: token, UploadURL: srv, APIURL: srv, KeyTemplate: "{folder}/{relpath}",
		S3: eng, PollInterval: 5 * time.Millisecond, RegisterTimeout: 5 * time.Second, HTTPClient: http.DefaultClient,
		Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))}
	if mod != nil {
		mod(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d.copyBackoff = 20 * time.Millisecond
	return d
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// registerOnly prepares a checkpoint as Upload would leave it, without the
// S3 engine, so the platform side is tested on its own.
func registerOnly(t *testing.T, region string) (*wistiatest.Server, string, *uploader.Checkpoint) {
	bucket := newBucket(t)
	putObject(t, bucket, "news/clip.mp4", []byte("media"))
	f, srv := newFakeWistia(t, bucket, region)
	return f, srv, &uploader.Checkpoint{Bucket: bucket, Key: "news/clip.mp4", Uploaded: true, Object: "s3://" + bucket + "/news/clip.mp4"}
}

// ---- tests ----

func TestNewValidates(t *testing.T) {
	ok := Options{Name: "w", Token: "t", KeyTemplate: "{name}", S3: new(s3engine.S3)}
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"ok", func(*Options) {}, ""},
		{"no token", func(o *Options) { o.Token = "" }, "token"},
		{"no s3", func(o *Options) { o.S3 = nil }, "S3"},
		{"bad template", func(o *Options) { o.KeyTemplate = "{nope}" }, "key"},
		{"bad wait", func(o *Options) { o.WaitFor = "done" }, "wait_for"},
		{"bad url", func(o *Options) { o.APIURL = "ftp://x" }, "api_url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := ok
			c.mod(&o)
			d, err := New(o)
			if c.want == "" {
				if err != nil || d.Type() != "wistia" || d.o.UploadURL != DefaultUploadURL || d.o.PollInterval != DefaultPollInterval {
					t.Fatalf("New = %v, %v", d, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
			if strings.Contains(fmt.Sprint(err), "Bearer") {
				t.Fatalf("error leaks auth: %v", err)
			}
		})
	}
}

func TestRegisterPlatform(t *testing.T) {
	cases := []struct {
		name      string
		region    string // Options.Region
		wantReg   string // what the fake expects
		token     string
		plan      []string
		statuses  []string
		waitFor   string
		meta      uploader.Metadata
		wantErr   string
		permanent bool
		medias    int
		project   string
	}{
		{name: "happy ready", statuses: []string{"queued", "processing", "ready"}, waitFor: "ready", medias: 1},
		{name: "us-east-1 region omitted", region: "us-east-1", medias: 1},
		{name: "other region sent", region: "eu-west-1", wantReg: "eu-west-1", medias: 1},
		{name: "sidecar project and title", meta: uploader.Metadata{Title: "Nice Title", Platform: map[string]json.RawMessage{"wistia": json.RawMessage(`{"project_id": 77}`)}}, medias: 1, project: "77"},
		{name: "failed status", statuses: []string{"queued", "failed"}, waitFor: "ready", wantErr: "failed", permanent: true, medias: 1},
		{name: "wrong token", token: "nope", wantErr: "401", permanent: true, medias: 0},
		{name: "429 then success", plan: []string{"429"}, medias: 1},
		{name: "5xx burst", plan: []string{"503", "503", "503"}, medias: 1},
		{name: "created then 502 adopted", plan: []string{"created-502"}, medias: 1},
		{name: "malformed answer adopted on retry", plan: []string{"malformed-created"}, medias: 1},
		{name: "malformed answer is retryable", plan: []string{"malformed", "malformed", "malformed", "malformed", "malformed", "malformed"}, wantErr: "malformed JSON", medias: 0},
		{name: "never ready times out", statuses: []string{"processing"}, waitFor: "ready", wantErr: "not ready", medias: 1},
		{name: "bad sidecar", meta: uploader.Metadata{Platform: map[string]json.RawMessage{"wistia": json.RawMessage(`[1]`)}}, wantErr: "JSON object", permanent: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, srv, cp := registerOnly(t, c.wantReg)
			f.CopyPlan(c.plan...)
			if c.statuses != nil {
				f.SetStatuses(c.statuses...)
			}
			d := newDest(t, srv, new(s3engine.S3), func(o *Options) {
				o.Region, o.WaitFor = c.region, c.waitFor
				if c.token != "" {
					o.Token = c.token
				}
				if c.name == "never ready times out" {
					o.RegisterTimeout = 200 * time.Millisecond
				}
			})
			src := testSource(t, "clip.mp4", c.meta)
			s := &memSession{}
			start := time.Now()
			err := d.Register(context.Background(), src, cp, s)
			medias, _, bad := f.Snapshot()
			if len(bad) > 0 {
				t.Fatalf("contract violations: %q", bad)
			}
			if len(medias) != c.medias {
				t.Fatalf("fake holds %d medias, want %d", len(medias), c.medias)
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				if uploader.IsPermanent(err) != c.permanent {
					t.Fatalf("permanent = %v, want %v (%v)", uploader.IsPermanent(err), c.permanent, err)
				}
				if strings.Contains(err.Error(), d.o.Token) {
					t.Fatalf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			m := medias[0]
			saved := s.last()
			if saved.VendorID != m.HashedID || cp.VendorID != m.HashedID {
				t.Fatalf("VendorID saved %q / in cp %q, want %q", saved.VendorID, cp.VendorID, m.HashedID)
			}
			wantTitle := "clip"
			if c.meta.Title != "" {
				wantTitle = c.meta.Title
			}
			if m.Name != wantTitle {
				t.Fatalf("media name %q, want the clean title %q", m.Name, wantTitle)
			}
			if m.ProjectID != c.project {
				t.Fatalf("project %q, want %q", m.ProjectID, c.project)
			}
			if c.waitFor == "ready" && len(m.Statuses) != 1 {
				t.Fatalf("did not poll to ready: statuses left %q", m.Statuses)
			}
			if c.plan != nil && c.plan[0] == "429" && time.Since(start) < 900*time.Millisecond {
				t.Fatalf("Retry-After not honoured: took %s", time.Since(start))
			}
		})
	}
}

// TestCrashBetweenCopyAndCommit: s3_copy answered but the hashed_id was
// never committed; the next Register must adopt, not copy again.
func TestCrashBetweenCopyAndCommit(t *testing.T) {
	f, srv, cp := registerOnly(t, "")
	d := newDest(t, srv, new(s3engine.S3), nil)
	src := testSource(t, "clip.mp4", uploader.Metadata{Description: "desc"})
	crash := errors.New("power cut")
	s := &memSession{fail: func(cp *uploader.Checkpoint) error {
		if cp.VendorID != "" {
			return crash
		}
		return nil
	}}
	if err := d.Register(context.Background(), src, cp, s); !errors.Is(err, crash) {
		t.Fatalf("first Register = %v, want the save failure", err)
	}
	before := s.last()
	if before.VendorID != "" || before.Extra[extraCopyRequested] != "1" {
		t.Fatalf("committed checkpoint before crash = %+v", before)
	}
	s2 := &memSession{}
	if err := d.Register(context.Background(), src, &before, s2); err != nil {
		t.Fatalf("second Register: %v", err)
	}
	medias, copies, bad := f.Snapshot()
	if len(bad) > 0 {
		t.Fatalf("violations: %q", bad)
	}
	if len(medias) != 1 || copies != 1 {
		t.Fatalf("fake holds %d medias after %d s3_copy calls, want exactly 1 and 1", len(medias), copies)
	}
	if got := s2.last().VendorID; got != medias[0].HashedID {
		t.Fatalf("adopted %q, want %q", got, medias[0].HashedID)
	}
	if medias[0].Desc != "desc" {
		t.Fatalf("description %q", medias[0].Desc)
	}
}

// TestUploadAndRegister runs the whole path through the real S3 engine.
func TestUploadAndRegister(t *testing.T) {
	bucket := newBucket(t)
	f, srv := newFakeWistia(t, bucket, "")
	eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
		Bucket: bucket, Region: minio.Region, Endpoint: minio.Endpoint, PathStyle: true,
		AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
	}, s3engine.EngineOptions{})
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	d := newDest(t, srv, eng, func(o *Options) { o.WaitFor = "ready" })
	src := testSource(t, "sub/clip one.mp4", uploader.Metadata{})
	cp := &uploader.Checkpoint{}
	s := &memSession{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Upload(ctx, src, cp, s); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	wantKey := "news/sub/clip one.mp4"
	if cp.Key != wantKey || cp.Object != "s3://"+bucket+"/"+wantKey || !s.last().Uploaded {
		t.Fatalf("after Upload cp = %+v", cp)
	}
	want, _ := os.ReadFile(src.Path)
	if got := minio.GetObject(t, bucket, wantKey); !bytes.Equal(got, want) {
		t.Fatalf("object content differs (%d bytes, want %d)", len(got), len(want))
	}
	if err := d.Register(ctx, src, cp, s); err != nil {
		t.Fatalf("Register: %v", err)
	}
	medias, _, bad := f.Snapshot()
	if len(bad) > 0 || len(medias) != 1 || s.last().VendorID != medias[0].HashedID || medias[0].Name != "clip one" {
		t.Fatalf("medias %+v, violations %q, cp %+v", medias, bad, s.last())
	}
}

// TestLongName: a title over 255 characters is shortened the same way on
// every try (the name is the recovery handle), within Wistia's limit.
func TestLongName(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	src := &uploader.Source{Folder: "f", RelPath: "a.mp4", JobID: 3, Found: time.Unix(1, 0), Meta: uploader.Metadata{Title: long}}
	a, b := handleName(src, shorten(long, maxName)), handleName(src, shorten(long, maxName))
	if a != b || len(a) > 255 || !utf8.ValidString(a) || !strings.HasSuffix(a, "]") {
		t.Fatalf("handle %q (%d bytes), second try %q", a, len(a), b)
	}

	bucket := newBucket(t)
	f, srv := newFakeWistia(t, bucket, "")
	eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
		Bucket: bucket, Region: minio.Region, Endpoint: minio.Endpoint, PathStyle: true,
		AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
	}, s3engine.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDest(t, srv, eng, nil)
	src = testSource(t, strings.Repeat("x", 240)+".mp4", uploader.Metadata{Title: long})
	cp := &uploader.Checkpoint{}
	s := &memSession{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Upload(ctx, src, cp, s); err != nil {
		t.Fatal(err)
	}
	if err := d.Register(ctx, src, cp, s); err != nil {
		t.Fatalf("Register: %v", err)
	}
	medias, _, bad := f.Snapshot()
	if len(bad) > 0 || len(medias) != 1 || len(medias[0].Name) > 255 {
		t.Fatalf("medias %+v, violations %q", medias, bad)
	}
}
