// Package skylarktest plays Skylark for tests: it ingests objects dropped
// into a watchfolder bucket on a real MinIO and serves the asset lookup API.
//
// Sources:
//   - [sky-s3]: Skylark "Video Upload via S3" (the documented watchfolder:
//     `aws s3 cp my-video.mp4 <bucket>`, objects moved to processed/ once
//     ingested, simple mode names the asset after the file, advanced mode
//     reads the x-amz-meta-asset JSON object).
//   - Unverified: whether objects under a prefix are ingested at all. The
//     documentation only shows root-level uploads, so this server, like a
//     conservative reading, ingests root-level objects only and leaves
//     anything under a prefix where it is.
//   - Unverified: the asset lookup path; this server answers
//     GET /api/assets/versions/data-source/<name> with Bearer auth.
package skylarktest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// Server ingests bucket and serves the API at URL.
type Server struct {
	URL    string
	Token  string
	Bucket string

	client *s3.Client
	delay  time.Duration

	mu        sync.Mutex
	ingest    bool
	assets    map[string]string // data-source name -> uid
	seenMeta  map[string]string // key -> x-amz-meta-asset as received
	ingested  map[string]int    // root key -> times ingested
	apiCalls  int
	firstSeen map[string]time.Time
	errs      []string
}

// New starts ingesting bucket (which must exist on m) after delay per
// object, and serves the API. Problems the platform would reject are
// reported as test errors at cleanup.
func New(t testing.TB, m *testenv.MinIO, bucket string, delay time.Duration) *Server {
	s := &Server{Token: "tok-skylark-secret", Bucket: bucket, client: m.Client(), delay: delay, ingest: true,
		assets: map[string]string{}, seenMeta: map[string]string{}, ingested: map[string]int{}, firstSeen: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	srv := httptest.NewServer(http.HandlerFunc(s.api))
	s.URL = srv.URL
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		for _, e := range s.Errors() {
			t.Errorf("skylarktest: %s", e)
		}
	})
	return s
}

// SetIngest pauses (false) or resumes ingest.
func (s *Server) SetIngest(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ingest = on
}

// Assets returns data-source name -> asset uid.
func (s *Server) Assets() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.assets {
		out[k] = v
	}
	return out
}

// AssetMeta returns key -> x-amz-meta-asset of every ingested object.
func (s *Server) AssetMeta() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.seenMeta {
		out[k] = v
	}
	return out
}

// Ingested returns how many times each root key was ingested (a second
// PUT of the same name is a second asset on the platform).
func (s *Server) Ingested() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.ingested {
		out[k] = v
	}
	return out
}

// APICalls counts API requests.
func (s *Server) APICalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiCalls
}

// Errors lists contract violations seen.
func (s *Server) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

func (s *Server) run(ctx context.Context) {
	for ctx.Err() == nil {
		s.mu.Lock()
		on := s.ingest
		s.mu.Unlock()
		if on {
			s.scan(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *Server) fail(format string, a ...any) {
	s.mu.Lock()
	s.errs = append(s.errs, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

func (s *Server) scan(ctx context.Context) {
	// [sky-s3] only what lands at the bucket root is picked up: the
	// listing uses "/" as delimiter, so keys under any prefix (processed/
	// included) are never seen.
	out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Delimiter: aws.String("/")})
	if err != nil {
		return
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		s.mu.Lock()
		seen, ok := s.firstSeen[key]
		if !ok {
			s.firstSeen[key] = time.Now()
		}
		s.mu.Unlock()
		if !ok || time.Since(seen) < s.delay {
			continue
		}
		head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
		if err != nil {
			continue
		}
		stem := strings.TrimSuffix(key, path.Ext(key))
		s.mu.Lock()
		delete(s.firstSeen, key)
		s.ingested[key]++
		// [sky-s3] advanced mode: x-amz-meta-asset is a JSON Asset
		// object; a uid attaches the file to that asset.
		if a, ok := head.Metadata["asset"]; ok {
			s.seenMeta[key] = a
			var obj map[string]any
			if err := json.Unmarshal([]byte(a), &obj); err != nil {
				s.errs = append(s.errs, fmt.Sprintf("asset metadata %q is not JSON: %v", a, err))
			} else if uid, ok := obj["uid"].(string); ok {
				s.assets[stem] = uid
			} else {
				s.assets[stem] = fmt.Sprintf("asse_new%03d", len(s.assets))
			}
		} else {
			// [sky-s3] simple mode: an asset named after the file
			// without extension.
			s.assets[stem] = fmt.Sprintf("asse_%03d", len(s.assets)+100)
		}
		s.mu.Unlock()
		// [sky-s3] ingested objects move to processed/.
		dst := "processed/" + key
		src := s.Bucket + "/" + (&url.URL{Path: key}).EscapedPath()
		if _, err := s.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(dst), CopySource: aws.String(src)}); err != nil {
			s.fail("copy %s: %v", key, err)
			continue
		}
		s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
	}
}

func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiCalls++
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"message":"Unauthorized"}`)
		return
	}
	const prefix = "/api/assets/versions/data-source/"
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, prefix) {
		s.errs = append(s.errs, "unexpected "+r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, prefix)
	uid, ok := s.assets[name]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not found"}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"uid": uid, "title": name, "self": "/api/assets/" + uid + "/"})
}
