package s3engine

import (
	"context"
	"log/slog"
	"testing"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/destinationtest"
)

// TestContract runs the destination contract suite against the plain s3
// destination on a real MinIO, through a proxy that can inject faults.
func TestContract(t *testing.T) {
	destinationtest.Run(t, func(t *testing.T) *destinationtest.Env {
		m := minioT(t)
		bucket := newBucket(t)
		proxy := destinationtest.NewFaultProxy(t, m.Endpoint)
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				eng, err := NewS3(context.Background(), S3Options{
					Bucket: bucket, Region: m.Region, Endpoint: proxy.URL, PathStyle: true,
					AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey,
				}, EngineOptions{PartSize: 5 << 20, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return NewS3Destination("archive", "{folder}/{relpath}", eng)
			},
			Delivered: func(t *testing.T) int { return len(m.ListKeys(t, bucket)) },
			Fault:     proxy.Fault,
			Refuse:    func(on bool) { proxy.Refuse(on, "Access Denied by bucket policy") },
			Message:   "StatusCode: 403",
			Secrets:   []string{m.SecretKey},
		}
	})
}

// TestContractMultipart: the same, with a file that takes the multipart
// path (3 parts).
func TestContractMultipart(t *testing.T) {
	destinationtest.Run(t, func(t *testing.T) *destinationtest.Env {
		m := minioT(t)
		bucket := newBucket(t)
		proxy := destinationtest.NewFaultProxy(t, m.Endpoint)
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				eng, err := NewS3(context.Background(), S3Options{
					Bucket: bucket, Region: m.Region, Endpoint: proxy.URL, PathStyle: true,
					AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey,
				}, EngineOptions{PartSize: 5 << 20, Concurrency: 2, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return NewS3Destination("archive", "{folder}/{relpath}", eng)
			},
			Delivered: func(t *testing.T) int { return len(m.ListKeys(t, bucket)) },
			Fault:     proxy.Fault,
			Refuse:    func(on bool) { proxy.Refuse(on, "Access Denied by bucket policy") },
			Message:   "StatusCode: 403",
			Secrets:   []string{m.SecretKey},
			Size:      11 << 20,
			Name:      "long clip.mov",
		}
	})
}
