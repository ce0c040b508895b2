package jwplayer

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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
	"github.com/watchfolder/watchfolder/uploader"
)

// s3Proxy forwards to MinIO and counts object and part PUTs; it can fail
// chosen part numbers to simulate an interrupted upload.
type s3Proxy struct {
	srv       *httptest.Server
	mu        sync.Mutex
	partPuts  map[int]int
	directPut int
	contentTy []string
	failPart  map[int]bool
}

func newS3Proxy(t *testing.T, m *testenv.MinIO) *s3Proxy {
	target, _ := url.Parse(m.Endpoint)
	p := &s3Proxy{partPuts: map[int]int{}, failPart: map[int]bool{}}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // presigned signatures cover the Host the client used
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.mu.Lock()
			if n, err := strconv.Atoi(r.URL.Query().Get("partNumber")); err == nil {
				p.partPuts[n]++
				if p.failPart[n] {
					p.mu.Unlock()
					io.Copy(io.Discard, r.Body)
					http.Error(w, "<Error><Code>InternalError</Code></Error>", http.StatusInternalServerError)
					return
				}
			} else {
				p.directPut++
				p.contentTy = append(p.contentTy, r.Header.Get("Content-Type"))
			}
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *s3Proxy) parts() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]int{}
	for k, v := range p.partPuts {
		out[k] = v
	}
	return out
}

type fmedia struct {
	id, externalID, status, method, key string
	metadata                            map[string]any
	uploadID, token, s3UploadID         string
	completed                           bool
	polls                               int
}

// fakeJW enforces the JW Player v2 and v1 contracts this package relies on.
type fakeJW struct {
	t       *testing.T
	srv     *httptest.Server
	secret  string
	site    string
	v1Key   string
	minio   *testenv.MinIO
	proxy   *s3Proxy
	bucket  string
	s3      *s3.Client // via the proxy, for presigning
	presign *s3.PresignClient

	mu         sync.Mutex
	media      map[string]*fmedia
	byUpload   map[string]*fmedia
	seq        int
	script     []int    // statuses for API calls before serving normally
	retryAfter string   // with scripted 429s
	statuses   []string // status answered on successive polls once the bytes are in
	errMsg     string
	apiCalls   int
	problems   []string
}

func newFakeJW(t *testing.T, m *testenv.MinIO, bucket string) *fakeJW {
	f := &fakeJW{t: t, secret: "v2-secret", site: "SiTe1234", v1Key: "v1key", minio: m, bucket: bucket,
		media: map[string]*fmedia{}, byUpload: map[string]*fmedia{}, statuses: []string{"processing", "ready"}}
	f.proxy = newS3Proxy(t, m)
	f.s3 = s3.New(s3.Options{
		Region: m.Region, BaseEndpoint: aws.String(f.proxy.srv.URL), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	f.presign = s3.NewPresignClient(f.s3)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.problems {
			t.Errorf("fake JW: %s", p)
		}
	})
	return f
}

func jwError(w http.ResponseWriter, status int, code, desc string) {
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

func (f *fakeJW) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiCalls++
	if len(f.script) > 0 {
		st := f.script[0]
		f.script = f.script[1:]
		if st == http.StatusTooManyRequests && f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		jwError(w, st, "scripted", "scripted "+strconv.Itoa(st))
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v1/videos/create":
		f.v1Create(w, r)
		return
	case strings.HasPrefix(p, "/v2/uploads/"):
		f.uploads(w, r)
		return
	case !strings.HasPrefix(p, "/v2/sites/"):
		f.problems = append(f.problems, "unexpected path "+p)
		jwError(w, 404, "not_found", "no route")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.secret {
		jwError(w, 401, "unauthorized", "Invalid API credentials")
		return
	}
	siteMedia := "/v2/sites/" + f.site + "/media/"
	switch {
	case r.Method == http.MethodPost && p == siteMedia:
		f.create(w, r)
	case r.Method == http.MethodGet && p == siteMedia:
		f.list(w, r)
	case r.Method == http.MethodPut && reuploadRE.MatchString(p):
		m := f.media[reuploadRE.FindStringSubmatch(p)[2]]
		if m == nil {
			jwError(w, 404, "not_found", "no media")
			return
		}
		var body struct {
			Upload struct {
				Method   string `json:"method"`
				MimeType string `json:"mime_type"`
			} `json:"upload"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		writeJSON(w, 200, f.handles(m, body.Upload.Method))
	case r.Method == http.MethodGet && mediaItemRE.MatchString(p):
		mm := mediaItemRE.FindStringSubmatch(p)
		m := f.media[mm[2]]
		if mm[1] != f.site || m == nil {
			jwError(w, 404, "not_found", "no media")
			return
		}
		writeJSON(w, 200, f.view(m, true))
	default:
		f.problems = append(f.problems, "unexpected "+r.Method+" "+p)
		jwError(w, 404, "not_found", "no route")
	}
}

func (f *fakeJW) create(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.problems = append(f.problems, "create Content-Type "+ct)
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
	var up struct {
		Method   string `json:"method"`
		MimeType string `json:"mime_type"`
	}
	json.Unmarshal(body["upload"], &up)
	if (up.Method != "direct" && up.Method != "multipart") || up.MimeType == "" {
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
				if _, s := cv.(string); !s {
					ok = false
				}
			}
		}
		if !ok {
			jwError(w, 400, "invalid_body", "bad metadata field "+k)
			return
		}
	}
	if t, _ := meta["title"].(string); t == "" {
		jwError(w, 400, "invalid_body", "title required")
		return
	}
	f.seq++
	m := &fmedia{id: fmt.Sprintf("Md%06d", f.seq), status: "created", metadata: meta}
	m.externalID, _ = meta["external_id"].(string)
	f.media[m.id] = m
	out := f.handles(m, up.Method)
	out["metadata"] = meta
	writeJSON(w, 200, out)
}

// handles starts a fresh upload for m (direct link or multipart ids).
func (f *fakeJW) handles(m *fmedia, method string) map[string]any {
	ctx := context.Background()
	m.method = method
	m.key = "media/" + m.id + "/original"
	out := map[string]any{"id": m.id, "type": "media", "status": m.status}
	if method == "direct" {
		req, err := f.presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key)},
			s3.WithPresignExpires(15*time.Minute))
		if err != nil {
			f.problems = append(f.problems, "presign: "+err.Error())
		}
		out["upload_link"] = req.URL
		return out
	}
	cm, err := f.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key)})
	if err != nil {
		f.problems = append(f.problems, "create multipart: "+err.Error())
		return out
	}
	m.s3UploadID = aws.ToString(cm.UploadId)
	m.uploadID = "up" + m.id + strconv.Itoa(f.seq)
	m.token = randHex(16)
	f.byUpload[m.uploadID] = m
	out["upload_id"], out["upload_token"] = m.uploadID, m.token
	return out
}

func (f *fakeJW) view(m *fmedia, poll bool) map[string]any {
	if m.status == "created" && f.hasBytes(m) {
		m.status = "processing"
	}
	if poll && m.status != "created" {
		i := min(m.polls, len(f.statuses)-1)
		m.status = f.statuses[i]
		m.polls++
	}
	v := map[string]any{"id": m.id, "type": "media", "status": m.status, "external_id": m.externalID,
		"metadata": m.metadata}
	if m.status == "failed" {
		v["error_message"] = f.errMsg
	}
	return v
}

func (f *fakeJW) hasBytes(m *fmedia) bool {
	if m.method == "multipart" {
		return m.completed
	}
	_, err := f.minio.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key)})
	return err == nil
}

func (f *fakeJW) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	mm := extQueryRE.FindStringSubmatch(q)
	if mm == nil {
		f.problems = append(f.problems, "list without an external_id query: "+q)
		jwError(w, 400, "invalid_query", "bad q")
		return
	}
	want := strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(mm[1])
	items := []map[string]any{}
	ids := make([]string, 0, len(f.media))
	for id := range f.media {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := f.media[id]
		// JW matches long values loosely: return near misses too.
		if m.externalID == want || strings.HasPrefix(m.externalID, want[:min(15, len(want))]) {
			items = append(items, f.view(m, false))
		}
	}
	writeJSON(w, 200, map[string]any{"media": items, "page": 1, "page_length": 10, "total": len(items)})
}

func (f *fakeJW) uploads(w http.ResponseWriter, r *http.Request) {
	var id string
	if mm := partsRE.FindStringSubmatch(r.URL.Path); mm != nil {
		id = mm[1]
	} else if mm := completeRE.FindStringSubmatch(r.URL.Path); mm != nil {
		id = mm[1]
	}
	m := f.byUpload[id]
	if m == nil {
		jwError(w, 404, "not_found", "no upload")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+m.token {
		jwError(w, 401, "unauthorized", "bad upload token")
		return
	}
	ctx := context.Background()
	if r.Method == http.MethodGet && partsRE.MatchString(r.URL.Path) {
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		pl, _ := strconv.Atoi(r.URL.Query().Get("page_length"))
		if page < 1 || pl != 1000 {
			f.problems = append(f.problems, "parts query "+r.URL.RawQuery)
		}
		have := map[int32]string{}
		lp, err := f.s3.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key), UploadId: aws.String(m.s3UploadID)})
		if err != nil {
			f.problems = append(f.problems, "list parts: "+err.Error())
		} else {
			for _, p := range lp.Parts {
				have[aws.ToInt32(p.PartNumber)] = strings.Trim(aws.ToString(p.ETag), `"`)
			}
		}
		parts := []map[string]any{}
		for n := (page-1)*pl + 1; n <= page*pl && n <= 10000; n++ {
			req, err := f.presign.PresignUploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key),
				UploadId: aws.String(m.s3UploadID), PartNumber: aws.Int32(int32(n))})
			if err != nil {
				f.problems = append(f.problems, "presign part: "+err.Error())
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
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			f.problems = append(f.problems, "complete with a body")
		}
		lp, err := f.s3.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key), UploadId: aws.String(m.s3UploadID)})
		if err != nil {
			jwError(w, 400, "invalid", err.Error())
			return
		}
		var done []types.CompletedPart
		for _, p := range lp.Parts {
			done = append(done, types.CompletedPart{PartNumber: p.PartNumber, ETag: p.ETag})
		}
		_, err = f.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(f.bucket), Key: aws.String(m.key),
			UploadId: aws.String(m.s3UploadID), MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
		if err != nil {
			jwError(w, 400, "invalid", err.Error())
			return
		}
		m.completed = true
		w.WriteHeader(http.StatusAccepted)
		return
	}
	jwError(w, 405, "method", "not allowed")
}

// v1Create checks the v1 signature with an independent canonicalisation
// (url.QueryEscape with %20 for spaces equals Python's quote(v, safe='~')).
func (f *fakeJW) v1Create(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sig := q.Get("api_signature")
	q.Del("api_signature")
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	enc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, enc(k)+"="+enc(v))
		}
	}
	sum := sha1.Sum([]byte(strings.Join(parts, "&") + f.secret))
	ts, _ := strconv.ParseInt(q.Get("api_timestamp"), 10, 64)
	switch {
	case sig != hex.EncodeToString(sum[:]):
		writeJSON(w, 200, map[string]any{"status": "error", "code": "PermissionDenied", "message": "Invalid signature"})
		return
	case q.Get("api_key") != f.v1Key || q.Get("api_format") != "json" || q.Get("upload_method") != "s3":
		f.problems = append(f.problems, "v1 params: "+r.URL.RawQuery)
	case !regexp.MustCompile(`^[0-9]{9}$`).MatchString(q.Get("api_nonce")):
		f.problems = append(f.problems, "v1 nonce "+q.Get("api_nonce"))
	case time.Since(time.Unix(ts, 0)).Abs() > time.Minute:
		f.problems = append(f.problems, "v1 timestamp "+q.Get("api_timestamp"))
	}
	f.seq++
	m := &fmedia{id: fmt.Sprintf("v1%06d", f.seq), status: "created", method: "v1",
		metadata: map[string]any{"title": q.Get("title"), "tags": q.Get("tags"), "custom.genre": q.Get("custom.genre")}}
	m.key = "v1/" + m.id
	f.media[m.id] = m
	// A SigV2 query-string presigned PUT, the form v1 hands out.
	exp := strconv.FormatInt(time.Now().Add(15*time.Minute).Unix(), 10)
	mac := hmac.New(sha1.New, []byte(f.minio.SecretKey))
	mac.Write([]byte("PUT\n\n\n" + exp + "\n/" + f.bucket + "/" + m.key))
	pu, _ := url.Parse(f.proxy.srv.URL)
	writeJSON(w, 200, map[string]any{
		"status": "ok", "media": map[string]any{"type": "video", "key": m.id},
		"link": map[string]any{"protocol": pu.Scheme, "address": pu.Host, "path": "/" + f.bucket + "/" + m.key,
			"query": map[string]any{"AWSAccessKeyId": f.minio.AccessKey, "Expires": json.Number(exp),
				"Signature": base64.StdEncoding.EncodeToString(mac.Sum(nil))}},
	})
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// memSession records saved checkpoints; failSaves > 0 fails that many
// saves first (a crash before the commit).
type memSession struct {
	mu        sync.Mutex
	saves     []uploader.Checkpoint
	failSaves int
	bytes     int64
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSaves > 0 {
		s.failSaves--
		return fmt.Errorf("simulated crash")
	}
	s.saves = append(s.saves, cloneCP(cp))
	return nil
}

func (s *memSession) Progress(n int64) {
	s.mu.Lock()
	s.bytes = n
	s.mu.Unlock()
}

func (s *memSession) last() uploader.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.saves) == 0 {
		return uploader.Checkpoint{}
	}
	return cloneCP(&s.saves[len(s.saves)-1])
}

func cloneCP(cp *uploader.Checkpoint) uploader.Checkpoint {
	b, _ := json.Marshal(cp)
	var out uploader.Checkpoint
	json.Unmarshal(b, &out)
	return out
}
