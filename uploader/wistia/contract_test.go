package wistia

import (
	"context"
	"log/slog"
	"testing"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/destinationtest"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// TestContract runs the destination contract suite against Wistia: the
// customer's bucket on MinIO (through a fault proxy) and the strict
// s3_copy / Data API fake.
func TestContract(t *testing.T) {
	destinationtest.Run(t, destinationtest.WithRefusedCredentials(func(t *testing.T) *destinationtest.Env {
		bucket := newBucket(t)
		f, srv := newFakeWistia(t, bucket, "")
		proxy := destinationtest.NewFaultProxy(t, minio.Endpoint)
		tok := token
		const wrong = "not-the-wistia-token"
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
					Bucket: bucket, Region: minio.Region, Endpoint: proxy.URL, PathStyle: true,
					AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
				}, s3engine.EngineOptions{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return newDest(t, srv, eng, func(o *Options) { o.Token, o.WaitFor = tok, "ready" })
			},
			Delivered: func(t *testing.T) int {
				medias, _, _ := f.Snapshot()
				return len(medias)
			},
			Fault: func(status int, ra string, n int) {
				for range n {
					f.CopyPlan(map[int]string{429: "429", 503: "503"}[status])
				}
			},
			Refuse: func(on bool) {
				tok = token
				if on {
					tok = wrong
				}
			},
			Message:           "Invalid credentials.",
			Secrets:           []string{token, wrong, minio.SecretKey},
			HonoursRetryAfter: true,
		}
	}))
}
