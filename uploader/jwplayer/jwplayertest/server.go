// Package jwplayertest is a local JW Player server for tests: the
// Management API v2 (media create/list/get/reupload, multipart uploads) and
// the legacy v1 calls (videos/create, videos/list, videos/update), with the
// bytes stored in a real MinIO behind presigned links. It enforces the
// published contract strictly; every rule names its source. Where the
// source could not be checked, the rule is the conservative one and says
// "unverified".
//
// Sources:
//   - [v2-docs]: JW Player Management API v2 reference (docs.jwplayer.com,
//     "Upload a video: direct / multipart").
//   - [py-sdk]: jwplatform-py (jwplatform/upload.py _UploadClient,
//     MultipartUpload; jwplatform/v1/client.py), the official SDK.
//   - [v1-docs]: JW Platform API v1 reference (/videos/create, /videos/list,
//     /videos/update).
//   - [s3]: Amazon S3 presigned URL rules, enforced here by MinIO itself.
package jwplayertest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// Media is a snapshot of one media held by the server.
type Media struct {
	ID, ExternalID, Status, Method, Key string
	// MimeType is the create's (or reupload's) upload.mime_type.
	MimeType  string
	Metadata  map[string]any
	Completed bool // multipart completed
	Polls     int  // GETs of the media item
	Reuploads int
}

type media struct {
	Media
	uploadID, token, s3UploadID string
	createdSearch               int // searches seen since create (index lag)
}

// Server is a running fake. Set the exported knobs before the client runs,
// or through the methods while it runs.
type Server struct {
	URL    string // API base URL (v1 and v2)
	Site   string
	Secret string // v2 bearer secret, v1 signing secret
	V1Key  string
	Bucket string

	t      testing.TB
	minio  *testenv.MinIO
	direct *s3.Client // straight to MinIO
	plain  *proxy     // http proxy the v2 links point at
	secure *proxy     // https proxy the v1 links point at (advertised as http)

	api *httptest.Server

	mu         sync.Mutex
	media      map[string]*media
	byUpload   map[string]*media
	seq        int
	script     []int
	retryAfter string
	statuses   []string
	errMsg     string
	linkTTL    time.Duration
	indexLag   int
	apiCalls   int
	problems   []string
	deny       bool
	ops        map[string][]Fault
	onCreated  func(ctx context.Context)
	onReady    func(ctx context.Context)
	links      []string

	linkPresign *s3.PresignClient
}

// Options adjust a server.
type Options struct {
	// Secret is the v2 bearer / v1 signing secret; default random.
	Secret string
	// LinkBase is the S3 endpoint v2 upload links point at (e.g. a
	// counting proxy in front of the same MinIO); default the server's
	// own recording proxy.
	LinkBase string
}

// Fault is a scripted answer for one operation: Status (with Retry-After
// when set) instead of the real answer; AfterWork does the work first (the
// platform made the media, then the answer was lost as a 5xx).
type Fault struct {
	Status     int
	RetryAfter string
	AfterWork  bool
}

// New starts a server storing bytes in bucket (which must exist on m).
func New(t testing.TB, m *testenv.MinIO, bucket string) *Server {
	return NewWith(t, m, bucket, Options{})
}

// NewWith starts a server with options.
func NewWith(t testing.TB, m *testenv.MinIO, bucket string, o Options) *Server {
	t.Helper()
	s := &Server{Site: "SiTe1234", Secret: "v2-secret-" + randHex(6), V1Key: "v1key", Bucket: bucket, t: t, minio: m,
		media: map[string]*media{}, byUpload: map[string]*media{}, statuses: []string{"processing", "ready"},
		linkTTL: 15 * time.Minute, ops: map[string][]Fault{}}
	if o.Secret != "" {
		s.Secret = o.Secret
	}
	s.direct = m.Client()
	s.plain = newProxy(t, m, false)
	s.secure = newProxy(t, m, true)
	s.linkPresign = s.plain.presign
	if o.LinkBase != "" {
		s.linkPresign = presigner(m, o.LinkBase)
	}
	s.api = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.api.URL
	t.Cleanup(func() {
		s.api.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.problems {
			t.Errorf("jwplayertest: %s", p)
		}
	})
	return s
}

// Client returns an HTTP client that trusts the server's https upload host
// (the v1 links) and reaches everything else over plain http.
func (s *Server) Client() *http.Client { return s.secure.srv.Client() }

// CertPEM is the https upload host's certificate, for a process that is
// given it through SSL_CERT_FILE.
func (s *Server) CertPEM() []byte { return s.secure.certPEM() }

// Script makes the next API calls answer these statuses (JW v2 error JSON),
// with Retry-After on 429s when retryAfter is set.
func (s *Server) Script(retryAfter string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script, s.retryAfter = append([]int(nil), statuses...), retryAfter
}

// SetStatuses sets the statuses successive polls answer once the bytes are
// in (the last one repeats), and the error_message of a "failed" media.
func (s *Server) SetStatuses(errMsg string, statuses ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses, s.errMsg = append([]string(nil), statuses...), errMsg
}

// SetLinkTTL sets how long new upload links stay valid (at least 1s).
func (s *Server) SetLinkTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkTTL = d
}

// SetIndexLag makes a new media invisible to the first n searches after
// its create (search indexes lag behind writes; unverified how long, so
// tests choose).
func (s *Server) SetIndexLag(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexLag = n
}

// Deny makes every v2 call answer 401 while on.
func (s *Server) Deny(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = on
}

// ScriptOp queues scripted answers for an operation: "create", "search",
// "status", "reupload".
func (s *Server) ScriptOp(op string, f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[op] = append(s.ops[op], f...)
}

func (s *Server) take(op string) (Fault, bool) {
	if len(s.ops[op]) == 0 {
		return Fault{}, false
	}
	f := s.ops[op][0]
	s.ops[op] = s.ops[op][1:]
	return f, true
}

func writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	jwError(w, f.Status, "scripted", "scripted "+strconv.Itoa(f.Status))
}

// OnCreated runs fn after a create was answered (a crash point).
func (s *Server) OnCreated(fn func(ctx context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCreated = fn
}

// OnStatusWithBytes runs fn before answering a status read of a media
// whose bytes are in (a crash point); no answer is sent when the request's
// context is done by then.
func (s *Server) OnStatusWithBytes(fn func(ctx context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReady = fn
}

// LinkSignatures returns the X-Amz-Signature of every v2 upload link
// handed out: credentials that must never be shown.
func (s *Server) LinkSignatures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.links {
		if u, err := url.Parse(l); err == nil && u.Query().Get("X-Amz-Signature") != "" {
			out = append(out, u.Query().Get("X-Amz-Signature"))
		}
	}
	return out
}

// FailPart makes PUTs of part n answer 500 while on is true.
func (s *Server) FailPart(n int, on bool) { s.plain.failPart(n, on) }

// PartPuts counts part PUTs by part number.
func (s *Server) PartPuts() map[int]int { return s.plain.parts() }

// DirectPuts returns the Content-Type of every whole-object PUT (v2 direct
// and v1), in order.
func (s *Server) DirectPuts() []string {
	return append(s.plain.objectPuts(), s.secure.objectPuts()...)
}

// Media returns a snapshot of the media with id, or false.
func (s *Server) Media(id string) (Media, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.media[id]
	if !ok {
		return Media{}, false
	}
	return m.Media, true
}

// All returns snapshots of every media, by id.
func (s *Server) All() []Media {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Media, 0, len(s.media))
	for _, m := range s.media {
		out = append(out, m.Media)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Object returns the stored bytes of a media (nil when none yet).
func (s *Server) Object(id string) []byte {
	m, ok := s.Media(id)
	if !ok {
		return nil
	}
	out, err := s.direct.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key)})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return b
}

func (s *Server) problem(format string, a ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, a...))
}

func jwError(w http.ResponseWriter, status int, code, desc string) {
	// [py-sdk] v2 errors: {"errors":[{"code":..,"description":..}]}.
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "description": desc}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var (
	mediaItemRE = regexp.MustCompile(`^/v2/sites/([^/]+)/media/([^/]+)/$`)
	reuploadRE  = regexp.MustCompile(`^/v2/sites/([^/]+)/media/([^/]+)/reupload/$`)
	partsRE     = regexp.MustCompile(`^/v2/uploads/([^/]+)/parts$`)
	completeRE  = regexp.MustCompile(`^/v2/uploads/([^/]+)/complete$`)
	extQueryRE  = regexp.MustCompile(`^external_id:"((?:[^"\\]|\\.)*)"$`)
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	after := s.serveLocked(w, r)
	s.mu.Unlock()
	if after != nil {
		after()
	}
}

// serveLocked answers r under s.mu; what it returns runs after the lock is
// released (crash-point hooks, and an answer that waits for one).
func (s *Server) serveLocked(w http.ResponseWriter, r *http.Request) (after func()) {
	s.apiCalls++
	if len(s.script) > 0 {
		st := s.script[0]
		s.script = s.script[1:]
		if st == http.StatusTooManyRequests && s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		jwError(w, st, "scripted", "scripted "+strconv.Itoa(st))
		return
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1/"):
		s.v1(w, r)
		return
	case strings.HasPrefix(p, "/v2/uploads/"):
		s.uploads(w, r)
		return
	case !strings.HasPrefix(p, "/v2/sites/"):
		s.problem("unexpected path %s", p)
		jwError(w, 404, "not_found", "no route")
		return
	}
	// [v2-docs] Management API calls authenticate with the v2 secret as a
	// bearer token and nothing else.
	if s.deny || r.Header.Get("Authorization") != "Bearer "+s.Secret {
		jwError(w, 401, "unauthorized", "Invalid API credentials")
		return
	}
	// [py-sdk] collection paths end in "/" (POST /v2/sites/{site}/media/).
	siteMedia := "/v2/sites/" + s.Site + "/media/"
	op := ""
	switch {
	case r.Method == http.MethodPost && p == siteMedia:
		op = "create"
	case r.Method == http.MethodGet && p == siteMedia:
		op = "search"
	case r.Method == http.MethodPut && reuploadRE.MatchString(p):
		op = "reupload"
	case r.Method == http.MethodGet && mediaItemRE.MatchString(p):
		op = "status"
	}
	f, faulted := s.take(op)
	if faulted && !f.AfterWork {
		writeFault(w, f)
		return
	}
	if faulted {
		// Do the work, then lose the answer.
		orig := w
		w = &discard{h: http.Header{}}
		defer writeFault(orig, f)
	}
	switch {
	case r.Method == http.MethodPost && p == siteMedia:
		s.create(w, r)
		if fn := s.onCreated; fn != nil && !faulted {
			return func() { fn(r.Context()) }
		}
	case r.Method == http.MethodGet && p == siteMedia:
		s.list(w, r)
	case r.Method == http.MethodPut && reuploadRE.MatchString(p):
		m := s.media[reuploadRE.FindStringSubmatch(p)[2]]
		if m == nil {
			jwError(w, 404, "not_found", "no media")
			return
		}
		var body struct {
			Upload upload `json:"upload"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || !body.Upload.valid() {
			jwError(w, 400, "invalid_body", "bad upload")
			return
		}
		m.Reuploads++
		m.Status = "created"
		m.Completed = false
		writeJSON(w, 200, s.handles(m, body.Upload))
	case r.Method == http.MethodGet && mediaItemRE.MatchString(p):
		mm := mediaItemRE.FindStringSubmatch(p)
		m := s.media[mm[2]]
		if mm[1] != s.Site || m == nil {
			jwError(w, 404, "not_found", "no media")
			return
		}
		v := s.view(m, true)
		if fn := s.onReady; fn != nil && m.Status != "created" && !faulted {
			return func() {
				fn(r.Context())
				if r.Context().Err() == nil {
					writeJSON(w, 200, v)
				}
			}
		}
		writeJSON(w, 200, v)
	default:
		s.problem("unexpected %s %s", r.Method, p)
		jwError(w, 404, "not_found", "no route")
	}
	return nil
}

// discard swallows an answer whose work was done but which is "lost".
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

type upload struct {
	Method   string `json:"method"`
	MimeType string `json:"mime_type"`
}

// valid: [v2-docs] method is "direct" or "multipart"; mime_type is
// optional.
func (u upload) valid() bool { return u.Method == "direct" || u.Method == "multipart" }

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		s.problem("create Content-Type %q", ct)
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		jwError(w, 400, "invalid_body", err.Error())
		return
	}
	for k := range body {
		if k != "upload" && k != "metadata" {
			jwError(w, 400, "invalid_body", "unknown field "+k)
			return
		}
	}
	var up upload
	json.Unmarshal(body["upload"], &up)
	if !up.valid() {
		jwError(w, 400, "invalid_body", "bad upload "+string(body["upload"]))
		return
	}
	var meta map[string]any
	json.Unmarshal(body["metadata"], &meta)
	for k, v := range meta {
		ok := false
		switch k {
		case "title", "description", "external_id":
			_, ok = v.(string)
		case "tags":
			_, ok = v.([]any)
		case "custom_params":
			var cm map[string]any
			cm, ok = v.(map[string]any)
			for _, cv := range cm {
				if _, isStr := cv.(string); !isStr {
					ok = false
				}
			}
		}
		if !ok {
			jwError(w, 400, "invalid_body", "bad metadata field "+k)
			return
		}
	}
	// Conservative: a media without a title is refused (unverified
	// whether JW requires one).
	if t, _ := meta["title"].(string); t == "" {
		jwError(w, 400, "invalid_body", "metadata.title is required")
		return
	}
	if ext, _ := meta["external_id"].(string); ext == "" {
		s.problem("create without metadata.external_id: no idempotency handle")
	}
	s.seq++
	m := &media{Media: Media{ID: fmt.Sprintf("Md%06d", s.seq), Status: "created", Metadata: meta}}
	m.ExternalID, _ = meta["external_id"].(string)
	s.media[m.ID] = m
	out := s.handles(m, up)
	out["metadata"] = meta
	writeJSON(w, 200, out)
}

// handles starts a fresh upload for m (direct link or multipart ids).
func (s *Server) handles(m *media, up upload) map[string]any {
	ctx := context.Background()
	m.Method, m.MimeType = up.Method, up.MimeType
	m.Key = "media/" + m.ID + "/original"
	out := map[string]any{"id": m.ID, "type": "media", "status": m.Status}
	if up.Method == "direct" {
		in := &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key)}
		// [v2-docs] the direct upload link is presigned over the
		// Content-Type the create named: a PUT without exactly that
		// header is refused with 403 SignatureDoesNotMatch (MinIO checks
		// the signed header like S3 [s3]). No mime_type: none is signed.
		if up.MimeType != "" {
			in.ContentType = aws.String(up.MimeType)
		}
		req, err := s.linkPresign.PresignPutObject(ctx, in, s3.WithPresignExpires(s.linkTTL))
		if err != nil {
			s.problem("presign: %v", err)
			return out
		}
		s.links = append(s.links, req.URL)
		out["upload_link"] = req.URL
		return out
	}
	cm, err := s.direct.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key)})
	if err != nil {
		s.problem("create multipart: %v", err)
		return out
	}
	m.s3UploadID = aws.ToString(cm.UploadId)
	m.uploadID = "up" + m.ID + strconv.Itoa(s.seq) + randHex(3)
	m.token = randHex(16)
	s.byUpload[m.uploadID] = m
	out["upload_id"], out["upload_token"] = m.uploadID, m.token
	return out
}

func (s *Server) view(m *media, poll bool) map[string]any {
	if m.Status == "created" && s.hasBytes(m) {
		m.Status = "processing"
	}
	if poll && m.Status != "created" {
		i := min(m.Polls, len(s.statuses)-1)
		m.Status = s.statuses[i]
		m.Polls++
	}
	v := map[string]any{"id": m.ID, "type": "media", "status": m.Status, "external_id": m.ExternalID,
		"metadata": m.Metadata}
	if m.Status == "failed" {
		v["error_message"] = s.errMsg
	}
	return v
}

func (s *Server) hasBytes(m *media) bool {
	if m.Method == "multipart" {
		return m.Completed
	}
	_, err := s.direct.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key)})
	return err == nil
}

// list answers GET /v2/sites/{site}/media/?q=external_id:"..." [v2-docs].
// JW's search matches long values loosely (unverified how loosely), so near
// misses are returned too; a new media stays out of the results for the
// configured index lag.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	mm := extQueryRE.FindStringSubmatch(q)
	if mm == nil {
		s.problem("list without an external_id query: %s", q)
		jwError(w, 400, "invalid_query", "bad q")
		return
	}
	want := strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(mm[1])
	items := []map[string]any{}
	ids := make([]string, 0, len(s.media))
	for id := range s.media {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := s.media[id]
		if m.Method == "v1" {
			continue
		}
		if m.createdSearch < s.indexLag {
			m.createdSearch++
			continue
		}
		if m.ExternalID == want || strings.HasPrefix(m.ExternalID, want[:min(15, len(want))]) {
			items = append(items, s.view(m, false))
		}
	}
	writeJSON(w, 200, map[string]any{"media": items, "page": 1, "page_length": 10, "total": len(items)})
}

func (s *Server) uploads(w http.ResponseWriter, r *http.Request) {
	var id string
	if mm := partsRE.FindStringSubmatch(r.URL.Path); mm != nil {
		id = mm[1]
	} else if mm := completeRE.FindStringSubmatch(r.URL.Path); mm != nil {
		id = mm[1]
	}
	m := s.byUpload[id]
	if m == nil {
		jwError(w, 404, "not_found", "no upload")
		return
	}
	// [py-sdk] every /v2/uploads call carries Bearer <upload_token>.
	if r.Header.Get("Authorization") != "Bearer "+m.token {
		jwError(w, 401, "unauthorized", "bad upload token")
		return
	}
	ctx := context.Background()
	if r.Method == http.MethodGet && partsRE.MatchString(r.URL.Path) {
		// [py-sdk] GET parts?page_length=1000&page=N, 1-based page.
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		pl, _ := strconv.Atoi(r.URL.Query().Get("page_length"))
		if page < 1 || pl != 1000 {
			s.problem("parts query %s", r.URL.RawQuery)
			jwError(w, 400, "invalid_query", "bad page")
			return
		}
		have := map[int32]string{}
		lp, err := s.direct.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key), UploadId: aws.String(m.s3UploadID)})
		if err != nil {
			s.problem("list parts: %v", err)
		} else {
			for _, p := range lp.Parts {
				// [py-sdk] etag of an uploaded part: unquoted md5.
				have[aws.ToInt32(p.PartNumber)] = strings.Trim(aws.ToString(p.ETag), `"`)
			}
		}
		parts := []map[string]any{}
		// [py-sdk] the part count is never sent: the server lists links
		// for up to 10,000 parts.
		for n := (page-1)*pl + 1; n <= page*pl && n <= 10000; n++ {
			req, err := s.linkPresign.PresignUploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key),
				UploadId: aws.String(m.s3UploadID), PartNumber: aws.Int32(int32(n))}, s3.WithPresignExpires(s.linkTTL))
			if err != nil {
				s.problem("presign part: %v", err)
				break
			}
			p := map[string]any{"id": n, "upload_link": req.URL}
			if e, ok := have[int32(n)]; ok {
				p["etag"] = e
			}
			parts = append(parts, p)
		}
		writeJSON(w, 200, map[string]any{"parts": parts, "page": page, "page_length": pl})
		return
	}
	if r.Method == http.MethodPut && completeRE.MatchString(r.URL.Path) {
		// [py-sdk] complete: PUT with no body, 202.
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			s.problem("complete with a body")
		}
		lp, err := s.direct.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key), UploadId: aws.String(m.s3UploadID)})
		if err != nil {
			jwError(w, 400, "invalid", err.Error())
			return
		}
		var done []types.CompletedPart
		for _, p := range lp.Parts {
			done = append(done, types.CompletedPart{PartNumber: p.PartNumber, ETag: p.ETag})
		}
		// [s3] parts other than the last must be >= 5 MiB: MinIO refuses
		// the complete otherwise (EntityTooSmall).
		_, err = s.direct.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key),
			UploadId: aws.String(m.s3UploadID), MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
		if err != nil {
			jwError(w, 400, "invalid", err.Error())
			return
		}
		m.Completed = true
		w.WriteHeader(http.StatusAccepted)
		return
	}
	jwError(w, 405, "method", "not allowed")
}

// v1 serves /v1/videos/create, /v1/videos/list and /v1/videos/update.
func (s *Server) v1(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if msg := s.v1Auth(q); msg != "" {
		writeJSON(w, 200, map[string]any{"status": "error", "code": "PermissionDenied", "message": msg})
		return
	}
	switch r.URL.Path {
	case "/v1/videos/create":
		if q.Get("upload_method") != "s3" {
			s.problem("v1 create without upload_method=s3: %s", r.URL.RawQuery)
		}
		s.seq++
		m := &media{Media: Media{ID: fmt.Sprintf("v1%06d", s.seq), Status: "created", Method: "v1", Metadata: map[string]any{}}}
		for k := range q {
			if !strings.HasPrefix(k, "api_") && k != "upload_method" {
				m.Metadata[k] = q.Get(k)
			}
		}
		m.Key = "v1/" + m.ID
		s.media[m.ID] = m
		writeJSON(w, 200, s.v1Link(m))
	case "/v1/videos/update":
		// [v1-docs] /videos/update with upload_method=s3 hands out a new
		// upload link for an existing video.
		m := s.media[q.Get("video_key")]
		if m == nil || m.Method != "v1" {
			writeJSON(w, 200, map[string]any{"status": "error", "code": "NotFound", "message": "Video not found"})
			return
		}
		if q.Get("upload_method") != "s3" {
			s.problem("v1 update without upload_method=s3")
		}
		m.Reuploads++
		writeJSON(w, 200, s.v1Link(m))
	case "/v1/videos/list":
		// [v1-docs] search:custom.<param> filters on a custom parameter
		// (exact spelling of the filter unverified; taken from the design
		// reference). Unknown search keys are refused here.
		var key, val string
		for k := range q {
			if strings.HasPrefix(k, "search:") {
				if !strings.HasPrefix(k, "search:custom.") || key != "" {
					s.problem("v1 list with unsupported search %s", k)
				}
				key, val = strings.TrimPrefix(k, "search:"), q.Get(k)
			}
		}
		var vids []map[string]any
		for _, m := range s.media {
			if m.Method != "v1" || key == "" || m.Metadata[key] != val {
				continue
			}
			st := "created"
			if s.hasBytesV1(m) {
				st = "processing"
			}
			vids = append(vids, map[string]any{"key": m.ID, "status": st, "custom": map[string]any{strings.TrimPrefix(key, "custom."): val}})
		}
		writeJSON(w, 200, map[string]any{"status": "ok", "videos": vids, "total": len(vids)})
	default:
		s.problem("unexpected v1 path %s", r.URL.Path)
		writeJSON(w, 404, map[string]any{"status": "error", "code": "NotFound", "message": "no route"})
	}
}

func (s *Server) hasBytesV1(m *media) bool {
	_, err := s.direct.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(m.Key)})
	return err == nil
}

// v1Auth checks the v1 signature with an independent canonicalisation
// ([py-sdk] v1/client.py: sorted pairs, quote(v, safe='~'), sha1 of the
// query plus the secret; url.QueryEscape with %20 for spaces encodes the
// same way); api_nonce is 9 digits; the timestamp is current.
func (s *Server) v1Auth(q url.Values) string {
	sig := q.Get("api_signature")
	q = cloneValues(q)
	q.Del("api_signature")
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	enc := func(v string) string { return strings.ReplaceAll(url.QueryEscape(v), "+", "%20") }
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, enc(k)+"="+enc(v))
		}
	}
	sum := sha1.Sum([]byte(strings.Join(parts, "&") + s.Secret))
	ts, _ := strconv.ParseInt(q.Get("api_timestamp"), 10, 64)
	switch {
	case sig != hex.EncodeToString(sum[:]):
		return "Invalid signature"
	case q.Get("api_key") != s.V1Key:
		return "Invalid api_key"
	case q.Get("api_format") != "json":
		s.problem("v1 api_format %q", q.Get("api_format"))
	case !regexp.MustCompile(`^[0-9]{9}$`).MatchString(q.Get("api_nonce")):
		s.problem("v1 nonce %q", q.Get("api_nonce"))
	case time.Since(time.Unix(ts, 0)).Abs() > time.Minute:
		return "Invalid timestamp"
	}
	return ""
}

// v1Link answers a SigV2 query-string presigned PUT, the form v1 hands out
// ([v1-docs] link {protocol, address, path, query{AWSAccessKeyId, Expires,
// Signature}}). The link says "http" although the upload host speaks only
// https: clients must upload over https regardless (design reference).
func (s *Server) v1Link(m *media) map[string]any {
	exp := strconv.FormatInt(time.Now().Add(s.linkTTL).Unix(), 10)
	mac := hmac.New(sha1.New, []byte(s.minio.SecretKey))
	mac.Write([]byte("PUT\n\n\n" + exp + "\n/" + s.Bucket + "/" + m.Key))
	pu, _ := url.Parse(s.secure.srv.URL)
	return map[string]any{
		"status": "ok", "media": map[string]any{"type": "video", "key": m.ID},
		"link": map[string]any{"protocol": "http", "address": pu.Host, "path": "/" + s.Bucket + "/" + m.Key,
			"query": map[string]any{"AWSAccessKeyId": s.minio.AccessKey, "Expires": json.Number(exp),
				"Signature": base64.StdEncoding.EncodeToString(mac.Sum(nil))}},
	}
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// proxy forwards to MinIO and records object and part PUTs; it can fail
// chosen part numbers to simulate an interrupted upload.
type proxy struct {
	srv     *httptest.Server
	presign *s3.PresignClient

	mu       sync.Mutex
	partPuts map[int]int
	puts     []string // Content-Type of whole-object PUTs
	fail     map[int]bool
}

func newProxy(t testing.TB, m *testenv.MinIO, tls bool) *proxy {
	target, _ := url.Parse(m.Endpoint)
	p := &proxy{partPuts: map[int]int{}, fail: map[int]bool{}}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // presigned signatures cover the Host the client used
	}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.mu.Lock()
			if n, err := strconv.Atoi(r.URL.Query().Get("partNumber")); err == nil {
				p.partPuts[n]++
				if p.fail[n] {
					p.mu.Unlock()
					io.Copy(io.Discard, r.Body)
					http.Error(w, "<Error><Code>InternalError</Code></Error>", http.StatusInternalServerError)
					return
				}
			} else {
				p.puts = append(p.puts, r.Header.Get("Content-Type"))
			}
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	})
	if tls {
		p.srv = httptest.NewTLSServer(h)
	} else {
		p.srv = httptest.NewServer(h)
	}
	t.Cleanup(p.srv.Close)
	p.presign = presigner(m, p.srv.URL)
	return p
}

// presigner signs links to MinIO's bucket as reached at base.
func presigner(m *testenv.MinIO, base string) *s3.PresignClient {
	return s3.NewPresignClient(s3.New(s3.Options{
		Region: m.Region, BaseEndpoint: aws.String(base), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}))
}

func (p *proxy) failPart(n int, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[n] = on
}

func (p *proxy) parts() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]int{}
	for k, v := range p.partPuts {
		out[k] = v
	}
	return out
}

func (p *proxy) objectPuts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.puts...)
}

func (p *proxy) certPEM() []byte {
	c := p.srv.Certificate()
	if c == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
