package s3engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// fallbackRegion signs requests when nothing names a region: S3-compatible
// stores mostly ignore it, and AWS answers with the right one.
const fallbackRegion = "us-east-1"

// ResolveRegion returns the region to sign requests to opts.Bucket with:
// opts.Region when configured; else the SDK's own chain (AWS_REGION, the
// profile's region); else the bucket's region as S3 reports it on
// HeadBucket (x-amz-bucket-region, sent even with a 301 or 403 answer).
// Callers resolve once and keep the answer for the destination's life. On
// failure it returns us-east-1 with the error, so a caller may go on.
func ResolveRegion(ctx context.Context, opts S3Options) (string, error) {
	if opts.Region != "" {
		return opts.Region, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx, credentialOptions(opts)...)
	if err != nil {
		return fallbackRegion, fmt.Errorf("s3://%s: load AWS config: %w", opts.Bucket, err)
	}
	if cfg.Region != "" {
		return cfg.Region, nil
	}
	cfg.Region = fallbackRegion
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.RetryMaxAttempts = 2
	})
	out, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(opts.Bucket)})
	if err == nil {
		if r := aws.ToString(out.BucketRegion); r != "" {
			return r, nil
		}
		return fallbackRegion, nil
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		if r := re.Response.Header.Get("X-Amz-Bucket-Region"); r != "" {
			return r, nil
		}
	}
	return fallbackRegion, fmt.Errorf("s3://%s: find the bucket's region: %w", opts.Bucket, err)
}

// credentialOptions chooses where the SDK takes credentials from: none
// (anonymous, unsigned), the configured static keys, a named profile, or
// (nothing configured) its default chain.
func credentialOptions(opts S3Options) []func(*config.LoadOptions) error {
	switch {
	case opts.Anonymous:
		return []func(*config.LoadOptions) error{config.WithCredentialsProvider(aws.AnonymousCredentials{})}
	case opts.AccessKeyID != "":
		return []func(*config.LoadOptions) error{config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken))}
	case opts.Profile != "":
		return []func(*config.LoadOptions) error{config.WithSharedConfigProfile(opts.Profile)}
	}
	return nil
}
