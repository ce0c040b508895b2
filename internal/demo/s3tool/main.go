// Command s3tool is the demo's helper for the local MinIO: it creates the
// demo bucket and lists what arrived, so `make demo` needs no other client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func main() {
	endpoint := flag.String("endpoint", "", "S3 endpoint URL")
	bucket := flag.String("bucket", "", "bucket")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: s3tool -endpoint URL -bucket B mb|ls  (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
	}
	flag.Parse()
	if *endpoint == "" || *bucket == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	c := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: endpoint, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch flag.Arg(0) {
	case "mb":
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: bucket})
		var owned *types.BucketAlreadyOwnedByYou
		if err != nil && !errors.As(err, &owned) {
			fmt.Fprintf(os.Stderr, "create bucket %s: %v\n", *bucket, err)
			os.Exit(1)
		}
	case "ls":
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: bucket})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				fmt.Fprintf(os.Stderr, "list %s: %v\n", *bucket, err)
				os.Exit(1)
			}
			for _, o := range page.Contents {
				fmt.Printf("%12d  %s  s3://%s/%s\n", aws.ToInt64(o.Size), aws.ToTime(o.LastModified).Local().Format("2006-01-02 15:04:05"), *bucket, aws.ToString(o.Key))
			}
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}
