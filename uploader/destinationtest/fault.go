package destinationtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
)

// FaultProxy sits in front of an S3 store (or any HTTP service) and can
// answer scripted errors instead of forwarding.
type FaultProxy struct {
	URL string

	mu         sync.Mutex
	status     int
	retryAfter string
	n          int
	refuse     bool
	body       string
}

// NewFaultProxy forwards to target (an http:// URL) until told otherwise.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host // signatures cover the Host the client used
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		status, ra, body := 0, "", ""
		switch {
		case p.refuse:
			status, body = http.StatusForbidden, p.body
		case p.n > 0:
			p.n--
			status, ra = p.status, p.retryAfter
			body = s3Error(status)
		}
		p.mu.Unlock()
		if status == 0 {
			rp.ServeHTTP(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			io.WriteString(w, body)
		}
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Fault answers the next n requests with status (and Retry-After).
func (p *FaultProxy) Fault(status int, retryAfter string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.retryAfter, p.n = status, retryAfter, n
}

// Refuse answers every request 403 with an S3 AccessDenied body carrying
// message, until called with false.
func (p *FaultProxy) Refuse(on bool, message string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
	p.body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>` + message + `</Message></Error>`
}

// s3Error is the body S3 sends with throttling and unavailability.
func s3Error(status int) string {
	code := "ServiceUnavailable"
	if status == http.StatusTooManyRequests {
		code = "SlowDown"
	}
	return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>scripted ` + strconv.Itoa(status) + `</Message></Error>`
}
