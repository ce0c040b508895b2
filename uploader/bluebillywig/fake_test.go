package bluebillywig

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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

// s3Proxy sits between the client under test and MinIO and records the ACL
// header sent with every object write (MinIO itself does not keep object
// ACLs, so GetObjectAcl cannot tell public-read from private).
type s3Proxy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	acls map[string]string // "bucket/key" -> x-amz-acl of the write that created it
	puts map[string]int    // "bucket/key" -> object PUTs and multipart creates
}

func newS3Proxy(t *testing.T, m *testenv.MinIO) *s3Proxy {
	t.Helper()
	target, err := url.Parse(m.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &s3Proxy{acls: map[string]string{}, puts: map[string]int{}}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the SigV4 signature covers the Host the client used
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		isCreate := (r.Method == http.MethodPut && !q.Has("partNumber") && !q.Has("uploadId")) ||
			(r.Method == http.MethodPost && q.Has("uploads"))
		if isCreate {
			k := strings.TrimPrefix(r.URL.Path, "/")
			p.mu.Lock()
			p.acls[k] = r.Header.Get("x-amz-acl")
			p.puts[k]++
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *s3Proxy) acl(bucket, key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acls[bucket+"/"+key]
}

func (p *s3Proxy) writes(bucket, key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.puts[bucket+"/"+key]
}

// fakeSAPI enforces the SAPI contract this package relies on.
type fakeSAPI struct {
	t       *testing.T
	srv     *httptest.Server
	keyID   string
	secret  string
	minio   *testenv.MinIO
	proxy   *s3Proxy
	bucket  string
	account string

	mu           sync.Mutex
	delay        int            // searches after the object exists before the clip appears
	script       []int          // statuses to answer (in order) before serving normally
	retryAfter   string         // Retry-After sent with scripted 429s
	ignoreFilter bool           // act like SAPI when the filter parameter is not fq[0]
	idAsString   bool           // answer ids as JSON strings
	seenObject   map[string]int // sourceid -> searches since the object was seen
	clips        map[string]int // sourceid -> clip id
	nextID       int
	requests     int
	authFailures int
	updates      map[int]map[string]any
	problems     []string
}

func newFakeSAPI(t *testing.T, m *testenv.MinIO, proxy *s3Proxy, keyID, secret, bucket, account string) *fakeSAPI {
	f := &fakeSAPI{t: t, keyID: keyID, secret: secret, minio: m, proxy: proxy, bucket: bucket, account: account,
		seenObject: map[string]int{}, clips: map[string]int{}, nextID: 1000, updates: map[int]map[string]any{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.problems {
			t.Errorf("fake SAPI: %s", p)
		}
	})
	return f
}

// wantToken is an independent implementation of the documented rpctoken.
func wantToken(keyID, secret string, unix int64) string {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], uint64(unix/120))
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(c[:])
	return keyID + "-" + hex.EncodeToString(m.Sum(nil))
}

var filterRE = regexp.MustCompile(`^\(sourceid_string:"([^"]*)"\)$`)

func (f *fakeSAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	now := time.Now().Unix()
	tok := r.Header.Get("rpctoken")
	if tok != wantToken(f.keyID, f.secret, now) && tok != wantToken(f.keyID, f.secret, now-120) {
		f.authFailures++
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid rpctoken"})
		return
	}
	if r.Header.Get("Authorization") != "" {
		f.problems = append(f.problems, "unexpected Authorization header")
	}
	if len(f.script) > 0 {
		st := f.script[0]
		f.script = f.script[1:]
		if st == http.StatusTooManyRequests && f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		writeJSON(w, st, map[string]any{"error": "scripted " + strconv.Itoa(st)})
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/sapi/mediaclip":
		f.search(w, r)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/sapi/mediaclip/"):
		f.update(w, r)
	default:
		f.problems = append(f.problems, "unexpected "+r.Method+" "+r.URL.Path)
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no route"})
	}
}

func (f *fakeSAPI) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("fq[]") || q.Has("fq") || f.ignoreFilter {
		// What SAPI does when the filter is not the indexed fq[0].
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
		return
	}
	if !strings.Contains(r.URL.RawQuery, "fq%5B0%5D=") {
		f.problems = append(f.problems, "filter parameter not sent URL-encoded as fq%5B0%5D: "+r.URL.RawQuery)
	}
	if q.Get("q") != "*" || q.Get("limit") != "15" || q.Get("offset") != "0" {
		f.problems = append(f.problems, "unexpected q/limit/offset: "+r.URL.RawQuery)
	}
	mm := filterRE.FindStringSubmatch(q.Get("fq[0]"))
	if mm == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "bad filter " + q.Get("fq[0]")})
		return
	}
	sid := mm[1]
	items := []map[string]any{}
	if id, ok := f.clips[sid]; ok {
		items = append(items, f.item(id, sid))
	} else if f.objectReady(sid) {
		f.seenObject[sid]++
		if f.seenObject[sid] > f.delay {
			f.nextID++
			f.clips[sid] = f.nextID
			items = append(items, f.item(f.nextID, sid))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"numfound": len(items), "items": items})
}

func (f *fakeSAPI) item(id int, sid string) map[string]any {
	var v any = id
	if f.idAsString {
		v = strconv.Itoa(id)
	}
	return map[string]any{"id": v, "sourceid": sid, "status": "draft"}
}

// objectReady reports whether upload/<account>/<sid>.<ext> exists with ACL
// public-read (as written through the proxy) and a video Content-Type.
func (f *fakeSAPI) objectReady(sid string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := f.minio.Client()
	prefix := "upload/" + f.account + "/" + sid
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(f.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		f.problems = append(f.problems, "list: "+err.Error())
		return false
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		base := path.Base(key)
		if strings.TrimSuffix(base, path.Ext(base)) != sid {
			continue
		}
		if acl := f.proxy.acl(f.bucket, key); acl != "public-read" {
			f.problems = append(f.problems, fmt.Sprintf("object %s written with ACL %q, want public-read", key, acl))
			return false
		}
		h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
		if err != nil {
			f.problems = append(f.problems, "head: "+err.Error())
			return false
		}
		if ct := aws.ToString(h.ContentType); !strings.HasPrefix(ct, "video/") {
			f.problems = append(f.problems, fmt.Sprintf("object %s has Content-Type %q", key, ct))
			return false
		}
		return true
	}
	return false
}

func (f *fakeSAPI) update(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/sapi/mediaclip/"))
	known := false
	for _, cid := range f.clips {
		known = known || cid == id
	}
	if err != nil || !known {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such mediaclip"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.problems = append(f.problems, "update Content-Type "+ct)
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
				f.problems = append(f.problems, k+" is not a string")
			}
		case "tags":
			if _, ok := v.([]any); !ok {
				f.problems = append(f.problems, "tags is not an array")
			}
		default:
			f.problems = append(f.problems, "unexpected field "+k)
		}
	}
	f.updates[id] = body
	writeJSON(w, http.StatusOK, map[string]any{"id": id})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// memSession records every saved checkpoint.
type memSession struct {
	mu    sync.Mutex
	saves []uploader.Checkpoint
	bytes int64
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
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
