package testenv

import (
	"bytes"
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestMinIORoundTrip(t *testing.T) {
	m := StartMinIOT(t)
	m.MakeBucket(t, "roundtrip")
	body := []byte("hello minio")
	_, err := m.Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String("roundtrip"), Key: aws.String("a/b.txt"), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := m.GetObject(t, "roundtrip", "a/b.txt"); !bytes.Equal(got, body) {
		t.Fatalf("got %q, want %q", got, body)
	}
	if keys := m.ListKeys(t, "roundtrip"); len(keys) != 1 || keys[0] != "a/b.txt" {
		t.Fatalf("keys = %v", keys)
	}
}
