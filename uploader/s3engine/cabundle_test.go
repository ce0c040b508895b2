package s3engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader"
)

// Hosts often set AWS_CA_BUNDLE; the SDK's config loader then rejects a
// plain *http.Client. The engine must work with it set.
func TestNewS3WithAWSCABundleSet(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	// Any valid PEM bundle will do; MinIO itself is plain http.
	system, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("need a system CA bundle to build the test's: %v", err)
	}
	if err := os.WriteFile(bundle, system, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", bundle)
	m := testenv.StartMinIOT(t)
	m.MakeBucket(t, "cabundle")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s3c, err := NewS3(ctx, S3Options{Bucket: "cabundle", Endpoint: m.Endpoint, PathStyle: true,
		Region: "us-east-1", AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}, EngineOptions{})
	if err != nil {
		t.Fatalf("NewS3 with AWS_CA_BUNDLE set: %v", err)
	}
	path := filepath.Join(t.TempDir(), "clip.mp4")
	data := []byte("bundle-proof")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src := sourceFor(t, path, "clip.mp4")
	cp := &uploader.Checkpoint{}
	if err := s3c.Put(ctx, src, PutInput{Key: "k/clip.mp4"}, cp, newSession()); err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := m.GetObject(t, "cabundle", "k/clip.mp4"); !bytes.Equal(got, data) {
		t.Fatalf("object = %q", got)
	}
}
