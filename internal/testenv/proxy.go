package testenv

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a reverse proxy in front of an S3 server that counts object
// writes per key (PutObject and CreateMultipartUpload) and parts, and can
// simulate an outage (connections dropped without an answer).
type Proxy struct {
	URL string

	mu      sync.Mutex
	writes  map[string]int // "bucket/key" -> PutObject + CreateMultipartUpload
	parts   map[string]int // "bucket/key" -> UploadPart requests
	down    atomic.Bool
	srv     *httptest.Server
	handler http.Handler
}

// NewProxy starts a proxy to target (an http:// URL) on loopback.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{writes: map[string]int{}, parts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			// An outage: drop the connection without an answer.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.count(r)
		rp.ServeHTTP(w, r)
	}))
	p.URL = p.srv.URL
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *Proxy) count(r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	q := r.URL.Query()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case r.Method == http.MethodPut && q.Has("partNumber"):
		p.parts[key]++
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "" && strings.Contains(key, "/"):
		p.writes[key]++
	case r.Method == http.MethodPost && q.Has("uploads"):
		p.writes[key]++
	}
}

// SetDown starts (true) or ends (false) an outage.
func (p *Proxy) SetDown(down bool) {
	p.down.Store(down)
	if down {
		p.srv.CloseClientConnections()
	}
}

// Writes returns how many times an object write began for bucket/key.
func (p *Proxy) Writes(bucketKey string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.writes[bucketKey]
}

// AllWrites returns a copy of the per-key write counts.
func (p *Proxy) AllWrites() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.writes))
	for k, v := range p.writes {
		out[k] = v
	}
	return out
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.srv.Listener.Addr().(*net.TCPAddr).String() }
