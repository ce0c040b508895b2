// Package bluebillywigtest is a local Blue Billywig for tests: the SAPI
// (mediaclip search and update) and an S3 proxy in front of a real MinIO
// that records the ACL of every upload (MinIO keeps none). It enforces the
// published contract strictly; every rule names its source, and what could
// not be checked is the conservative reading, marked unverified.
//
// Sources:
//   - [sdk]: the official SDKs (bb-sapi-python-sdk, Node, PHP): rpctoken
//     auth, PHP SearchQuery's fq[0] filter on sourceid_string, mediaclip
//     update as JSON.
//   - [upload]: Blue Billywig's S3 upload documentation: the ingest bucket
//     mm.<publication>.bbvms.com, upload/<account>/<unique name>, ACL
//     public-read, a mediaclip created asynchronously with sourceid = the
//     file name without extension.
package bluebillywigtest

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// Options adjust a server.
type Options struct {
	KeyID   string // default "42"
	Secret  string // default random
	Account string // default "4242"
	// Upstream is where the ACL-recording S3 proxy forwards (e.g. a
	// counting proxy in front of the same MinIO); default MinIO itself.
	Upstream string
}

// Fault is a scripted answer for one operation ("search", "update").
type Fault struct {
	Status     int
	RetryAfter string
}

// Clip is a snapshot of one mediaclip.
type Clip struct {
	ID       int
	SourceID string
	Updates  []map[string]any
}

// Server is a running fake.
type Server struct {
	URL     string // SAPI base URL
	S3URL   string // S3 endpoint to upload through (records ACLs)
	KeyID   string
	Secret  string
	Account string
	Bucket  string

	minio *testenv.MinIO

	mu           sync.Mutex
	acls         map[string]string // "bucket/key" -> x-amz-acl of the write that created it
	puts         map[string]int
	delay        int // searches after the object exists before the clip appears
	script       []int
	retryAfter   string
	ops          map[string][]Fault
	ignoreFilter bool
	idAsString   bool
	seenObject   map[string]int
	clips        map[string]*Clip
	nextID       int
	requests     int
	authFailures int
	tokens       map[string]bool
	onFound      func(ctx context.Context)
	problems     []string
}

// New starts a SAPI and an S3 proxy for bucket (which must exist on m).
func New(t testing.TB, m *testenv.MinIO, bucket string, o Options) *Server {
	s := &Server{KeyID: o.KeyID, Secret: o.Secret, Account: o.Account, Bucket: bucket, minio: m,
		acls: map[string]string{}, puts: map[string]int{}, ops: map[string][]Fault{}, seenObject: map[string]int{},
		clips: map[string]*Clip{}, nextID: 1000, tokens: map[string]bool{}}
	if s.KeyID == "" {
		s.KeyID = "42"
	}
	if s.Secret == "" {
		s.Secret = "bb-shared-secret-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	}
	if s.Account == "" {
		s.Account = "4242"
	}
	up := o.Upstream
	if up == "" {
		up = m.Endpoint
	}
	target, err := url.Parse(up)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // SigV4 covers the Host the client used
	}}
	s3srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		isCreate := (r.Method == http.MethodPut && !q.Has("partNumber") && !q.Has("uploadId")) ||
			(r.Method == http.MethodPost && q.Has("uploads"))
		if isCreate {
			k := strings.TrimPrefix(r.URL.Path, "/")
			s.mu.Lock()
			s.acls[k] = r.Header.Get("x-amz-acl")
			s.puts[k]++
			s.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	api := httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL, s.S3URL = api.URL, s3srv.URL
	t.Cleanup(func() {
		api.Close()
		s3srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.problems {
			t.Errorf("bluebillywigtest: contract violation: %s", p)
		}
	})
	return s
}

// Script makes the next requests answer these statuses (after auth).
func (s *Server) Script(retryAfter string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script, s.retryAfter = append([]int(nil), statuses...), retryAfter
}

// ScriptOp queues scripted answers for "search" or "update".
func (s *Server) ScriptOp(op string, f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[op] = append(s.ops[op], f...)
}

// SetDelay sets the index lag: searches that find the object but no clip
// yet (unverified how long the platform takes; tests choose).
func (s *Server) SetDelay(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = n
}

// IgnoreFilter acts like SAPI when the filter parameter is not fq[0].
func (s *Server) IgnoreFilter(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ignoreFilter = on
}

// IDAsString answers ids as JSON strings.
func (s *Server) IDAsString(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idAsString = on
}

// OnFound runs fn on a search that finds the clip, before answering (a
// crash point); no answer is sent when the request is gone by then.
func (s *Server) OnFound(fn func(ctx context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onFound = fn
}

// Clips returns the mediaclips by id.
func (s *Server) Clips() []Clip {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Clip
	for _, c := range s.clips {
		cc := *c
		cc.Updates = append([]map[string]any(nil), c.Updates...)
		out = append(out, cc)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Requests and AuthFailures count SAPI requests.
func (s *Server) Requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.requests }

// AuthFailures counts refused rpctokens.
func (s *Server) AuthFailures() int { s.mu.Lock(); defer s.mu.Unlock(); return s.authFailures }

// Tokens returns the rpctokens seen (credentials that must not be shown).
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.tokens {
		out = append(out, k)
	}
	return out
}

// ACL returns the x-amz-acl an object was written with.
func (s *Server) ACL(bucket, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acls[bucket+"/"+key]
}

// Writes counts object PUTs and multipart creates of bucket/key.
func (s *Server) Writes(bucket, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts[bucket+"/"+key]
}

// token is an independent implementation of the documented rpctoken
// ([sdk]: HMAC-SHA1 keyed with the secret's own bytes over the 8-byte
// big-endian floor(unix/120), as <keyId>-<40 lowercase hex>).
func token(keyID, secret string, unix int64) string {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], uint64(unix/120))
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(c[:])
	return keyID + "-" + hex.EncodeToString(m.Sum(nil))
}

var filterRE = regexp.MustCompile(`^\(sourceid_string:"([^"]*)"\)$`)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	after := s.serveLocked(w, r)
	s.mu.Unlock()
	if after != nil {
		after()
	}
}

func (s *Server) serveLocked(w http.ResponseWriter, r *http.Request) func() {
	s.requests++
	now := time.Now().Unix()
	// [sdk] the rpctoken of this window (or the previous one, for clock
	// skew at the boundary) is the only auth.
	tok := r.Header.Get("rpctoken")
	if tok != token(s.KeyID, s.Secret, now) && tok != token(s.KeyID, s.Secret, now-120) {
		s.authFailures++
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid rpctoken"})
		return nil
	}
	s.tokens[tok] = true
	if r.Header.Get("Authorization") != "" {
		s.problems = append(s.problems, "unexpected Authorization header")
	}
	if len(s.script) > 0 {
		st := s.script[0]
		s.script = s.script[1:]
		if st == http.StatusTooManyRequests && s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		writeJSON(w, st, map[string]any{"error": "scripted " + strconv.Itoa(st)})
		return nil
	}
	op := ""
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/sapi/mediaclip":
		op = "search"
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/sapi/mediaclip/"):
		op = "update"
	default:
		s.problems = append(s.problems, "unexpected "+r.Method+" "+r.URL.Path)
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no route"})
		return nil
	}
	if fs := s.ops[op]; len(fs) > 0 {
		f := fs[0]
		s.ops[op] = fs[1:]
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, map[string]any{"error": "scripted " + strconv.Itoa(f.Status)})
		return nil
	}
	if op == "search" {
		return s.search(w, r)
	}
	s.update(w, r)
	return nil
}

func (s *Server) search(w http.ResponseWriter, r *http.Request) func() {
	q := r.URL.Query()
	// [sdk] the filter must be the indexed fq[0]; SAPI answers 200 with
	// neither numfound nor items for fq[] or fq.
	if q.Has("fq[]") || q.Has("fq") || s.ignoreFilter {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
		return nil
	}
	if !strings.Contains(r.URL.RawQuery, "fq%5B0%5D=") {
		s.problems = append(s.problems, "filter parameter not sent URL-encoded as fq%5B0%5D: "+r.URL.RawQuery)
	}
	if q.Get("q") != "*" || q.Get("limit") != "15" || q.Get("offset") != "0" {
		s.problems = append(s.problems, "unexpected q/limit/offset: "+r.URL.RawQuery)
	}
	mm := filterRE.FindStringSubmatch(q.Get("fq[0]"))
	if mm == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "bad filter " + q.Get("fq[0]")})
		return nil
	}
	sid := mm[1]
	items := []map[string]any{}
	c, ok := s.clips[sid]
	if !ok && s.objectReady(sid) {
		// [upload] the clip appears asynchronously after the upload.
		s.seenObject[sid]++
		if s.seenObject[sid] > s.delay {
			s.nextID++
			c = &Clip{ID: s.nextID, SourceID: sid}
			s.clips[sid] = c
		}
	}
	if c != nil {
		items = append(items, s.item(c.ID, sid))
	}
	body := map[string]any{"numfound": len(items), "items": items}
	if fn := s.onFound; fn != nil && c != nil {
		return func() {
			fn(r.Context())
			if r.Context().Err() == nil {
				writeJSON(w, http.StatusOK, body)
			}
		}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (s *Server) item(id int, sid string) map[string]any {
	var v any = id
	if s.idAsString {
		v = strconv.Itoa(id)
	}
	return map[string]any{"id": v, "sourceid": sid, "status": "draft"}
}

// objectReady reports whether upload/<account>/<sid>.<ext> exists, written
// public-read ([upload]; recorded by the proxy) with a video or audio
// Content-Type.
func (s *Server) objectReady(sid string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.minio.Client()
	prefix := "upload/" + s.Account + "/" + sid
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(prefix)})
	if err != nil {
		s.problems = append(s.problems, "list: "+err.Error())
		return false
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		base := path.Base(key)
		if strings.TrimSuffix(base, path.Ext(base)) != sid {
			continue
		}
		if acl := s.acls[s.Bucket+"/"+key]; acl != "public-read" {
			s.problems = append(s.problems, fmt.Sprintf("object %s written with ACL %q, want public-read", key, acl))
			return false
		}
		h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
		if err != nil {
			s.problems = append(s.problems, "head: "+err.Error())
			return false
		}
		if ct := aws.ToString(h.ContentType); !strings.HasPrefix(ct, "video/") && !strings.HasPrefix(ct, "audio/") {
			s.problems = append(s.problems, fmt.Sprintf("object %s has Content-Type %q", key, ct))
			return false
		}
		return true
	}
	return false
}

// update: [sdk] PUT /sapi/mediaclip/{id} with the changed fields as JSON
// (title, description, tags as an array: the tags encoding is unverified).
func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/sapi/mediaclip/"))
	var clip *Clip
	for _, c := range s.clips {
		if c.ID == id {
			clip = c
		}
	}
	if err != nil || clip == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such mediaclip"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		s.problems = append(s.problems, "update Content-Type "+ct)
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "bad json"})
		return
	}
	for k, v := range body {
		switch k {
		case "title", "description":
			if _, ok := v.(string); !ok {
				s.problems = append(s.problems, k+" is not a string")
			}
		case "tags":
			if _, ok := v.([]any); !ok {
				s.problems = append(s.problems, "tags is not an array")
			}
		default:
			s.problems = append(s.problems, "unexpected field "+k)
		}
	}
	clip.Updates = append(clip.Updates, body)
	writeJSON(w, http.StatusOK, map[string]any{"id": id})
}
