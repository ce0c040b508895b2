package testenv

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
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

// WAN is an in-process toxiproxy (pinned in go.mod) between clients and a
// loopback server that makes the server look far away: a latency each way
// (RTT = 2 × OneWay) and a bandwidth cap per connection on the upstream
// side (client to server), as TCP windows and provider shaping cap each
// stream of a real uplink. Every client connection gets its own cap.
type WAN struct {
	Addr string // host:port clients connect to
	p    *toxiproxy.Proxy
}

// WANLink describes a simulated link.
type WANLink struct {
	OneWay      time.Duration // latency added in each direction
	BytesPerSec int64         // per-connection upstream cap; 0: none
}

// StartWAN starts a proxy on a free loopback port in front of upstream
// (host:port). Stop it with Stop.
func StartWAN(upstream string, link WANLink) (*WAN, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	// The toxics log every connection through the global logger.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "wan", addr, upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("toxiproxy: %w", err)
	}
	w := &WAN{Addr: p.Listen, p: p}
	// Upstream, the cap comes first so the client is paced by it (the
	// latency toxic buffers what it holds back); then the delay.
	toxics := []string{
		fmt.Sprintf(`{"name":"bw","type":"bandwidth","stream":"upstream","attributes":{"rate":%d}}`, kbps(link.BytesPerSec)),
		fmt.Sprintf(`{"name":"up","type":"latency","stream":"upstream","attributes":{"latency":%d}}`, link.OneWay.Milliseconds()),
		fmt.Sprintf(`{"name":"down","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, link.OneWay.Milliseconds()),
	}
	for _, js := range toxics {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			p.Stop()
			return nil, fmt.Errorf("toxiproxy: add toxic %s: %w", js, err)
		}
	}
	return w, nil
}

// SetLink changes the link for connections' next bytes (a route change,
// shaping that kicks in).
func (w *WAN) SetLink(link WANLink) error {
	updates := map[string]string{
		"bw":   fmt.Sprintf(`{"attributes":{"rate":%d}}`, kbps(link.BytesPerSec)),
		"up":   fmt.Sprintf(`{"attributes":{"latency":%d}}`, link.OneWay.Milliseconds()),
		"down": fmt.Sprintf(`{"attributes":{"latency":%d}}`, link.OneWay.Milliseconds()),
	}
	for name, js := range updates {
		if _, err := w.p.Toxics.UpdateToxicJson(name, strings.NewReader(js)); err != nil {
			return fmt.Errorf("toxiproxy: update %s: %w", name, err)
		}
	}
	return nil
}

// Stop closes the proxy and its connections.
func (w *WAN) Stop() { w.p.Stop() }

// kbps converts bytes/s to toxiproxy's rate unit (1000 bytes/s); 0 is no
// cap.
func kbps(bytesPerSec int64) int64 {
	if bytesPerSec <= 0 {
		return 0
	}
	return max(1, bytesPerSec/1000)
}
