package wistia

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

const token = "tok-wistia-secret"

// ---- fake Wistia ----

type fakeMedia struct {
	ID        int
	HashedID  string
	Name      string
	ProjectID string
	Desc      string
	Statuses  []string // returned one per status GET; the last one sticks
}

// fakeWistia enforces the s3_copy and Data API contract this package relies on.
type fakeWistia struct {
	t      *testing.T
	bucket string
	region string // expected region param; "" = must be absent
	s3     *s3.Client

	mu       sync.Mutex
	medias   []*fakeMedia
	copyPlan []string // per s3_copy call before normal handling: "429", "503", "created-502", "malformed-created"
	statuses []string // status sequence for new medias
	copies   int
	bad      []string // contract violations seen
}

func newFakeWistia(t *testing.T, bucket, region string) (*fakeWistia, *httptest.Server) {
	f := &fakeWistia{t: t, bucket: bucket, region: region, s3: minio.Client(), statuses: []string{"queued", "processing", "ready"}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeWistia) violation(w http.ResponseWriter, code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	f.bad = append(f.bad, msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (f *fakeWistia) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"Invalid credentials."}`)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/s3_copy":
		f.s3Copy(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/medias.json":
		// Medias#list documents name (exact match), type, tags,
		// hashed_ids, paging and sorting; anything else is not a filter.
		for k := range r.URL.Query() {
			switch k {
			case "name", "type", "tags", "hashed_ids", "hashed_ids[]", "page", "per_page", "sort_by", "sort_direction":
			default:
				f.violation(w, http.StatusBadRequest, "list filter %q is not documented", k)
				return
			}
		}
		var out []map[string]any
		for _, m := range f.medias {
			if m.Name != r.URL.Query().Get("name") {
				continue
			}
			if p := r.URL.Query().Get("project_id"); p != "" && p != m.ProjectID {
				continue
			}
			out = append(out, f.json(m))
		}
		writeJSON(w, out)
	case strings.HasPrefix(r.URL.Path, "/v1/medias/") && strings.HasSuffix(r.URL.Path, ".json"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/medias/"), ".json")
		m := f.byHashed(id)
		if m == nil {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"Media not found"}`)
			return
		}
		switch r.Method {
		case http.MethodGet:
			st := m.Statuses[0]
			if len(m.Statuses) > 1 {
				m.Statuses = m.Statuses[1:]
			}
			out := f.json(m)
			out["status"] = st
			writeJSON(w, out)
		case http.MethodPut:
			if err := r.ParseForm(); err != nil || r.PostForm.Get("name") == "" || len(r.PostForm.Get("name")) > 255 {
				f.violation(w, http.StatusBadRequest, "rename without a valid form name")
				return
			}
			m.Name = r.PostForm.Get("name")
			writeJSON(w, f.json(m))
		default:
			f.violation(w, http.StatusMethodNotAllowed, "%s %s", r.Method, r.URL.Path)
		}
	default:
		f.violation(w, http.StatusNotFound, "unexpected %s %s", r.Method, r.URL.Path)
	}
}

func (f *fakeWistia) s3Copy(w http.ResponseWriter, r *http.Request) {
	f.copies++
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		f.violation(w, http.StatusBadRequest, "s3_copy content type %q", ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		f.violation(w, http.StatusBadRequest, "s3_copy form: %v", err)
		return
	}
	p := r.PostForm
	bucket, key := p.Get("bucket"), p.Get("source_file")
	switch {
	case bucket != f.bucket:
		f.violation(w, http.StatusBadRequest, "bucket %q, want the bare name %q", bucket, f.bucket)
		return
	case key == "" || strings.HasPrefix(key, "/"):
		f.violation(w, http.StatusBadRequest, "source_file %q must be a key without a leading /", key)
		return
	case p.Get("region") != f.region || (f.region == "" && p.Has("region")):
		f.violation(w, http.StatusBadRequest, "region %q (present %v), want %q", p.Get("region"), p.Has("region"), f.region)
		return
	case p.Get("name") == "":
		f.violation(w, http.StatusBadRequest, "no name")
		return
	case len(p.Get("name")) > 255:
		f.violation(w, http.StatusBadRequest, "name longer than 255 characters")
		return
	}
	if _, err := f.s3.HeadObject(r.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		f.violation(w, http.StatusBadRequest, "s3://%s/%s is not in the bucket: %v", bucket, key, err)
		return
	}
	plan := ""
	if len(f.copyPlan) > 0 {
		plan, f.copyPlan = f.copyPlan[0], f.copyPlan[1:]
	}
	switch plan {
	case "429":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"rate limited"}`)
		return
	case "503":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"try later"}`)
		return
	case "malformed":
		io.WriteString(w, `{"hashed_id": `)
		return
	}
	m := &fakeMedia{ID: 1000 + len(f.medias), HashedID: fmt.Sprintf("abc123xy%02d", len(f.medias)),
		Name: p.Get("name"), ProjectID: p.Get("project_id"), Desc: p.Get("description"),
		Statuses: append([]string(nil), f.statuses...)}
	f.medias = append(f.medias, m)
	switch plan {
	case "created-502":
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `<html>bad gateway</html>`)
	case "malformed-created":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": 12, "hashed_id": "abc`)
	default:
		writeJSON(w, f.json(m))
	}
}

func (f *fakeWistia) byHashed(id string) *fakeMedia {
	for _, m := range f.medias {
		if m.HashedID == id {
			return m
		}
	}
	return nil
}

func (f *fakeWistia) json(m *fakeMedia) map[string]any {
	return map[string]any{"id": m.ID, "hashed_id": m.HashedID, "name": m.Name, "status": m.Statuses[0],
		"description": m.Desc, "project": map[string]any{"id": m.ProjectID}}
}

func (f *fakeWistia) snapshot() (medias []fakeMedia, copies int, bad []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.medias {
		medias = append(medias, *m)
	}
	return medias, f.copies, append([]string(nil), f.bad...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ---- sessions ----

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

func newDest(t *testing.T, srv *httptest.Server, eng *s3engine.S3, mod func(*Options)) *Destination {
	t.Helper()
	o := Options{Name: "wis", Token: token, UploadURL: srv.URL, APIURL: srv.URL, KeyTemplate: "{folder}/{relpath}",
		S3: eng, PollInterval: 5 * time.Millisecond, RegisterTimeout: 5 * time.Second, HTTPClient: srv.Client(),
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
func registerOnly(t *testing.T, region string) (*fakeWistia, *httptest.Server, *uploader.Checkpoint) {
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
			f.copyPlan = c.plan
			if c.statuses != nil {
				f.statuses = c.statuses
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
			medias, _, bad := f.snapshot()
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
	medias, copies, bad := f.snapshot()
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
	medias, _, bad := f.snapshot()
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
	medias, _, bad := f.snapshot()
	if len(bad) > 0 || len(medias) != 1 || len(medias[0].Name) > 255 {
		t.Fatalf("medias %+v, violations %q", medias, bad)
	}
}
