package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// hook is a crash point inside a fake. Armed, it fires once: it signals hit
// and, if it blocks, holds the request until the client goes away (the
// daemon was killed) or release is closed.
type hook struct {
	mu      sync.Mutex
	armed   bool
	block   bool
	hit     chan struct{}
	release chan struct{}
}

func newHook(block bool) *hook {
	return &hook{armed: true, block: block, hit: make(chan struct{}, 1), release: make(chan struct{})}
}

func (h *hook) fire(ctx context.Context) {
	if h == nil {
		return
	}
	h.mu.Lock()
	armed := h.armed
	h.armed = false
	h.mu.Unlock()
	if !armed {
		return
	}
	h.hit <- struct{}{}
	if h.block {
		select {
		case <-ctx.Done():
		case <-h.release:
		}
	}
}

// fault is a scripted answer: status (with Retry-After when set) instead of
// the real one; afterWork does the work first (the platform created the
// media, then the answer was lost as a 5xx).
type fault struct {
	status     int
	retryAfter string
	afterWork  bool
}

// faults holds scripted answers per operation name.
type faults struct {
	mu sync.Mutex
	m  map[string][]fault
}

func (f *faults) script(op string, fs ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]fault{}
	}
	f.m[op] = append(f.m[op], fs...)
}

func (f *faults) take(op string) (fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m[op]) == 0 {
		return fault{}, false
	}
	x := f.m[op][0]
	f.m[op] = f.m[op][1:]
	return x, true
}

func writeFault(w http.ResponseWriter, x fault) {
	if x.retryAfter != "" {
		w.Header().Set("Retry-After", x.retryAfter)
	}
	writeJSON(w, x.status, map[string]any{"error": "scripted " + strconv.Itoa(x.status)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
}

// problems collects contract violations; reported when the test ends.
type problems struct {
	mu   sync.Mutex
	list []string
}

func (p *problems) add(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, fmt.Sprintf(format, a...))
}

func (p *problems) report(t *testing.T, who string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.list {
		t.Errorf("fake %s: contract violation: %s", who, s)
	}
}

func randID(n int) string {
	const abc = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = abc[int(b[i])%len(abc)]
	}
	return string(b)
}

// uniqueBucket makes prefix unique in the shared MinIO (-count=N reuses it).
func uniqueBucket(prefix string) string { return prefix + "-" + randID(6) }

// objectExists asks MinIO directly (not through any counting proxy).
func objectExists(ctx context.Context, bucket, key string) bool {
	_, err := minio.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	return err == nil
}

// -------------------------------------------------------- Blue Billywig --

type bbClip struct {
	ID       int
	SourceID string
	Updates  []map[string]any
}

// fakeBB is the SAPI: rpctoken HOTP auth, search by sourceid with the
// indexed fq[0] filter, mediaclip update. A clip appears once its object is
// in the ingest bucket under upload/<account>/.
type fakeBB struct {
	t       *testing.T
	srv     *httptest.Server
	bucket  string
	account string
	faults
	problems

	searchGate *hook // fires on a search once the clip exists

	mu     sync.Mutex
	clips  map[string]*bbClip // by sourceid
	seq    int
	tokens map[string]bool
}

var bbFilterRE = regexp.MustCompile(`^\(sourceid_string:"([^"]*)"\)$`)

func newFakeBB(t *testing.T, bucket string) *fakeBB {
	bucket = uniqueBucket(bucket)
	minio.MakeBucket(t, bucket)
	f := &fakeBB{t: t, bucket: bucket, account: "4242", clips: map[string]*bbClip{}, tokens: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() { f.srv.Close(); f.report(t, "bluebillywig") })
	return f
}

func (f *fakeBB) table(name, s3Endpoint string) dest {
	return dest{name, fmt.Sprintf("type = \"bluebillywig\"\npublication = \"e2epub\"\naccount = %q\napi_key_id = %q\napi_secret = \"${WF_E2E_BB}\"\napi_url = %q\npoll_interval = \"100ms\"\nregister_timeout = \"30s\"\n%s",
		f.account, bbKeyID, f.srv.URL, s3Table(f.bucket, s3Endpoint))}
}

func bbToken(now time.Time) string {
	var ctr [8]byte
	binary.BigEndian.PutUint64(ctr[:], uint64(now.Unix()/120))
	m := hmac.New(sha1.New, []byte(bbSecret))
	m.Write(ctr[:])
	return bbKeyID + "-" + hex.EncodeToString(m.Sum(nil))
}

func (f *fakeBB) serve(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("rpctoken")
	now := time.Now()
	if tok != bbToken(now) && tok != bbToken(now.Add(-120*time.Second)) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid rpctoken"})
		return
	}
	f.mu.Lock()
	f.tokens[tok] = true
	f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/sapi/mediaclip":
		f.search(w, r)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/sapi/mediaclip/"):
		id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/sapi/mediaclip/"))
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeJSON(w, 400, map[string]any{"error": "bad json"})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.clips {
			if c.ID == id {
				c.Updates = append(c.Updates, body)
				writeJSON(w, 200, map[string]any{"id": id})
				return
			}
		}
		writeJSON(w, 404, map[string]any{"error": "no such mediaclip"})
	default:
		f.add("unexpected %s %s", r.Method, r.URL.Path)
		writeJSON(w, 404, map[string]any{"error": "no route"})
	}
}

func (f *fakeBB) search(w http.ResponseWriter, r *http.Request) {
	if x, ok := f.take("search"); ok {
		writeFault(w, x)
		return
	}
	q := r.URL.Query()
	mm := bbFilterRE.FindStringSubmatch(q.Get("fq[0]"))
	if q.Get("q") != "*" || q.Get("limit") == "" || mm == nil {
		f.add("search query %s", r.URL.RawQuery)
		writeJSON(w, 200, map[string]any{}) // what SAPI does with an ignored filter
		return
	}
	sid := mm[1]
	prefix := "upload/" + f.account + "/" + sid
	out, err := minio.Client().ListObjectsV2(r.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(f.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		writeJSON(w, 500, map[string]any{"error": err.Error()})
		return
	}
	f.mu.Lock()
	for _, o := range out.Contents {
		base := path.Base(aws.ToString(o.Key))
		if strings.TrimSuffix(base, path.Ext(base)) == sid && f.clips[sid] == nil {
			f.seq++
			f.clips[sid] = &bbClip{ID: 5000 + f.seq, SourceID: sid}
		}
	}
	c := f.clips[sid]
	f.mu.Unlock()
	items := []map[string]any{}
	if c != nil {
		f.searchGate.fire(r.Context())
		if r.Context().Err() != nil {
			return
		}
		items = append(items, map[string]any{"id": strconv.Itoa(c.ID), "sourceid": sid, "status": "published"})
	}
	writeJSON(w, 200, map[string]any{"numfound": len(items), "items": items})
}

func (f *fakeBB) all() []bbClip {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bbClip
	for _, c := range f.clips {
		out = append(out, *c)
	}
	return out
}

func (f *fakeBB) seenTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.tokens {
		out = append(out, k)
	}
	return out
}
