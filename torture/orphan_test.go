package torture

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestNoOrphanUploadAfterKillAtCreate kills the daemon at the worst moment
// for multipart bookkeeping: MinIO has created the upload, the daemon has
// not yet committed its id. After a restart the file is delivered, and no
// multipart upload may stay open: the job recorded that it was creating
// one, so the next attempt aborts the upload it never learned the id of.
func TestNoOrphanUploadAfterKillAtCreate(t *testing.T) {
	t.Parallel()
	bucket := newBucket(t, "a")
	target, _ := url.Parse(minio.Endpoint)
	var s *site
	var killed atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method == http.MethodPost && r.URL.Query().Has("uploads") && killed.CompareAndSwap(false, true) {
			// The upload exists in MinIO; its id never reaches the daemon.
			if pid := s.pid(); pid != 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	}
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	s = newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: bucket, endpoint: front.URL}}})
	data := content(newRand(7), partSize+123)
	s.drop("big.mov", data)
	s.start()
	s.waitFor("the kill at create", time.Minute, func() (bool, string) { return killed.Load(), "no multipart upload created yet" })
	s.kill()
	s.start()
	s.waitIdle(time.Minute)
	s.stop()
	e := newExpect()
	e.delivered["big.mov"] = sum(data)
	s.verify(e)
	open, err := openUploads(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 0 {
		t.Errorf("%d multipart upload(s) left open after a kill at create: %v", len(open), open)
	}
}
