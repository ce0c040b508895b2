package bluebillywig

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/destinationtest"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// TestContract runs the destination contract suite against Blue
// Billywig: the ingest bucket on MinIO (through a fault proxy in front of
// the ACL-recording proxy) and the strict SAPI fake.
func TestContract(t *testing.T) {
	destinationtest.Run(t, destinationtest.WithRefusedCredentials(func(t *testing.T) *destinationtest.Env {
		e := setup(t)
		e.srv.SetDelay(1) // index lag: the clip shows up one search late
		faults := destinationtest.NewFaultProxy(t, e.srv.S3URL)
		var mu sync.Mutex
		secret := testSecret
		const wrong = "not-the-bb-secret"
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
					Bucket: e.bucket, Region: minio.Region, Endpoint: faults.URL, PathStyle: true,
					AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
				}, s3engine.EngineOptions{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				o := e.options(t, eng)
				mu.Lock()
				o.APISecret = secret
				mu.Unlock()
				o.HTTPClient = &http.Client{Timeout: 20 * time.Second}
				d, err := New(o)
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
			// One object in the ingest bucket is one mediaclip.
			Delivered: func(t *testing.T) int { return len(minio.ListKeys(t, e.bucket)) },
			Fault: func(status int, ra string, n int) {
				st := make([]int, n)
				for i := range st {
					st[i] = status
				}
				e.srv.Script(ra, st...)
			},
			Refuse: func(on bool) {
				mu.Lock()
				defer mu.Unlock()
				secret = testSecret
				if on {
					secret = wrong
				}
			},
			Message:           "invalid rpctoken",
			Secrets:           []string{testSecret, wrong, minio.SecretKey},
			HonoursRetryAfter: true,
		}
	}))
}
