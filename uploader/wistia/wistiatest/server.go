// Package wistiatest is a local Wistia for tests: the Upload API's
// s3_copy and the Data API's medias calls, reading the copied object from
// a real MinIO. It enforces the published contract strictly; every rule
// names its source, and rules that could not be checked are the
// conservative reading, marked unverified.
//
// Sources:
//   - [s3-copy]: Wistia "Upload via S3 Copy" (POST upload.wistia.com/s3_copy,
//     bucket, source_file, region, project_id, name, description,
//     contact_id; the answer is a media).
//   - [upload-api]: Wistia Upload API (Bearer token auth; the import request
//     is a form POST).
//   - [data-api]: Wistia Data API, Medias#list (documented filters: name,
//     an exact match, type, tags, hashed_ids, paging, sorting) and
//     Medias#show/update (status queued|processing|ready|failed).
package wistiatest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// maxName is the longest media name accepted (unverified: the
// conservative reading of Wistia's 255-character limit, counted in bytes).
const maxName = 255

// Media is a snapshot of one media.
type Media struct {
	ID        int
	HashedID  string
	Name      string
	ProjectID string
	Desc      string
	ContactID string
	Bucket    string
	Key       string
	Statuses  []string // answered one per status read; the last one sticks
}

// Options adjust a server.
type Options struct {
	Token string // default random
	// Region is the region s3_copy must name; "" means none may be sent
	// (the bucket is in us-east-1, the documented default).
	Region string
}

// Server is a running fake.
type Server struct {
	URL    string // both the upload and the data API
	Token  string
	Bucket string
	Region string

	client *s3.Client

	mu       sync.Mutex
	medias   []*Media
	copyPlan []string
	statuses []string
	copies   int
	deny     bool
	onCopied func(ctx context.Context)
	bad      []string
}

// New starts a server for bucket (which must exist on m).
func New(t testing.TB, m *testenv.MinIO, bucket string, o Options) *Server {
	s := &Server{Token: o.Token, Bucket: bucket, Region: o.Region, client: m.Client(), statuses: []string{"queued", "processing", "ready"}}
	if s.Token == "" {
		s.Token = "tok-wistia-" + fmt.Sprint(len(bucket)) + "-secret"
	}
	srv := httptest.NewServer(s)
	s.URL = srv.URL
	t.Cleanup(func() {
		srv.Close()
		for _, b := range s.Violations() {
			t.Errorf("wistiatest: contract violation: %s", b)
		}
	})
	return s
}

// CopyPlan queues what the next s3_copy calls do instead of the normal
// answer: "429" (Retry-After: 1), "503" (Retry-After: 1), "500", "malformed"
// (a broken body, nothing created), "created-502" (media created, answer
// lost as a 502), "malformed-created" (created, body cut off).
func (s *Server) CopyPlan(plan ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.copyPlan = append(s.copyPlan, plan...)
}

// SetStatuses sets the status sequence of medias created from now on.
func (s *Server) SetStatuses(st ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses = append([]string(nil), st...)
}

// Deny answers 401 to everything while on.
func (s *Server) Deny(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = on
}

// OnCopied runs fn after an s3_copy was answered with a media (a crash
// point).
func (s *Server) OnCopied(fn func(ctx context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCopied = fn
}

// Snapshot returns the medias, the s3_copy calls seen and the contract
// violations.
func (s *Server) Snapshot() (medias []Media, copies int, violations []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.medias {
		medias = append(medias, *m)
	}
	return medias, s.copies, append([]string(nil), s.bad...)
}

// Violations lists contract violations seen.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bad...)
}

func (s *Server) violation(w http.ResponseWriter, code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	s.bad = append(s.bad, msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ServeHTTP answers the upload and data API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	after := s.serveLocked(w, r)
	s.mu.Unlock()
	if after != nil {
		after()
	}
}

func (s *Server) serveLocked(w http.ResponseWriter, r *http.Request) func() {
	// [upload-api] [data-api] Bearer token.
	if s.deny || r.Header.Get("Authorization") != "Bearer "+s.Token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"Invalid credentials."}`)
		return nil
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/s3_copy":
		return s.s3Copy(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/medias.json":
		// [data-api] only documented filters; name matches exactly.
		for k := range r.URL.Query() {
			switch k {
			case "name", "type", "tags", "hashed_ids", "hashed_ids[]", "page", "per_page", "sort_by", "sort_direction":
			default:
				s.violation(w, http.StatusBadRequest, "list filter %q is not documented", k)
				return nil
			}
		}
		out := []map[string]any{}
		for _, m := range s.medias {
			if n := r.URL.Query().Get("name"); n != "" && m.Name != n {
				continue
			}
			out = append(out, view(m))
		}
		writeJSON(w, out)
	case strings.HasPrefix(r.URL.Path, "/v1/medias/") && strings.HasSuffix(r.URL.Path, ".json"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/medias/"), ".json")
		var m *Media
		for _, x := range s.medias {
			if x.HashedID == id {
				m = x
			}
		}
		if m == nil {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"Media not found"}`)
			return nil
		}
		switch r.Method {
		case http.MethodGet:
			out := view(m)
			if len(m.Statuses) > 1 {
				m.Statuses = m.Statuses[1:]
			}
			writeJSON(w, out)
		case http.MethodPut:
			if err := r.ParseForm(); err != nil || r.PostForm.Get("name") == "" || len(r.PostForm.Get("name")) > maxName {
				s.violation(w, http.StatusBadRequest, "rename without a valid form name")
				return nil
			}
			m.Name = r.PostForm.Get("name")
			writeJSON(w, view(m))
		default:
			s.violation(w, http.StatusMethodNotAllowed, "%s %s", r.Method, r.URL.Path)
		}
	default:
		s.violation(w, http.StatusNotFound, "unexpected %s %s", r.Method, r.URL.Path)
	}
	return nil
}

func (s *Server) s3Copy(w http.ResponseWriter, r *http.Request) func() {
	s.copies++
	// [upload-api] a form POST (unverified for s3_copy; conservative).
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		s.violation(w, http.StatusBadRequest, "s3_copy content type %q", ct)
		return nil
	}
	if err := r.ParseForm(); err != nil {
		s.violation(w, http.StatusBadRequest, "s3_copy form: %v", err)
		return nil
	}
	p := r.PostForm
	bucket, key := p.Get("bucket"), p.Get("source_file")
	// [s3-copy] bucket is the bare name, source_file the key without a
	// leading "/", region only when not us-east-1.
	switch {
	case bucket != s.Bucket:
		s.violation(w, http.StatusBadRequest, "bucket %q, want the bare name %q", bucket, s.Bucket)
		return nil
	case key == "" || strings.HasPrefix(key, "/"):
		s.violation(w, http.StatusBadRequest, "source_file %q must be a key without a leading /", key)
		return nil
	case p.Get("region") != s.Region || (s.Region == "" && p.Has("region")):
		s.violation(w, http.StatusBadRequest, "region %q (present %v), want %q", p.Get("region"), p.Has("region"), s.Region)
		return nil
	case p.Get("name") == "":
		s.violation(w, http.StatusBadRequest, "no name")
		return nil
	case len(p.Get("name")) > maxName:
		s.violation(w, http.StatusBadRequest, "name longer than %d characters", maxName)
		return nil
	}
	if _, err := s.client.HeadObject(r.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		s.violation(w, http.StatusBadRequest, "s3://%s/%s is not in the bucket: %v", bucket, key, err)
		return nil
	}
	plan := ""
	if len(s.copyPlan) > 0 {
		plan, s.copyPlan = s.copyPlan[0], s.copyPlan[1:]
	}
	switch plan {
	case "429", "503", "500":
		code := map[string]int{"429": 429, "503": 503, "500": 500}[plan]
		if plan != "500" {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(code)
		io.WriteString(w, `{"error":"try later"}`)
		return nil
	case "malformed":
		io.WriteString(w, `{"hashed_id": `)
		return nil
	}
	m := &Media{ID: 1000 + len(s.medias), HashedID: fmt.Sprintf("abc123xy%02d", len(s.medias)),
		Name: p.Get("name"), ProjectID: p.Get("project_id"), Desc: p.Get("description"), ContactID: p.Get("contact_id"),
		Bucket: bucket, Key: key, Statuses: append([]string(nil), s.statuses...)}
	s.medias = append(s.medias, m)
	switch plan {
	case "created-502":
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `<html>bad gateway</html>`)
		return nil
	case "malformed-created":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": 12, "hashed_id": "abc`)
		return nil
	}
	writeJSON(w, view(m))
	if fn := s.onCopied; fn != nil {
		return func() { fn(r.Context()) }
	}
	return nil
}

func view(m *Media) map[string]any {
	return map[string]any{"id": m.ID, "hashed_id": m.HashedID, "name": m.Name, "status": m.Statuses[0],
		"description": m.Desc, "project": map[string]any{"id": m.ProjectID}}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
}
