package bluebillywig

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig/bluebillywigtest"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

var minio *testenv.MinIO

func TestMain(m *testing.M) { testenv.RunWithMinIO(m, &minio) }

const (
	testKeyID  = "42"
	testSecret = "bb-shared-secret-Ünïcode"
)

var bucketSeq atomic.Int64

type env struct {
	srv     *bluebillywigtest.Server
	bucket  string
	account string
}

func setup(t *testing.T) *env {
	t.Helper()
	pub := fmt.Sprintf("demo%d", bucketSeq.Add(1))
	e := &env{bucket: "mm." + pub + ".bbvms.com", account: "acct" + pub}
	minio.MakeBucket(t, e.bucket)
	e.srv = bluebillywigtest.New(t, minio, e.bucket, bluebillywigtest.Options{KeyID: testKeyID, Secret: testSecret, Account: e.account})
	return e
}

func (e *env) options(t *testing.T, engine *s3engine.S3) Options {
	return Options{
		Name: "bb", Publication: "demo", Account: e.account, APIKeyID: testKeyID, APISecret: testSecret,
		APIURL: e.srv.URL, PollInterval: 5 * time.Millisecond, RegisterTimeout: 10 * time.Second,
		S3: engine, HTTPClient: &http.Client{Timeout: 20 * time.Second}, Logger: slog.New(slog.DiscardHandler),
	}
}

// engine builds the real transfer engine pointed at the recording proxy.
func (e *env) engine(t *testing.T) *s3engine.S3 {
	t.Helper()
	eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
		Bucket: e.bucket, Region: minio.Region, Endpoint: e.srv.S3URL, PathStyle: true,
		AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
	}, s3engine.EngineOptions{PartSize: 5 << 20, Concurrency: 2})
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return eng
}

// placeholder is an engine value for tests that never reach S3 (Register only).
var placeholder = &s3engine.S3{}

// putDirect writes the object the way Upload would (ACL public-read), without
// the engine, so Register can be tested on its own.
func (e *env) putDirect(t *testing.T, key string, body []byte) {
	t.Helper()
	c := s3.New(s3.Options{
		Region: minio.Region, BaseEndpoint: aws.String(e.srv.S3URL), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(minio.AccessKey, minio.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(e.bucket), Key: aws.String(key), Body: bytes.NewReader(body),
		ACL: "public-read", ContentType: aws.String("video/mp4"),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func writeSource(t *testing.T, name string, size int, meta uploader.Metadata) *uploader.Source {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, name)
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	return &uploader.Source{JobID: 77, Folder: "news", Path: p, RelPath: name, Size: st.Size(),
		ModTime: st.ModTime(), Found: time.Now(), Meta: meta}
}

// registered prepares a checkpoint as a finished Upload leaves it.
func (e *env) registered(t *testing.T, src *uploader.Source) *uploader.Checkpoint {
	name := uniqueName(src)
	key := objectKey(e.account, name)
	data, _ := os.ReadFile(src.Path)
	e.putDirect(t, key, data)
	return &uploader.Checkpoint{Bucket: e.bucket, Key: key, Uploaded: true, Object: "s3://" + e.bucket + "/" + key,
		Extra: map[string]string{"sourceid": strings.TrimSuffix(name, filepath.Ext(name))}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRPCTokenVectors(t *testing.T) {
	// Computed independently with Python's hmac/struct.
	tests := []struct {
		keyID, secret string
		unix          int64
		want          string
	}{
		{"12", "s3cr3t", 1700000000, "12-5168d77666475f032b32c9ef6a03773eb2bb83f1"},
		{"abc", "a-b-c-secret", 1700000039, "abc-a9b6307e7e7cc9306bfdca119cf6331b162aa32f"},
		{"abc", "a-b-c-secret", 1700000040, "abc-c5644a51315ee9bfb1ba20265c343686a35182f6"},
		{"abc", "a-b-c-secret", 1700000159, "abc-c5644a51315ee9bfb1ba20265c343686a35182f6"},
		{"7", "", 0, "7-dab69ad98e28764f977ee2487e4f3f6873b2a297"},
	}
	for _, tt := range tests {
		if got := rpcToken(tt.keyID, tt.secret, time.Unix(tt.unix, 0)); got != tt.want {
			t.Errorf("rpcToken(%s, %d) = %s, want %s", tt.keyID, tt.unix, got, tt.want)
		}
	}
}

func TestUniqueName(t *testing.T) {
	mt := time.Unix(1700000000, 0)
	tests := []struct {
		rel  string
		job  uint64
		want string // regexp
	}{
		{"clip.mp4", 77, `^clip-25[0-9a-f]{4}\.mp4$`},
		{"sub/My Clip (final).MOV", 36, `^My-Clip-final-10[0-9a-f]{4}\.mov$`},
		{"v1.2.final.mxf", 1, `^v1-2-final-1[0-9a-f]{4}\.mxf$`},
		{"ünïcödé.mp4", 2, `^n-c-d-2[0-9a-f]{4}\.mp4$`},
		{"###.mp4", 3, `^media-3[0-9a-f]{4}\.mp4$`},
		{"noext", 4, `^noext-4[0-9a-f]{4}$`},
		{strings.Repeat("a", 300) + ".mp4", 5, `^a{100}-5[0-9a-f]{4}\.mp4$`},
	}
	for _, tt := range tests {
		src := &uploader.Source{JobID: tt.job, RelPath: tt.rel, Size: 10, ModTime: mt}
		got := uniqueName(src)
		if !regexp.MustCompile(tt.want).MatchString(got) {
			t.Errorf("uniqueName(%q) = %q, want match %s", tt.rel, got, tt.want)
		}
		if again := uniqueName(src); again != got {
			t.Errorf("uniqueName(%q) not deterministic: %q then %q", tt.rel, got, again)
		}
	}
	a := uniqueName(&uploader.Source{JobID: 1, RelPath: "x.mp4", Size: 10, ModTime: mt})
	b := uniqueName(&uploader.Source{JobID: 1, RelPath: "x.mp4", Size: 11, ModTime: mt})
	if a == b {
		t.Errorf("different versions share the name %q", a)
	}
}

func TestNewValidation(t *testing.T) {
	ok := Options{Name: "bb", Publication: "demo", Account: "a", APIKeyID: "1", APISecret: "s", S3: placeholder}
	tests := []struct {
		name   string
		mutate func(*Options)
		errHas string
	}{
		{"ok", func(*Options) {}, ""},
		{"no name", func(o *Options) { o.Name = "" }, "name is required"},
		{"no publication", func(o *Options) { o.Publication = "" }, "publication"},
		{"no account", func(o *Options) { o.Account = "" }, "account"},
		{"no key", func(o *Options) { o.APIKeyID = "" }, "key id"},
		{"no secret", func(o *Options) { o.APISecret = "" }, "secret"},
		{"no s3", func(o *Options) { o.S3 = nil }, "S3"},
		{"bad url", func(o *Options) { o.APIURL = "ftp://x" }, "api url"},
	}
	for _, tt := range tests {
		o := ok
		tt.mutate(&o)
		d, err := New(o)
		if tt.errHas == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				continue
			}
			if d.Type() != "bluebillywig" || d.Name() != "bb" || d.base != "https://demo.bbvms.com" {
				t.Errorf("%s: type %q name %q base %q", tt.name, d.Type(), d.Name(), d.base)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("%s: err %v, want containing %q", tt.name, err, tt.errHas)
		}

	}
}

func TestSearchURL(t *testing.T) {
	d, err := New(Options{Name: "bb", Publication: "demo", Account: "a", APIKeyID: "1", APISecret: "s", S3: placeholder})
	if err != nil {
		t.Fatal(err)
	}
	got := d.searchURL(`clip"x-1a2b`)
	want := "https://demo.bbvms.com/sapi/mediaclip?fq%5B0%5D=%28sourceid_string%3A%22clipx-1a2b%22%29&limit=15&offset=0&q=%2A"
	if got != want {
		t.Errorf("searchURL = %s\nwant       %s", got, want)
	}
}

// TestRegister drives Register against the fake SAPI with an object placed
// in MinIO as Upload leaves it.
func TestRegister(t *testing.T) {
	meta := uploader.Metadata{Title: "Evening news", Description: "d", Tags: []string{"news", "evening"}}
	tests := []struct {
		name       string
		secret     string
		now        func() time.Time
		script     []int
		retryAfter string
		idAsString bool
		meta       uploader.Metadata
		wantErr    string
		permanent  bool
		minElapsed time.Duration
	}{
		{name: "happy path numeric id", meta: meta},
		{name: "string id, no metadata: title from the file name", idAsString: true},
		{name: "429 with Retry-After then success", script: []int{429}, retryAfter: "1", meta: meta, minElapsed: time.Second},
		{name: "5xx burst then success", script: []int{500, 502, 503}, meta: meta},
		{name: "wrong secret", secret: "not-the-secret", wantErr: "HTTP 401", permanent: true},
		{name: "stale clock", now: func() time.Time { return time.Now().Add(-time.Hour) }, wantErr: "HTTP 401", permanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			e.srv.Script(tt.retryAfter, tt.script...)
			e.srv.IDAsString(tt.idAsString)
			e.srv.SetDelay(2)
			o := e.options(t, placeholder)
			if tt.secret != "" {
				o.APISecret = tt.secret
			}
			o.Now = tt.now
			d, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			src := writeSource(t, "evening news.mp4", 1000, tt.meta)
			cp := e.registered(t, src)
			sess := &memSession{}
			start := time.Now()
			err = d.Register(ctxT(t), src, cp, sess)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if uploader.IsPermanent(err) != tt.permanent {
					t.Errorf("permanent = %v, want %v", uploader.IsPermanent(err), tt.permanent)
				}
				if strings.Contains(err.Error(), o.APISecret) || strings.Contains(err.Error(), testKeyID+"-") {
					t.Errorf("error leaks credentials: %v", err)
				}
				if cp.VendorID != "" {
					t.Errorf("VendorID set on failure: %q", cp.VendorID)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if el := time.Since(start); el < tt.minElapsed {
				t.Errorf("finished in %s, Retry-After asked for %s", el, tt.minElapsed)
			}
			if cp.VendorID != "1001" {
				t.Errorf("VendorID = %q, want 1001", cp.VendorID)
			}
			// The id is saved before the metadata update.
			if len(sess.saves) == 0 || sess.saves[0].VendorID != "1001" || sess.saves[0].Extra["metadata_applied"] != "" {
				t.Errorf("first save = %+v, want the id alone", sess.saves)
			}
			upd, hasUpd := lastUpdate(e, 1001)
			if tt.meta.Title == "" {
				// Not the suffixed unique object name.
				if !hasUpd || upd["title"] != "evening news" || len(upd) != 1 {
					t.Errorf("update = %v, want the original file name as title", upd)
				}
			} else {
				if !hasUpd || upd["title"] != "Evening news" || upd["description"] != "d" || fmt.Sprint(upd["tags"]) != "[news evening]" {
					t.Errorf("update = %v", upd)
				}
				if sess.last().Extra["metadata_applied"] != "1" {
					t.Errorf("metadata_applied not saved: %+v", sess.last())
				}
			}
			if cl := e.srv.Clips(); len(cl) != 1 || cl[0].ID != 1001 || cl[0].SourceID != cp.Extra["sourceid"] {
				t.Errorf("fake clips = %v", cl)
			}
		})
	}
}

// TestSecretForms: the official SDKs take the secret as "<id>-<hex>".
func TestSecretForms(t *testing.T) {
	tests := []struct{ id, secret string }{
		{testKeyID, testSecret},
		{"", testKeyID + "-" + testSecret},
		{testKeyID, testKeyID + "-" + testSecret},
	}
	for _, tt := range tests {
		e := setup(t)
		o := e.options(t, placeholder)
		o.APIKeyID, o.APISecret = tt.id, tt.secret
		d, err := New(o)
		if err != nil {
			t.Fatalf("New(%q, secret form %d): %v", tt.id, len(tt.secret), err)
		}
		src := writeSource(t, "s.mp4", 100, uploader.Metadata{})
		cp := e.registered(t, src)
		if err := d.Register(ctxT(t), src, cp, &memSession{}); err != nil {
			t.Errorf("id %q: Register: %v", tt.id, err)
		}
	}
}

func TestRegisterFilterIgnoredIsError(t *testing.T) {
	e := setup(t)
	e.srv.IgnoreFilter(true)
	d, err := New(e.options(t, placeholder))
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, "a.mp4", 100, uploader.Metadata{})
	cp := e.registered(t, src)
	err = d.Register(ctxT(t), src, cp, &memSession{})
	if err == nil || !strings.Contains(err.Error(), "neither numfound nor items") {
		t.Fatalf("err = %v, want a 'neither numfound nor items' error", err)
	}
	if e.srv.Requests() != 1 {
		t.Errorf("searched %d times; an ignored filter must not be polled as 'not yet'", e.srv.Requests())
	}
}

func TestRegisterTimeout(t *testing.T) {
	e := setup(t)
	o := e.options(t, placeholder)
	o.RegisterTimeout = 500 * time.Millisecond
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, "never.mp4", 10, uploader.Metadata{})
	name := uniqueName(src)
	cp := &uploader.Checkpoint{Uploaded: true, Extra: map[string]string{"sourceid": strings.TrimSuffix(name, ".mp4")}}
	start := time.Now()
	err = d.Register(ctxT(t), src, cp, &memSession{})
	want := "mediaclip with sourceid " + cp.Extra["sourceid"] + " did not appear within 500ms"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want containing %q", err, want)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("timeout took %s", el)
	}
	if e.srv.Requests() < 3 {
		t.Errorf("only %d searches before the timeout", e.srv.Requests())
	}
}

func TestRegisterCancel(t *testing.T) {
	e := setup(t)
	o := e.options(t, placeholder)
	o.PollInterval = time.Hour
	d, _ := New(o)
	src := writeSource(t, "c.mp4", 10, uploader.Metadata{})
	cp := &uploader.Checkpoint{Extra: map[string]string{"sourceid": "nothing"}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := d.Register(ctx, src, cp, &memSession{})
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("err = %v, want the context error", err)
	}
}

// TestUploadAndRegister runs the whole flow through the real S3 engine,
// including a crash after upload and one after the SAPI answer.
func TestUploadAndRegister(t *testing.T) {
	for _, size := range []int{300 << 10, 6 << 20} { // single PUT and multipart
		t.Run(fmt.Sprint(size), func(t *testing.T) { testUploadAndRegister(t, size) })
	}
}

func testUploadAndRegister(t *testing.T, size int) {
	e := setup(t)
	e.srv.SetDelay(3)
	eng := e.engine(t)
	d, err := New(e.options(t, eng))
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, "Clip One.MP4", size, uploader.Metadata{Title: "One"})
	ctx := ctxT(t)

	// Upload twice: the second call (a retry after a crash before the
	// daemon committed) must reuse the same key and not duplicate objects.
	sess := &memSession{}
	cp := &uploader.Checkpoint{}
	if err := d.Upload(ctx, src, cp, sess); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	cp2 := &uploader.Checkpoint{}
	if err := d.Upload(ctx, src, cp2, &memSession{}); err != nil {
		t.Fatalf("Upload again: %v", err)
	}
	if cp.Key != cp2.Key || cp.Extra["sourceid"] != cp2.Extra["sourceid"] {
		t.Fatalf("retry used another name: %q vs %q", cp.Key, cp2.Key)
	}
	wantKey := "upload/" + e.account + "/" + cp.Extra["sourceid"] + ".mp4"
	if cp.Key != wantKey || cp.Object != "s3://"+e.bucket+"/"+wantKey || !cp.Uploaded {
		t.Fatalf("cp = %+v, want key %s", cp, wantKey)
	}
	if keys := minio.ListKeys(t, e.bucket); len(keys) != 1 || keys[0] != wantKey {
		t.Fatalf("bucket holds %v", keys)
	}
	want, _ := os.ReadFile(src.Path)
	if got := minio.GetObject(t, e.bucket, wantKey); !bytes.Equal(got, want) {
		t.Fatalf("object differs from the file (%d vs %d bytes)", len(got), len(want))
	}
	if saved := sess.last(); saved.Extra["sourceid"] != cp.Extra["sourceid"] || !saved.Uploaded {
		t.Errorf("last saved cp = %+v", saved)
	}

	// Register, then "crash" before the daemon commits: the second run
	// starts from the pre-Register checkpoint and must find the same clip.
	pre := cloneCP(cp)
	if err := d.Register(ctx, src, cp, &memSession{}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	again := cloneCP(&pre)
	if err := d.Register(ctx, src, &again, &memSession{}); err != nil {
		t.Fatalf("Register after crash: %v", err)
	}
	if cp.VendorID == "" || again.VendorID != cp.VendorID {
		t.Errorf("ids differ: %q then %q", cp.VendorID, again.VendorID)
	}
	if len(e.srv.Clips()) != 1 {
		t.Errorf("fake holds %d clips, want 1", len(e.srv.Clips()))
	}
	if n := e.srv.Writes(e.bucket, wantKey); n > 2 {
		t.Errorf("object written %d times", n)
	}

	// A third run from the committed cp does nothing more.
	reqs := e.srv.Requests()
	if err := d.Register(ctx, src, cp, &memSession{}); err != nil {
		t.Fatal(err)
	}
	if e.srv.Requests() != reqs {
		t.Errorf("finished Register called the SAPI again (%d requests)", e.srv.Requests()-reqs)
	}
}

// lastUpdate returns the last metadata update of clip id.
func lastUpdate(e *env, id int) (map[string]any, bool) {
	for _, c := range e.srv.Clips() {
		if c.ID == id && len(c.Updates) > 0 {
			return c.Updates[len(c.Updates)-1], true
		}
	}
	return nil, false
}
