package s3engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/uploader"
)

// noAWSEnv hides the machine's AWS settings so only what a test sets counts.
func noAWSEnv(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// TestResolveRegion: no region configured no longer means us-east-1: the
// SDK chain decides, then the bucket's own region from HeadBucket.
func TestResolveRegion(t *testing.T) {
	// AWS answers a HEAD to the wrong region with 301 and the bucket's
	// region in x-amz-bucket-region.
	aws301 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			t.Errorf("unexpected %s", r.Method)
		}
		w.Header().Set("X-Amz-Bucket-Region", "eu-west-3")
		w.WriteHeader(http.StatusMovedPermanently)
	}))
	defer aws301.Close()
	m := minioT(t)
	bucket := newBucket(t)
	base := S3Options{Bucket: bucket, AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", PathStyle: true}
	tests := []struct {
		name     string
		region   string
		envReg   string
		endpoint string
		anon     bool
		want     string
	}{
		{name: "configured wins", region: "ap-south-1", endpoint: aws301.URL, want: "ap-south-1"},
		{name: "AWS_REGION before HeadBucket", envReg: "ca-central-1", endpoint: aws301.URL, want: "ca-central-1"},
		{name: "bucket region from a 301", endpoint: aws301.URL, want: "eu-west-3"},
		{name: "anonymous, bucket region from a 301", endpoint: aws301.URL, anon: true, want: "eu-west-3"},
		{name: "MinIO answers its region", endpoint: m.Endpoint, want: m.Region},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noAWSEnv(t)
			t.Setenv("AWS_REGION", tt.envReg)
			o := base
			o.Region, o.Endpoint, o.Anonymous = tt.region, tt.endpoint, tt.anon
			if tt.endpoint == m.Endpoint {
				o.AccessKeyID, o.SecretAccessKey = m.AccessKey, m.SecretKey
			}
			got, err := ResolveRegion(context.Background(), o)
			if err != nil || got != tt.want {
				t.Fatalf("ResolveRegion = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestAnonymousPut: a bucket whose policy grants PutObject to everyone
// takes an upload with no credentials at all (unsigned requests).
func TestAnonymousPut(t *testing.T) {
	noAWSEnv(t)
	m := minioT(t)
	bucket := newBucket(t)
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},`+
		`"Action":["s3:PutObject","s3:GetObject","s3:ListMultipartUploadParts","s3:AbortMultipartUpload"],"Resource":["arn:aws:s3:::%s/*"]}]}`, bucket)
	if _, err := m.Client().PutBucketPolicy(context.Background(), &s3.PutBucketPolicyInput{Bucket: aws.String(bucket), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	eng := newEngine(t, bucket, engineCfg{opts: func(o *S3Options) {
		o.AccessKeyID, o.SecretAccessKey, o.Anonymous, o.Checksum = "", "", true, ChecksumMD5
	}})
	src, data := writeFile(t, t.TempDir(), "anon.mp4", 300<<10, 7)
	cp := &uploader.Checkpoint{}
	d := NewS3Destination("anon", "{name}", eng)
	if err := d.Upload(context.Background(), src, cp, regionNopSession{}); err != nil {
		t.Fatalf("anonymous upload: %v", err)
	}
	if got := m.GetObject(t, bucket, "anon.mp4"); string(got) != string(data) {
		t.Fatal("object differs")
	}
}

type regionNopSession struct{}

func (regionNopSession) Save(context.Context, *uploader.Checkpoint) error { return nil }
func (regionNopSession) Progress(int64)                                   {}
