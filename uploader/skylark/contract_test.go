package skylark

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/destinationtest"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
	"github.com/watchfolder/watchfolder/uploader/skylark/skylarktest"
)

// TestContract runs the destination contract suite against Skylark: the
// watchfolder bucket on MinIO (through a fault proxy) with the test
// server ingesting root-level objects.
func TestContract(t *testing.T) {
	destinationtest.Run(t, func(t *testing.T) *destinationtest.Env {
		bucket := newBucket(t)
		f := skylarktest.New(t, minio, bucket, 20*time.Millisecond)
		proxy := destinationtest.NewFaultProxy(t, minio.Endpoint)
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				eng, err := s3engine.NewS3(context.Background(), s3engine.S3Options{
					Bucket: bucket, Region: minio.Region, Endpoint: proxy.URL, PathStyle: true,
					AccessKeyID: minio.AccessKey, SecretAccessKey: minio.SecretKey,
				}, s3engine.EngineOptions{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				d, err := New(Options{Name: "sky", S3: eng, APIURL: f.URL, Token: f.Token,
					PollInterval: 10 * time.Millisecond, RegisterTimeout: 10 * time.Second,
					HTTPClient: http.DefaultClient, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
			// Each ingest is an asset: a second PUT of the same name
			// would be a second asset.
			Delivered: func(t *testing.T) int {
				n := 0
				for _, c := range f.Ingested() {
					n += c
				}
				return n
			},
			Fault:   proxy.Fault,
			Refuse:  func(on bool) { proxy.Refuse(on, "Access Denied by bucket policy") },
			Message: "StatusCode: 403",
			Secrets: []string{minio.SecretKey, f.Token, "not-the-skylark-token"},
			BadToken: func(t *testing.T) uploader.Destination {
				d, err := New(Options{Name: "sky", S3: &s3engine.S3{}, APIURL: f.URL, Token: "not-the-skylark-token",
					HTTPClient: http.DefaultClient, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
		}
	})
}
