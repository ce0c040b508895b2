package s3engine

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

// The package's tests share one MinIO server, started by the first test that
// needs it (so fuzzing and pure unit tests run without it); each test uses
// its own bucket.
var (
	minioOnce    sync.Once
	testMinIO    *testenv.MinIO
	testMinIOErr error
	bucketSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testMinIO != nil {
		testMinIO.Stop()
	}
	os.Exit(code)
}

func minioT(tb testing.TB) *testenv.MinIO {
	tb.Helper()
	minioOnce.Do(func() { testMinIO, testMinIOErr = testenv.StartMinIO() })
	if testMinIOErr != nil {
		tb.Fatalf("minio: %v", testMinIOErr)
	}
	return testMinIO
}

var nonBucket = regexp.MustCompile(`[^a-z0-9-]+`)

// newBucket creates a fresh bucket named after the test.
func newBucket(tb testing.TB) string {
	m := minioT(tb)
	name := nonBucket.ReplaceAllString(strings.ToLower(tb.Name()), "-")
	name = fmt.Sprintf("t%d-%s", bucketSeq.Add(1), name)
	if len(name) > 60 {
		name = name[:60]
	}
	name = strings.TrimRight(name, "-")
	m.MakeBucket(tb, name)
	return name
}

// counter is a RoundTripper that counts UploadPart requests (and records
// their part numbers) and every request, before passing them on.
type counter struct {
	next     http.RoundTripper
	mu       sync.Mutex
	parts    []int
	requests int
	puts     int
	payload  map[string]bool // X-Amz-Content-Sha256 values of body requests
	expect   int             // requests that wait for "100 Continue"
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.requests++
	q := r.URL.Query()
	if r.Method == http.MethodPut {
		if c.payload == nil {
			c.payload = map[string]bool{}
		}
		c.payload[r.Header.Get("X-Amz-Content-Sha256")] = true
	}
	if r.Header.Get("Expect") != "" {
		c.expect++
	}
	if r.Method == http.MethodPut && q.Has("partNumber") && q.Has("uploadId") {
		n, _ := strconv.Atoi(q.Get("partNumber"))
		c.parts = append(c.parts, n)
	} else if r.Method == http.MethodPut {
		c.puts++
	}
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *counter) snapshot() (parts []int, requests int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := slices.Clone(c.parts)
	slices.Sort(p)
	return p, c.requests
}

type engineCfg struct {
	opts     func(*S3Options)
	eng      EngineOptions
	endpoint string // default: MinIO
	count    *counter
}

func newEngine(tb testing.TB, bucket string, cfg engineCfg) *S3 {
	tb.Helper()
	m := minioT(tb)
	o := S3Options{
		Bucket: bucket, Region: m.Region, Endpoint: m.Endpoint, PathStyle: true,
		AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey,
	}
	if cfg.endpoint != "" {
		o.Endpoint = cfg.endpoint
	}
	if cfg.opts != nil {
		cfg.opts(&o)
	}
	eng := cfg.eng
	if eng.Logger == nil {
		eng.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.count != nil {
		cfg.count.next = NewTransport(eng)
		eng.HTTPClient = &http.Client{Transport: cfg.count}
	}
	c, err := NewS3(context.Background(), o, eng)
	if err != nil {
		tb.Fatalf("NewS3: %v", err)
	}
	return c
}

// writeFile writes size pseudo-random bytes (fixed seed) and returns the
// uploader.Source for that version.
func writeFile(tb testing.TB, dir, name string, size int64, seed uint64) (*uploader.Source, []byte) {
	tb.Helper()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	rng.Read(data)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return sourceFor(tb, p, name), data
}

func sourceFor(tb testing.TB, p, rel string) *uploader.Source {
	tb.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return &uploader.Source{
		JobID: 7, Folder: "news", Path: p, RelPath: rel, Size: fi.Size(), ModTime: fi.ModTime(),
		Inode: st.Ino, Device: uint64(st.Dev), Found: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	}
}

// memSession keeps the last saved checkpoint (as JSON, like the daemon) and
// can be told to fail every Save after the first okSaves.
type memSession struct {
	mu      sync.Mutex
	okSaves int // <0: never fail
	// failWhen, when set, fails the saves whose checkpoint it matches.
	failWhen func(cp *uploader.Checkpoint) bool
	saves    int
	last     []byte
	prog     int64
}

func newSession() *memSession { return &memSession{okSaves: -1} }

func (s *memSession) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.okSaves >= 0 && s.saves >= s.okSaves) || (s.failWhen != nil && s.failWhen(cp)) {
		return errors.New("disk full (test)")
	}
	s.saves++
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	s.last = b
	return nil
}

func (s *memSession) Progress(n int64) {
	s.mu.Lock()
	s.prog = max(s.prog, n)
	s.mu.Unlock()
}

// saved returns the last durably saved checkpoint, as a restarted daemon
// would load it.
func (s *memSession) saved(tb testing.TB) *uploader.Checkpoint {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var cp uploader.Checkpoint
	if err := json.Unmarshal(s.last, &cp); err != nil {
		tb.Fatalf("saved checkpoint: %v", err)
	}
	return &cp
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func openUploads(tb testing.TB, bucket string) []string {
	tb.Helper()
	out, err := minioT(tb).Client().ListMultipartUploads(ctxT(tb), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		tb.Fatalf("list uploads: %v", err)
	}
	var ids []string
	for _, u := range out.Uploads {
		ids = append(ids, aws.ToString(u.UploadId))
	}
	return ids
}

func TestPutSingle(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{opts: func(o *S3Options) {
		o.Metadata = map[string]string{"origin": "watchfolder", "job": "0"}
		o.CacheControl = "max-age=60"
		o.ContentDisposition = `attachment; filename="clip.mov"`
		o.ACL = "private"
	}})
	src, data := writeFile(t, t.TempDir(), "clip.mov", 3*mib+17, 1)
	cp, s := &uploader.Checkpoint{}, newSession()
	err := c.Put(ctxT(t), src, PutInput{Key: "in/clip.mov", Metadata: map[string]string{"Job": "7"}}, cp, s)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := minioT(t).GetObject(t, bucket, "in/clip.mov"); !bytes.Equal(got, data) {
		t.Fatalf("object differs from file (%d vs %d bytes)", len(got), len(data))
	}
	h, err := c.Client().HeadObject(ctxT(t), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("in/clip.mov")})
	if err != nil {
		t.Fatal(err)
	}
	wantSHA := sha256Hex(data)
	checks := []struct{ what, got, want string }{
		{"content type", aws.ToString(h.ContentType), "video/quicktime"},
		{"cache control", aws.ToString(h.CacheControl), "max-age=60"},
		{"content disposition", aws.ToString(h.ContentDisposition), `attachment; filename="clip.mov"`},
		{"meta origin", h.Metadata["origin"], "watchfolder"},
		{"meta job (in.Metadata wins)", h.Metadata["job"], "7"},
		{"meta sha256", h.Metadata["sha256"], wantSHA},
		{"cp.SHA256", cp.SHA256, wantSHA},
		{"cp.Object", cp.Object, "s3://" + bucket + "/in/clip.mov"},
		{"cp.ETag", cp.ETag, strings.Trim(aws.ToString(h.ETag), `"`)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %q, want %q", ck.what, ck.got, ck.want)
		}
	}
	if !cp.Uploaded || cp.UploadID != "" {
		t.Errorf("cp = %+v, want Uploaded and no upload id", cp)
	}
	if saved := s.saved(t); !saved.Uploaded {
		t.Errorf("saved checkpoint not marked uploaded: %+v", saved)
	}
	if s.prog != src.Size {
		t.Errorf("progress = %d, want %d", s.prog, src.Size)
	}
	// A second Put of an uploaded checkpoint is a no-op.
	cnt := &counter{}
	c2 := newEngine(t, bucket, engineCfg{count: cnt})
	if err := c2.Put(ctxT(t), src, PutInput{Key: "in/clip.mov"}, cp, s); err != nil {
		t.Fatal(err)
	}
	if _, n := cnt.snapshot(); n != 0 {
		t.Errorf("Put of an uploaded checkpoint sent %d requests", n)
	}
}

// TestPutSingleRoundTrips: a single PUT is verified from the store's answer
// (echoed CRC32C, or the ETag for md5), so it costs one request; with no
// checksum the HEAD still checks the stored size.
func TestPutSingleRoundTrips(t *testing.T) {
	for alg, want := range map[string]int{ChecksumCRC32C: 1, ChecksumMD5: 1, ChecksumNone: 2} {
		t.Run(alg, func(t *testing.T) {
			bucket := newBucket(t)
			cnt := &counter{}
			c := newEngine(t, bucket, engineCfg{opts: func(o *S3Options) { o.Checksum = alg }, count: cnt})
			src, data := writeFile(t, t.TempDir(), "clip.mp4", 256<<10, 4)
			cp := &uploader.Checkpoint{}
			if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, newSession()); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got := minioT(t).GetObject(t, bucket, "clip.mp4"); !bytes.Equal(got, data) {
				t.Fatal("object differs from file")
			}
			if _, n := cnt.snapshot(); n != want {
				t.Errorf("%d requests, want %d", n, want)
			}
			h, err := c.Client().HeadObject(ctxT(t), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("clip.mp4")})
			if err != nil {
				t.Fatal(err)
			}
			if etag := strings.Trim(aws.ToString(h.ETag), `"`); !cp.Uploaded || cp.ETag != etag {
				t.Errorf("cp.ETag %q, stored %q (uploaded %v)", cp.ETag, etag, cp.Uploaded)
			}
		})
	}
}

func TestPutEmptyFile(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{})
	src, _ := writeFile(t, t.TempDir(), "empty.wav", 0, 1)
	cp := &uploader.Checkpoint{}
	if err := c.Put(ctxT(t), src, PutInput{Key: "empty.wav"}, cp, newSession()); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := minioT(t).GetObject(t, bucket, "empty.wav"); len(got) != 0 || cp.SHA256 != sha256Hex(nil) {
		t.Fatalf("got %d bytes, sha %s", len(got), cp.SHA256)
	}
}

func TestPutMultipart(t *testing.T) {
	const size = 23*mib + 12345
	for _, alg := range []string{"crc32c", "md5", "none"} {
		t.Run(alg, func(t *testing.T) {
			bucket := newBucket(t)
			cnt := &counter{}
			c := newEngine(t, bucket, engineCfg{
				opts:  func(o *S3Options) { o.Checksum = alg; o.ContentType = "video/x-test" },
				eng:   EngineOptions{PartSize: 5 * mib, Concurrency: 3},
				count: cnt,
			})
			src, data := writeFile(t, t.TempDir(), "big.mp4", size, 2)
			cp, s := &uploader.Checkpoint{}, newSession()
			if err := c.Put(ctxT(t), src, PutInput{Key: "big.mp4"}, cp, s); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got := minioT(t).GetObject(t, bucket, "big.mp4"); !bytes.Equal(got, data) {
				t.Fatalf("object differs from file")
			}
			if len(cp.Parts) != 5 || cp.PartSize != 5*mib || cp.Checksum != alg {
				t.Fatalf("cp: %d parts of %d, checksum %q", len(cp.Parts), cp.PartSize, cp.Checksum)
			}
			var total int64
			for i, p := range cp.Parts {
				total += p.Size
				if p.Number != int32(i+1) || p.ETag == "" || (alg != "none") != (p.Checksum != "") {
					t.Errorf("part %d: %+v", i, p)
				}
			}
			if total != size {
				t.Errorf("parts cover %d bytes, want %d", total, size)
			}
			if !cp.Uploaded || cp.SHA256 != sha256Hex(data) || cp.Object != "s3://"+bucket+"/big.mp4" || cp.ETag == "" {
				t.Errorf("cp = %+v", cp)
			}
			if parts, _ := cnt.snapshot(); !slices.Equal(parts, []int{1, 2, 3, 4, 5}) {
				t.Errorf("parts sent: %v", parts)
			}
			// Bodies are not SHA-256 hashed for SigV4: the explicit
			// checksum covers them.
			// Nor do they wait a round trip for "100 Continue" first.
			if cnt.expect != 0 {
				t.Errorf("%d requests sent Expect: 100-continue", cnt.expect)
			}
			if len(cnt.payload) != 1 || !cnt.payload["UNSIGNED-PAYLOAD"] {
				t.Errorf("X-Amz-Content-Sha256 of part uploads: %v, want only UNSIGNED-PAYLOAD", cnt.payload)
			}
			h, err := c.Client().HeadObject(ctxT(t), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("big.mp4")})
			if err != nil {
				t.Fatal(err)
			}
			if alg == "crc32c" {
				// The verification in Put relies on the store reporting
				// the composite checksum: make sure it is not skipped.
				want, _, _ := compositeSums(alg, cp.Parts)
				hc, err := c.Client().HeadObject(ctxT(t), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("big.mp4"), ChecksumMode: "ENABLED"})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("store reports CRC32C %q (%s), computed %q", aws.ToString(hc.ChecksumCRC32C), hc.ChecksumType, want)
				if got := aws.ToString(hc.ChecksumCRC32C); got == "" || !sameChecksum(got, want) {
					t.Errorf("store CRC32C %q, computed %q", got, want)
				}
			}
			if alg == "md5" {
				want, _ := compositeSumsETag(cp.Parts)
				if cp.ETag != want {
					t.Errorf("ETag %q, computed %q", cp.ETag, want)
				}
			}
			if ct := aws.ToString(h.ContentType); ct != "video/x-test" {
				t.Errorf("content type %q", ct)
			}
			if s.prog != size {
				t.Errorf("progress = %d, want %d", s.prog, size)
			}
			if ids := openUploads(t, bucket); len(ids) != 0 {
				t.Errorf("open uploads left: %v", ids)
			}
		})
	}
}

// TestPutResume: the checkpoint store fails after the create + K part saves;
// a second Put from the last saved checkpoint sends only the other parts.
func TestPutResume(t *testing.T) {
	const size, k = 23 * mib, 2
	for _, conc := range []int{1, 4} {
		t.Run("concurrency="+strconv.Itoa(conc), func(t *testing.T) {
			bucket := newBucket(t)
			cnt := &counter{}
			c := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: conc}, count: cnt})
			src, data := writeFile(t, t.TempDir(), "r.mxf", size, 3)
			cp, s := &uploader.Checkpoint{}, newSession()
			// Parts are saved in batches: no save may record more than k.
			s.failWhen = func(cp *uploader.Checkpoint) bool { return len(cp.Parts) > k }
			err := c.Put(ctxT(t), src, PutInput{Key: "r.mxf"}, cp, s)
			if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "s3://"+bucket+"/r.mxf") {
				t.Fatalf("Put with failing Save: %v", err)
			}
			saved := s.saved(t)
			if len(saved.Parts) == 0 || len(saved.Parts) > k || saved.UploadID == "" {
				t.Fatalf("saved checkpoint: %+v", saved)
			}
			if len(cp.Parts) != len(saved.Parts) {
				t.Fatalf("in-memory checkpoint has %d parts, want only the %d saved", len(cp.Parts), len(saved.Parts))
			}
			done := map[int]bool{}
			for _, p := range saved.Parts {
				done[int(p.Number)] = true
			}
			left := 5 - len(saved.Parts) - 1 // the part whose save failed is adopted

			// "Restart": a fresh engine and session, from the saved state.
			cnt2 := &counter{}
			c2 := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: conc}, count: cnt2})
			s2 := newSession()
			if err := c2.Put(ctxT(t), src, PutInput{Key: "r.mxf"}, saved, s2); err != nil {
				t.Fatalf("resumed Put: %v", err)
			}
			sent, _ := cnt2.snapshot()
			// The part whose Save failed reached the store: it is adopted
			// (its checksum matches the file), not sent again. With several
			// parts in flight, more may have made it.
			if len(sent) > left {
				t.Errorf("resumed Put sent parts %v, want at most %d", sent, left)
			}
			if conc == 1 && len(sent) != left {
				t.Errorf("resumed Put sent parts %v, want exactly %d (one adopted)", sent, left)
			}
			for _, n := range sent {
				if done[n] {
					t.Errorf("committed part %d sent again", n)
				}
			}
			if saved.UploadID != cp.UploadID {
				t.Errorf("resume started a new upload")
			}
			if got := minioT(t).GetObject(t, bucket, "r.mxf"); !bytes.Equal(got, data) {
				t.Fatal("object differs from file")
			}
			if saved.SHA256 != sha256Hex(data) || !saved.Uploaded {
				t.Errorf("resumed cp: %+v", saved)
			}
			if s2.prog != size {
				t.Errorf("progress after resume = %d, want %d", s2.prog, size)
			}
		})
	}
}

// TestPutNoSuchUpload: the upload vanished behind the engine's back (a
// lifecycle rule, an operator); the next Put starts a new one.
func TestPutNoSuchUpload(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: 2}})
	src, data := writeFile(t, t.TempDir(), "n.mp4", 12*mib, 4)
	cp, s := &uploader.Checkpoint{}, newSession()
	s.okSaves = 2
	if err := c.Put(ctxT(t), src, PutInput{Key: "n.mp4"}, cp, s); err == nil {
		t.Fatal("Put with failing Save succeeded")
	}
	old := cp.UploadID
	if _, err := minioT(t).Client().AbortMultipartUpload(ctxT(t), &s3.AbortMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String("n.mp4"), UploadId: aws.String(old),
	}); err != nil {
		t.Fatal(err)
	}
	s.okSaves, s.failWhen = -1, nil
	if err := c.Put(ctxT(t), src, PutInput{Key: "n.mp4"}, cp, s); err != nil {
		t.Fatalf("Put after the upload vanished: %v", err)
	}
	if cp.UploadID == old || !cp.Uploaded || len(cp.Parts) != 3 {
		t.Errorf("cp = %+v", cp)
	}
	if got := minioT(t).GetObject(t, bucket, "n.mp4"); !bytes.Equal(got, data) {
		t.Fatal("object differs from file")
	}
}

func TestPutSourceChanged(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"appended", func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("more"))
			f.Close()
		}},
		{"touched", func(t *testing.T, p string) {
			if err := os.Chtimes(p, time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", func(t *testing.T, p string) {
			fi, _ := os.Stat(p)
			data, _ := os.ReadFile(p)
			// Same size and mtime, new inode (written before the rename
			// so the old inode number cannot be reused).
			os.WriteFile(p+".new", data, 0o644)
			os.Chtimes(p+".new", fi.ModTime(), fi.ModTime())
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed", func(t *testing.T, p string) { os.Remove(p) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bucket := newBucket(t)
			c := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: 2}})
			src, _ := writeFile(t, t.TempDir(), "c.mp4", 11*mib, 5)
			cp, s := &uploader.Checkpoint{}, newSession()
			s.okSaves = 2
			if err := c.Put(ctxT(t), src, PutInput{Key: "c.mp4"}, cp, s); err == nil {
				t.Fatal("Put with failing Save succeeded")
			}
			if ids := openUploads(t, bucket); len(ids) != 1 {
				t.Fatalf("open uploads: %v", ids)
			}
			tc.change(t, src.Path)
			s.okSaves, s.failWhen = -1, nil
			err := c.Put(ctxT(t), src, PutInput{Key: "c.mp4"}, cp, s)
			if !errors.Is(err, uploader.ErrSourceChanged) {
				t.Fatalf("Put of a changed file: %v, want uploader.ErrSourceChanged", err)
			}
			if ids := openUploads(t, bucket); len(ids) != 0 {
				t.Errorf("upload not aborted: %v", ids)
			}
			if cp.UploadID != "" || s.saved(t).UploadID != "" {
				t.Errorf("checkpoint still has the upload: %+v", cp)
			}
		})
	}
}

func TestCleanOrphans(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{})
	cl := minioT(t).Client()
	create := func(key string) string {
		out, err := cl.CreateMultipartUpload(ctxT(t), &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.UploadId)
	}
	orphan, known, other := create("news/a.mp4"), create("news/b.mp4"), create("sport/c.mp4")
	isKnown := func(id string) bool { return id == known }

	n, err := c.CleanOrphans(ctxT(t), "news/", time.Hour, isKnown)
	if err != nil || n != 0 {
		t.Fatalf("CleanOrphans(olderThan 1h) = %d, %v; want 0 (all are new)", n, err)
	}
	n, err = c.CleanOrphans(ctxT(t), "news/", 0, isKnown)
	if err != nil || n != 1 {
		t.Fatalf("CleanOrphans = %d, %v; want 1", n, err)
	}
	left := openUploads(t, bucket)
	slices.Sort(left)
	want := []string{known, other}
	slices.Sort(want)
	if !slices.Equal(left, want) || slices.Contains(left, orphan) {
		t.Errorf("uploads left %v, want %v", left, want)
	}
}

// corruptingProxy forwards to MinIO and flips one byte in the body of
// UploadPart number part (or of any PutObject when part is 0).
func corruptingProxy(t *testing.T, part string) string {
	target, _ := url.Parse(minioT(t).Endpoint)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the signature covers Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == part {
			r.Body = &flipper{r: r.Body, at: 1000}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type flipper struct {
	r   io.ReadCloser
	at  int64
	pos int64
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		p[f.at-f.pos] ^= 0x40
	}
	f.pos += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.r.Close() }

func TestPutCorruptedInTransit(t *testing.T) {
	tests := []struct {
		alg, part string
		size      int64
	}{
		{"crc32c", "2", 12 * mib},
		{"md5", "2", 12 * mib},
		{"crc32c", "", 1 * mib}, // single PUT
		{"md5", "", 1 * mib},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/part=%q", tc.alg, tc.part), func(t *testing.T) {
			bucket := newBucket(t)
			proxy := corruptingProxy(t, tc.part)
			eng := EngineOptions{PartSize: 5 * mib, Concurrency: 2}
			opts := func(o *S3Options) { o.Checksum = tc.alg }
			c := newEngine(t, bucket, engineCfg{opts: opts, eng: eng, endpoint: proxy})
			src, data := writeFile(t, t.TempDir(), "x.mp4", tc.size, 6)
			cp, s := &uploader.Checkpoint{}, newSession()
			err := c.Put(ctxT(t), src, PutInput{Key: "x.mp4"}, cp, s)
			if err == nil {
				t.Fatal("Put through a corrupting proxy succeeded")
			}
			if uploader.IsPermanent(err) || !strings.Contains(err.Error(), "s3://"+bucket+"/x.mp4") {
				t.Errorf("error %v: want transient, naming the object", err)
			}
			t.Logf("error: %v", err)
			if keys := minioT(t).ListKeys(t, bucket); len(keys) != 0 {
				t.Fatalf("corrupted object completed: %v", keys)
			}
			// The retry over a clean path resumes and completes.
			c2 := newEngine(t, bucket, engineCfg{opts: opts, eng: eng})
			if err := c2.Put(ctxT(t), src, PutInput{Key: "x.mp4"}, cp, s); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if got := minioT(t).GetObject(t, bucket, "x.mp4"); !bytes.Equal(got, data) {
				t.Fatal("object differs from file")
			}
		})
	}
}

func TestPutBandwidthCap(t *testing.T) {
	const (
		size = 12 * mib
		rate = 8 * mib
	)
	bucket := newBucket(t)
	lim := uploader.NewLimiter(rate)
	c := newEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: 4, Limiter: lim}})
	src, _ := writeFile(t, t.TempDir(), "bw.mp4", size, 7)
	start := time.Now()
	if err := c.Put(ctxT(t), src, PutInput{Key: "bw.mp4"}, &uploader.Checkpoint{}, newSession()); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	// The bucket starts full (burst), the rest is paced at rate.
	want := time.Duration((float64(size) - max(float64(rate)/20, uploader.LimiterChunk)) / rate * float64(time.Second))
	t.Logf("12 MiB at 8 MiB/s: %v (ideal %v)", elapsed, want)
	// The lower bound is the cap; the upper one only catches a limiter
	// that stalls (a busy machine is slow, never faster than the cap).
	if elapsed < want*9/10 || elapsed > want*3+time.Second {
		t.Errorf("elapsed %v, want at least %v (-10%%) and no stall", elapsed, want)
	}
}

func TestPutErrorClasses(t *testing.T) {
	bucket := newBucket(t)
	dead, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		cfg       engineCfg
		size      int64
		permanent bool
	}{
		{"wrong secret", engineCfg{opts: func(o *S3Options) { o.SecretAccessKey = "wrong-secret-0123456789" }}, mib, true},
		{"unknown key id", engineCfg{opts: func(o *S3Options) { o.AccessKeyID = "nobody" }}, mib, true},
		{"unknown key id multipart", engineCfg{opts: func(o *S3Options) { o.AccessKeyID = "nobody" }, eng: EngineOptions{PartSize: 5 * mib}}, 6 * mib, true},
		{"no such bucket", engineCfg{opts: func(o *S3Options) { o.Bucket = "no-such-bucket-here" }}, mib, true},
		{"unreachable", engineCfg{endpoint: "http://" + dead}, mib, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newEngine(t, bucket, tc.cfg)
			src, _ := writeFile(t, t.TempDir(), "e.mp4", tc.size, 8)
			err := c.Put(ctxT(t), src, PutInput{Key: "e.mp4"}, &uploader.Checkpoint{}, newSession())
			if err == nil {
				t.Fatal("Put succeeded")
			}
			if uploader.IsPermanent(err) != tc.permanent {
				t.Errorf("uploader.IsPermanent = %v, want %v: %v", !tc.permanent, tc.permanent, err)
			}
			if !strings.Contains(err.Error(), "/e.mp4") || !strings.Contains(err.Error(), "s3://") {
				t.Errorf("error does not name the object: %v", err)
			}
			if strings.Contains(err.Error(), minioT(t).SecretKey) || strings.Contains(err.Error(), "wrong-secret") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestPutTooLarge(t *testing.T) {
	bucket := newBucket(t)
	cnt := &counter{}
	c := newEngine(t, bucket, engineCfg{count: cnt})
	p := filepath.Join(t.TempDir(), "huge.mxf")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5<<40 + 1); err != nil { // sparse: no disk used
		t.Skipf("filesystem cannot hold a 5 TiB sparse file: %v", err)
	}
	f.Close()
	err = c.Put(ctxT(t), sourceFor(t, p, "huge.mxf"), PutInput{Key: "huge.mxf"}, &uploader.Checkpoint{}, newSession())
	if !uploader.IsPermanent(err) || !strings.Contains(err.Error(), "5 TiB") {
		t.Fatalf("Put of a 5 TiB+1 file: %v, want a permanent size error", err)
	}
	if _, n := cnt.snapshot(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestAbort(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{})
	out, err := c.Client().CreateMultipartUpload(ctxT(t), &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("a")})
	if err != nil {
		t.Fatal(err)
	}
	cp := &uploader.Checkpoint{Bucket: bucket, Key: "a", UploadID: aws.ToString(out.UploadId), Parts: []uploader.Part{{Number: 1}}}
	for i := range 2 { // the second time the store no longer knows it: fine
		cp.UploadID = aws.ToString(out.UploadId)
		if err := c.Abort(ctxT(t), cp); err != nil {
			t.Fatalf("Abort #%d: %v", i+1, err)
		}
		if cp.UploadID != "" || cp.Parts != nil {
			t.Errorf("cp not cleared: %+v", cp)
		}
	}
	if ids := openUploads(t, bucket); len(ids) != 0 {
		t.Errorf("uploads left: %v", ids)
	}
}

func TestS3Destination(t *testing.T) {
	bucket := newBucket(t)
	c := newEngine(t, bucket, engineCfg{})
	d := NewS3Destination("archive", "media/{folder}/{yyyy}/{mm}/{relpath}", c)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	data := []byte("hello")
	p := filepath.Join(dir, "sub", "clip.mp4")
	os.WriteFile(p, data, 0o644)
	src := sourceFor(t, p, "sub/clip.mp4")
	cp, s := &uploader.Checkpoint{}, newSession()
	if err := d.Upload(ctxT(t), src, cp, s); err != nil {
		t.Fatal(err)
	}
	if err := d.Register(ctxT(t), src, cp, s); err != nil {
		t.Fatal(err)
	}
	const key = "media/news/2026/03/sub/clip.mp4"
	if cp.Object != "s3://"+bucket+"/"+key || !bytes.Equal(minioT(t).GetObject(t, bucket, key), data) {
		t.Errorf("cp.Object = %q", cp.Object)
	}
	if d.Name() != "archive" || d.Type() != "s3" {
		t.Errorf("name/type %q %q", d.Name(), d.Type())
	}
	bad := NewS3Destination("archive", "{dir}", c) // empty for a top-level file
	src.RelPath = "clip.mp4"
	if err := bad.Upload(ctxT(t), src, &uploader.Checkpoint{}, s); !uploader.IsPermanent(err) {
		t.Errorf("bad key: %v, want permanent", err)
	}
}

func TestS3DestinationPrefix(t *testing.T) {
	tests := []struct{ tmpl, want string }{
		{"{folder}/{name}", "news/"},
		{"archive/{folder}/{name}", "archive/news/"},
		{"{folder}-{folder}/{yyyy}", "news-news/"},
		{"{yyyy}/{folder}/{name}", ""},
		{"in/x{id}", "in/x"},
		{"fixed/key.mp4", "fixed/key.mp4"},
	}
	for _, tc := range tests {
		if got := NewS3Destination("d", tc.tmpl, nil).Prefix("news"); got != tc.want {
			t.Errorf("Prefix(%q) = %q, want %q", tc.tmpl, got, tc.want)
		}
	}
}

func TestPartSizeFor(t *testing.T) {
	tests := []struct{ size, want, got int64 }{
		{23 * mib, 5 * mib, 5 * mib},
		{1 << 30, 16 * mib, 16 * mib},
		{1 << 30, 1, 5 * mib},                  // raised to the S3 minimum
		{200 << 30, 16 * mib, 21 * mib},        // 200 GiB: 16 MiB would need 12,800 parts
		{5 << 40, 16 * mib, 525 * mib},         // 5 TiB
		{10000 * 16 * mib, 16 * mib, 16 * mib}, // exactly 10,000 parts
	}
	for _, tc := range tests {
		got := partSizeFor(tc.size, tc.want)
		if got != tc.got || (tc.size+got-1)/got > maxParts || got%mib != 0 {
			t.Errorf("partSizeFor(%d, %d) = %d, want %d", tc.size, tc.want, got, tc.got)
		}
	}
}

func TestContentTypeFor(t *testing.T) {
	tests := []struct{ name, want string }{
		{"a.mp4", "video/mp4"}, {"A.MP4", "video/mp4"}, {"x/y.Mov", "video/quicktime"},
		{"a.mxf", "application/mxf"}, {"a.m2ts", "video/mp2t"}, {"a.mts", "video/mp2t"},
		{"a.aiff", "audio/aiff"}, {"a.opus", "audio/opus"}, {"a.srt", "application/x-subrip"},
		{"a.vtt", "text/vtt"}, {"a.json", "application/json"}, {"a.JPEG", "image/jpeg"},
		{"noext", "application/octet-stream"}, {"a.xyz", "application/octet-stream"},
		{".mp4", "video/mp4"}, {"a.mp4.part", "application/octet-stream"},
	}
	for _, tc := range tests {
		if got := uploader.ContentTypeFor(tc.name); got != tc.want {
			t.Errorf("uploader.ContentTypeFor(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCompositeSums(t *testing.T) {
	b64crc := func(s string) string {
		return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum([]byte(s), castagnoli)))
	}
	b64md5 := func(s string) string { m := md5.Sum([]byte(s)); return base64.StdEncoding.EncodeToString(m[:]) }
	parts := func(f func(string) string) []uploader.Part {
		return []uploader.Part{{Number: 1, Checksum: f("a")}, {Number: 2, Checksum: f("b")}}
	}
	crcA := crc32.Checksum([]byte("a"), castagnoli)
	crcB := crc32.Checksum([]byte("b"), castagnoli)
	wantCRC := b64crc(string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, crcA), crcB))) + "-2"
	ma, mb := md5.Sum([]byte("a")), md5.Sum([]byte("b"))
	wantETag := fmt.Sprintf("%x-2", md5.Sum(append(ma[:], mb[:]...)))

	if crc, _, err := compositeSums("crc32c", parts(b64crc)); err != nil || crc != wantCRC {
		t.Errorf("composite crc32c = %q, %v; want %q", crc, err, wantCRC)
	}
	if _, etag, err := compositeSums("md5", parts(b64md5)); err != nil || etag != wantETag {
		t.Errorf("md5 ETag = %q, %v; want %q", etag, err, wantETag)
	}
	if _, _, err := compositeSums("md5", []uploader.Part{{Number: 1, Checksum: "!"}}); err == nil {
		t.Error("bad recorded checksum accepted")
	}
	tests := []struct {
		got, want string
		same      bool
	}{
		{"abc==-2", "abc==-2", true}, {"abc==", "abc==-2", true}, {"abc==-2", "abc==", true},
		{"abd==-2", "abc==-2", false}, {"abc==-3", "abc==-2", false},
	}
	for _, tc := range tests {
		if got := sameChecksum(tc.got, tc.want); got != tc.same {
			t.Errorf("sameChecksum(%q, %q) = %v", tc.got, tc.want, got)
		}
	}
}

func compositeSumsETag(parts []uploader.Part) (string, error) {
	_, etag, err := compositeSums("md5", parts)
	return etag, err
}

// TestPutRetriedPart: the store answers 503 SlowDown to the first try of
// part 2; the SDK retries it (rewinding the file section) and the upload
// completes with correct bytes and progress.
func TestPutRetriedPart(t *testing.T) {
	bucket := newBucket(t)
	target, _ := url.Parse(minioT(t).Endpoint)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	var failed atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("partNumber") == "2" && !failed.Swap(true) {
			io.Copy(io.Discard, io.LimitReader(r.Body, 3*mib)) // part of the body went out
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cnt := &counter{}
	c := newEngine(t, bucket, engineCfg{endpoint: srv.URL, eng: EngineOptions{PartSize: 5 * mib, Concurrency: 2}, count: cnt})
	src, data := writeFile(t, t.TempDir(), "retry.mp4", 12*mib, 10)
	cp, s := &uploader.Checkpoint{}, newSession()
	if err := c.Put(ctxT(t), src, PutInput{Key: "retry.mp4"}, cp, s); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if parts, _ := cnt.snapshot(); !slices.Equal(parts, []int{1, 2, 2, 3}) {
		t.Errorf("parts sent %v, want part 2 twice", parts)
	}
	if got := minioT(t).GetObject(t, bucket, "retry.mp4"); !bytes.Equal(got, data) {
		t.Fatal("object differs from file")
	}
	if s.prog != src.Size {
		t.Errorf("progress = %d, want %d (a retried part must not count twice)", s.prog, src.Size)
	}
}

// TestPutObjectOptions: the per-destination object settings reach the store
// on both paths (single PUT and multipart); a setting the store cannot honour
// is a permanent error.
func TestPutObjectOptions(t *testing.T) {
	bucket := newBucket(t)
	tests := []struct {
		name      string
		opts      func(*S3Options)
		storage   string // expected StorageClass from HeadObject
		permanent bool
	}{
		{"public-read", func(o *S3Options) { o.ACL = "public-read" }, "", false},
		{"bucket-owner-full-control", func(o *S3Options) { o.ACL = "bucket-owner-full-control" }, "", false},
		{"reduced redundancy", func(o *S3Options) { o.StorageClass = "REDUCED_REDUNDANCY" }, "REDUCED_REDUNDANCY", false},
		{"sse without kms", func(o *S3Options) { o.SSE = "AES256" }, "", true}, // MinIO without KMS: NotImplemented
	}
	for _, tc := range tests {
		for _, size := range []int64{mib, 6 * mib} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, size), func(t *testing.T) {
				c := newEngine(t, bucket, engineCfg{opts: tc.opts, eng: EngineOptions{PartSize: 5 * mib}})
				src, _ := writeFile(t, t.TempDir(), "o.mp4", size, 11)
				key := nonBucket.ReplaceAllString(t.Name(), "-")
				err := c.Put(ctxT(t), src, PutInput{Key: key}, &uploader.Checkpoint{}, newSession())
				if tc.permanent {
					if !uploader.IsPermanent(err) {
						t.Fatalf("Put: %v, want permanent", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				h, err := c.Client().HeadObject(ctxT(t), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
				if err != nil {
					t.Fatal(err)
				}
				if string(h.StorageClass) != tc.storage {
					t.Errorf("storage class %q, want %q", h.StorageClass, tc.storage)
				}
			})
		}
	}
}

// hookTransport calls before (if set) ahead of every request, and after (if
// set) with every answer, around the engine's own transport.
type hookTransport struct {
	next   http.RoundTripper
	before func(r *http.Request)
	after  func(r *http.Request, resp *http.Response)
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.before != nil {
		h.before(r)
	}
	resp, err := h.next.RoundTrip(r)
	if err == nil && h.after != nil {
		h.after(r, resp)
	}
	return resp, err
}

// hookedEngine is newEngine with h wrapped around the engine's transport.
func hookedEngine(t *testing.T, bucket string, cfg engineCfg, h *hookTransport) *S3 {
	t.Helper()
	h.next = NewTransport(cfg.eng)
	cfg.eng.HTTPClient = &http.Client{Transport: h}
	return newEngine(t, bucket, cfg)
}

// putOther writes an object as another writer would.
func putOther(t *testing.T, bucket, key string, body []byte) {
	t.Helper()
	_, err := minioT(t).Client().PutObject(ctxT(t), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// TestMinIOConditionalWrites: the pinned MinIO refuses PutObject and
// CompleteMultipartUpload with If-None-Match: * on an existing key with 412,
// which the conflict policy relies on.
func TestMinIOConditionalWrites(t *testing.T) {
	bucket := newBucket(t)
	cl := minioT(t).Client()
	ctx := ctxT(t)
	put := func(key string) error {
		_, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
			Body: strings.NewReader("x"), IfNoneMatch: aws.String("*")})
		return err
	}
	if err := put("a"); err != nil {
		t.Fatalf("conditional put of a new key: %v", err)
	}
	err := put("a")
	if !isPreconditionFailed(err) || httpStatus(err) != 412 {
		t.Fatalf("conditional put of an existing key: %v (status %d), want 412", err, httpStatus(err))
	}
	complete := func(key string) error {
		out, err := cl.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		up, err := cl.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key),
			UploadId: out.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("y")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
			UploadId: out.UploadId, IfNoneMatch: aws.String("*"),
			MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{PartNumber: aws.Int32(1), ETag: up.ETag}}}})
		return err
	}
	if err := complete("b"); err != nil {
		t.Fatalf("conditional complete of a new key: %v", err)
	}
	if err := complete("a"); !isPreconditionFailed(err) || httpStatus(err) != 412 {
		t.Fatalf("conditional complete on an existing key: %v (status %d), want 412", err, httpStatus(err))
	}
	if got := string(minioT(t).GetObject(t, bucket, "a")); got != "x" {
		t.Errorf("existing object replaced: %q", got)
	}
}

// TestOnConflict: a key taken by another writer's object is never replaced
// unless on_conflict says so.
func TestOnConflict(t *testing.T) {
	other := []byte("another job's clip")
	tests := []struct {
		mode, size string
		taken      []string // keys that hold other objects before the upload
		wantKey    string   // "" when the upload fails
	}{
		{"", "single", []string{"clip.mp4"}, "clip (1).mp4"},
		{"suffix", "single", []string{"clip.mp4", "clip (1).mp4"}, "clip (2).mp4"},
		{"suffix", "multipart", []string{"clip.mp4"}, "clip (1).mp4"},
		{"fail", "single", []string{"clip.mp4"}, ""},
		{"fail", "multipart", []string{"clip.mp4"}, ""},
		{"overwrite", "single", []string{"clip.mp4"}, "clip.mp4"},
		{"overwrite", "multipart", []string{"clip.mp4"}, "clip.mp4"},
		{"suffix", "single", nil, "clip.mp4"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s/%d", tc.mode, tc.size, len(tc.taken)), func(t *testing.T) {
			bucket := newBucket(t)
			c := newEngine(t, bucket, engineCfg{
				opts: func(o *S3Options) { o.OnConflict = tc.mode },
				eng:  EngineOptions{PartSize: 5 * mib, Concurrency: 2},
			})
			for _, k := range tc.taken {
				putOther(t, bucket, k, other)
			}
			size := int64(mib)
			if tc.size == "multipart" {
				size = 12 * mib
			}
			src, data := writeFile(t, t.TempDir(), "clip.mp4", size, 9)
			cp, s := &uploader.Checkpoint{}, newSession()
			err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s)
			if tc.wantKey == "" {
				if !uploader.IsPermanent(err) || !errors.Is(err, ErrObjectExists) || !strings.Contains(err.Error(), "s3://"+bucket+"/clip.mp4") {
					t.Fatalf("Put onto a taken key: %v, want permanent ErrObjectExists naming the object", err)
				}
			} else if err != nil {
				t.Fatalf("Put: %v", err)
			}
			for _, k := range tc.taken {
				if k == tc.wantKey {
					continue
				}
				if got := minioT(t).GetObject(t, bucket, k); !bytes.Equal(got, other) {
					t.Errorf("%s replaced", k)
				}
			}
			if tc.wantKey != "" {
				if got := minioT(t).GetObject(t, bucket, tc.wantKey); !bytes.Equal(got, data) {
					t.Errorf("%s does not hold the file", tc.wantKey)
				}
				if cp.Key != tc.wantKey || cp.Object != "s3://"+bucket+"/"+tc.wantKey || s.saved(t).Key != tc.wantKey {
					t.Errorf("checkpoint names %q (%s), want %q", cp.Key, cp.Object, tc.wantKey)
				}
			}
			if keys := minioT(t).ListKeys(t, bucket); len(keys) != len(tc.taken)+btoi(tc.wantKey != "" && !slices.Contains(tc.taken, tc.wantKey)) {
				t.Errorf("keys in the bucket: %q", keys)
			}
			if ids := openUploads(t, bucket); len(ids) != 0 {
				t.Errorf("open uploads: %v", ids)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestOnConflictTwoJobs: two jobs whose files render the same key both
// deliver, to different objects, through the S3 destination.
func TestOnConflictTwoJobs(t *testing.T) {
	bucket := newBucket(t)
	d := NewS3Destination("archive", "{folder}/{name}", newEngine(t, bucket, engineCfg{}))
	var objects []string
	for i, rel := range []string{"a/x.mp4", "b/x.mp4"} {
		src, _ := writeFile(t, t.TempDir(), "x.mp4", 1000+int64(i), uint64(i))
		src.RelPath, src.JobID = rel, uint64(10+i)
		cp, s := &uploader.Checkpoint{}, newSession()
		if err := d.Upload(ctxT(t), src, cp, s); err != nil {
			t.Fatal(err)
		}
		if err := d.Register(ctxT(t), src, cp, s); err != nil {
			t.Fatal(err)
		}
		objects = append(objects, cp.Object)
	}
	want := []string{"s3://" + bucket + "/news/x.mp4", "s3://" + bucket + "/news/x (1).mp4"}
	if !slices.Equal(objects, want) {
		t.Errorf("objects %q, want %q", objects, want)
	}
	if got := minioT(t).GetObject(t, bucket, "news/x.mp4"); len(got) != 1000 {
		t.Errorf("first job's object replaced (%d bytes)", len(got))
	}
}

// TestOnConflictDuringUpload: another writer creates the key while the
// parts are sent; the conditional Complete refuses to replace it.
func TestOnConflictDuringUpload(t *testing.T) {
	for _, mode := range []string{"suffix", "fail"} {
		t.Run(mode, func(t *testing.T) {
			bucket := newBucket(t)
			var once sync.Once
			h := &hookTransport{before: func(r *http.Request) {
				if r.URL.Query().Has("partNumber") {
					once.Do(func() { putOther(t, bucket, "clip.mp4", []byte("other")) })
				}
			}}
			c := hookedEngine(t, bucket, engineCfg{
				opts: func(o *S3Options) { o.OnConflict = mode },
				eng:  EngineOptions{PartSize: 5 * mib, Concurrency: 2},
			}, h)
			src, data := writeFile(t, t.TempDir(), "clip.mp4", 11*mib, 3)
			cp, s := &uploader.Checkpoint{}, newSession()
			err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s)
			switch mode {
			case "suffix":
				if err != nil {
					t.Fatal(err)
				}
				if cp.Key != "clip (1).mp4" || !bytes.Equal(minioT(t).GetObject(t, bucket, "clip (1).mp4"), data) {
					t.Errorf("cp.Key %q", cp.Key)
				}
			case "fail":
				if !errors.Is(err, ErrObjectExists) {
					t.Errorf("Put: %v, want ErrObjectExists", err)
				}
			}
			if got := string(minioT(t).GetObject(t, bucket, "clip.mp4")); got != "other" {
				t.Errorf("the other writer's object was replaced")
			}
			if ids := openUploads(t, bucket); len(ids) != 0 {
				t.Errorf("open uploads: %v", ids)
			}
		})
	}
}

// TestOwnObjectAfterCrash: the process dies after the object was written
// but before that was recorded; the retry recognises the object as the
// job's own: no suffixed copy, nothing sent again for a multipart upload.
func TestOwnObjectAfterCrash(t *testing.T) {
	for _, mode := range []string{"suffix", "fail", "overwrite"} {
		for _, size := range []int64{mib, 12 * mib} {
			t.Run(fmt.Sprintf("%s/%d", mode, size), func(t *testing.T) {
				bucket := newBucket(t)
				cnt := &counter{}
				c := newEngine(t, bucket, engineCfg{
					opts:  func(o *S3Options) { o.OnConflict = mode },
					eng:   EngineOptions{PartSize: 5 * mib, Concurrency: 2},
					count: cnt,
				})
				src, data := writeFile(t, t.TempDir(), "clip.mp4", size, 4)
				nParts := int((size + 5*mib - 1) / (5 * mib))
				s := newSession()
				// The save that records the finished object fails.
				s.failWhen = func(cp *uploader.Checkpoint) bool { return cp.Uploaded }
				cp := &uploader.Checkpoint{}
				if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s); err == nil {
					t.Fatal("Put with a failing final save succeeded")
				}
				if keys := minioT(t).ListKeys(t, bucket); !slices.Equal(keys, []string{"clip.mp4"}) {
					t.Fatalf("keys after the first attempt: %q", keys)
				}
				// Restart: the last durable checkpoint.
				cp = &uploader.Checkpoint{}
				if s.last != nil {
					cp = s.saved(t)
				}
				s.okSaves, s.failWhen = -1, nil
				if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s); err != nil {
					t.Fatalf("retry: %v", err)
				}
				if keys := minioT(t).ListKeys(t, bucket); !slices.Equal(keys, []string{"clip.mp4"}) {
					t.Errorf("keys after the retry: %q", keys)
				}
				if !cp.Uploaded || cp.Key != "clip.mp4" || cp.SHA256 != sha256Hex(data) || cp.ETag == "" {
					t.Errorf("cp = %+v", cp)
				}
				if !bytes.Equal(minioT(t).GetObject(t, bucket, "clip.mp4"), data) {
					t.Error("object differs from the file")
				}
				if parts, _ := cnt.snapshot(); size >= 5*mib && len(parts) != nParts {
					t.Errorf("parts sent %v, want each of %d once", parts, nParts)
				}
			})
		}
	}
}

// noConditionalProxy stands in front of MinIO like a store that does not
// implement conditional writes: it answers them 501 NotImplemented.
func noConditionalProxy(t *testing.T, refused *atomic.Int64) string {
	target, _ := url.Parse(minioT(t).Endpoint)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			refused.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestOnConflictWithoutConditionalWrites: where the store does not
// implement If-None-Match, a HEAD check keeps the other object.
func TestOnConflictWithoutConditionalWrites(t *testing.T) {
	for _, size := range []int64{mib, 12 * mib} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			bucket := newBucket(t)
			var refused atomic.Int64
			c := newEngine(t, bucket, engineCfg{
				endpoint: noConditionalProxy(t, &refused),
				eng:      EngineOptions{PartSize: 5 * mib, Concurrency: 2},
			})
			putOther(t, bucket, "clip.mp4", []byte("other"))
			for i := range 2 {
				src, data := writeFile(t, t.TempDir(), "clip.mp4", size, uint64(i))
				src.JobID = uint64(20 + i)
				cp := &uploader.Checkpoint{}
				if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, newSession()); err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("clip (%d).mp4", i+1)
				if cp.Key != want || !bytes.Equal(minioT(t).GetObject(t, bucket, want), data) {
					t.Errorf("job %d wrote %q, want %q", i, cp.Key, want)
				}
			}
			if got := string(minioT(t).GetObject(t, bucket, "clip.mp4")); got != "other" {
				t.Errorf("the other object was replaced")
			}
			if n := refused.Load(); n != 1 {
				t.Errorf("%d conditional writes tried, want 1 (then HEAD checks)", n)
			}
		})
	}
}

// TestPutObjectGoneAfterUpload: a consumer (a platform's watch folder)
// moves the object away right after it was written, before the engine's
// HEAD: the upload counts as delivered, and nothing is sent twice.
func TestPutObjectGoneAfterUpload(t *testing.T) {
	for _, tc := range []struct {
		alg  string
		size int64
	}{{"none", mib}, {"crc32c", 12 * mib}, {"md5", 12 * mib}} {
		t.Run(fmt.Sprintf("%s/%d", tc.alg, tc.size), func(t *testing.T) {
			bucket := newBucket(t)
			var written, writes atomic.Int64
			h := &hookTransport{
				before: func(r *http.Request) {
					if r.Method == http.MethodHead && written.Load() > 0 {
						// Ingested and moved away.
						minioT(t).Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("clip.mp4")})
					}
				},
				after: func(r *http.Request, resp *http.Response) {
					q := r.URL.Query()
					isPut := r.Method == http.MethodPut && !q.Has("partNumber")
					isComplete := r.Method == http.MethodPost && q.Has("uploadId")
					if isPut || isComplete {
						writes.Add(1)
						if resp.StatusCode == 200 {
							written.Add(1)
						}
					}
				},
			}
			c := hookedEngine(t, bucket, engineCfg{
				opts: func(o *S3Options) { o.Checksum = tc.alg },
				eng:  EngineOptions{PartSize: 5 * mib, Concurrency: 2},
			}, h)
			src, _ := writeFile(t, t.TempDir(), "clip.mp4", tc.size, 1)
			cp, s := &uploader.Checkpoint{}, newSession()
			if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if !cp.Uploaded || !s.saved(t).Uploaded || cp.Object != "s3://"+bucket+"/clip.mp4" {
				t.Errorf("cp = %+v", cp)
			}
			if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s); err != nil {
				t.Fatalf("second Put: %v", err)
			}
			if n := writes.Load(); n != 1 {
				t.Errorf("%d object writes, want 1", n)
			}
		})
	}
}

// TestPutTruncatedMidUpload: the file is truncated while parts are being
// sent; the multipart upload is aborted at once and the error says the
// source changed.
func TestPutTruncatedMidUpload(t *testing.T) {
	bucket := newBucket(t)
	dir := t.TempDir()
	var once sync.Once
	h := &hookTransport{before: func(r *http.Request) {
		if r.URL.Query().Get("partNumber") == "1" {
			once.Do(func() {
				if err := os.Truncate(filepath.Join(dir, "clip.mp4"), mib); err != nil {
					t.Error(err)
				}
			})
		}
	}}
	c := hookedEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: 2}}, h)
	src, _ := writeFile(t, dir, "clip.mp4", 10*mib, 2)
	cp, s := &uploader.Checkpoint{}, newSession()
	err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, cp, s)
	if !errors.Is(err, uploader.ErrSourceChanged) {
		t.Fatalf("Put of a file truncated mid-upload: %v, want uploader.ErrSourceChanged", err)
	}
	if ids := openUploads(t, bucket); len(ids) != 0 {
		t.Errorf("multipart upload left open: %v", ids)
	}
	if cp.UploadID != "" || s.saved(t).UploadID != "" {
		t.Errorf("checkpoint still records the upload")
	}
	if keys := minioT(t).ListKeys(t, bucket); len(keys) != 0 {
		t.Errorf("object written: %q", keys)
	}
}

// TestPutNotRegularFile: the file was replaced by a FIFO (opening one for
// reading blocks until a writer comes) or a symlink: the upload fails at
// once, naming the file, and does not follow or wait.
func TestPutNotRegularFile(t *testing.T) {
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			bucket := newBucket(t)
			c := newEngine(t, bucket, engineCfg{})
			dir := t.TempDir()
			src, _ := writeFile(t, dir, "clip.mp4", 1000, 1)
			os.Remove(src.Path)
			switch kind {
			case "fifo":
				if err := syscall.Mkfifo(src.Path, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					// Release an open that blocked (the old behaviour).
					if f, err := os.OpenFile(src.Path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
				})
			case "symlink":
				os.WriteFile(filepath.Join(dir, "target"), make([]byte, 1000), 0o644)
				if err := os.Symlink("target", src.Path); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, &uploader.Checkpoint{}, newSession()) }()
			select {
			case err := <-done:
				if !errors.Is(err, uploader.ErrSourceChanged) || !strings.Contains(err.Error(), src.Path) {
					t.Errorf("Put: %v, want uploader.ErrSourceChanged naming %s", err, src.Path)
				}
				t.Log(err)
			case <-time.After(20 * time.Second):
				t.Fatal("Put blocked on the file")
			}
			if keys := minioT(t).ListKeys(t, bucket); len(keys) != 0 {
				t.Errorf("object written: %q", keys)
			}
		})
	}
}

// partConcurrency counts the UploadPart requests in flight at once.
type partConcurrency struct {
	mu       sync.Mutex
	cur, max int
}

func (p *partConcurrency) hook() *hookTransport {
	return &hookTransport{
		before: func(r *http.Request) {
			if r.URL.Query().Has("partNumber") {
				p.mu.Lock()
				p.cur++
				p.max = max(p.max, p.cur)
				p.mu.Unlock()
			}
		},
		after: func(r *http.Request, _ *http.Response) {
			if r.URL.Query().Has("partNumber") {
				p.mu.Lock()
				p.cur--
				p.mu.Unlock()
			}
		},
	}
}

// TestPutStreamsLocalStore: a store on loopback is not limited per
// connection, so an upload keeps two parts in flight whatever the ceiling
// (more would only be bytes for a crash to throw away).
func TestPutStreamsLocalStore(t *testing.T) {
	bucket := newBucket(t)
	var pc partConcurrency
	c := hookedEngine(t, bucket, engineCfg{eng: EngineOptions{PartSize: 5 * mib, Concurrency: 16}}, pc.hook())
	src, _ := writeFile(t, t.TempDir(), "clip.mp4", 60*mib, 8)
	if err := c.Put(ctxT(t), src, PutInput{Key: "clip.mp4"}, &uploader.Checkpoint{}, newSession()); err != nil {
		t.Fatal(err)
	}
	if pc.max > streamStart {
		t.Errorf("%d parts in flight at once on a loopback store, want at most %d", pc.max, streamStart)
	}
}

// TestPutStreamsWAN: through a link that caps each connection (40 ms
// round trip), the upload adds parts in flight.
func TestPutStreamsWAN(t *testing.T) {
	bucket := newBucket(t)
	w, err := testenv.StartWAN(minioT(t).Addr, testenv.WANLink{OneWay: 20 * time.Millisecond, BytesPerSec: 4 * mib})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var pc partConcurrency
	c := hookedEngine(t, bucket, engineCfg{endpoint: "http://" + w.Addr, eng: EngineOptions{PartSize: 5 * mib, Concurrency: 8}}, pc.hook())
	src, data := writeFile(t, t.TempDir(), "clip.mp4", 80*mib, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.Put(ctx, src, PutInput{Key: "clip.mp4"}, &uploader.Checkpoint{}, newSession()); err != nil {
		t.Fatal(err)
	}
	if pc.max <= streamStart {
		t.Errorf("at most %d parts in flight over a per-connection-limited link, want more than %d", pc.max, streamStart)
	}
	if !bytes.Equal(minioT(t).GetObject(t, bucket, "clip.mp4"), data) {
		t.Error("object differs from the file")
	}
}
