package s3engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/watchfolder/watchfolder/uploader"
)

// S3Options are the S3 settings shared by every destination type that writes
// to a bucket (plain s3, and the platforms that ingest through S3).
type S3Options struct {
	Bucket          string
	Region          string
	Endpoint        string // S3-compatible endpoint URL; empty: AWS
	PathStyle       bool
	AccessKeyID     string // empty: profile or the default credential chain
	SecretAccessKey string
	SessionToken    string
	Profile         string
	// Anonymous sends unsigned requests (buckets that grant writes by
	// policy); no credentials are looked up.
	Anonymous bool

	ACL                string // private, public-read, ...; empty: bucket default
	ContentType        string // empty: by extension
	ContentDisposition string
	CacheControl       string
	StorageClass       string
	Metadata           map[string]string // x-amz-meta-*
	SSE                string            // "", "AES256", "aws:kms"
	SSEKMSKeyID        string
	Checksum           string // crc32c (default) | md5 | none

	// OnConflict says what happens when the object key is already taken
	// by an object this job did not write: "suffix" (default: keep both,
	// the new object gets a " (1)" style suffix before its extension),
	// "fail" (the upload fails permanently) or "overwrite". Decided
	// atomically with conditional writes (If-None-Match: *) where the store
	// supports them, with a HEAD check where it does not.
	OnConflict string
}

// OnConflict policies.
const (
	ConflictSuffix    = "suffix"
	ConflictFail      = "fail"
	ConflictOverwrite = "overwrite"
)

// EngineOptions tune the transfer engine; shared by all destinations.
type EngineOptions struct {
	PartSize int64 // default 16 MiB; grown to stay under 10,000 parts
	// Concurrency is the ceiling of parts in flight per file; each upload
	// finds its own level below it (see streams.go). Default 32: parts are
	// sent from the file, not buffered, so a stream costs only its
	// connection's buffers (~0.3 MiB).
	Concurrency        int
	MultipartThreshold int64 // single PUT below this size; default PartSize
	Limiter            *uploader.Limiter

	// MaxFiles is how many files are uploaded at once (all folders
	// together); it only sizes the connection pool. Default 16.
	MaxFiles int
	// StallTimeout cancels a part whose body made no progress for this long
	// (a half-open connection that would otherwise hang). Default 60s.
	StallTimeout time.Duration
	// HTTPClient replaces the tuned client from NewTransport (tests wrap
	// that transport to count or alter requests). Nil: the tuned client.
	HTTPClient *http.Client
	// Logger receives debug/warn records; nil: slog.Default().
	Logger *slog.Logger
}

// PutInput is one object to write.
type PutInput struct {
	Key         string
	ContentType string            // overrides S3Options.ContentType and the by-extension default
	ACL         string            // overrides S3Options.ACL
	Metadata    map[string]string // merged over S3Options.Metadata
}

// S3 is the resumable transfer engine for one bucket configuration.
type S3 struct {
	opts   S3Options
	eng    EngineOptions
	client *s3.Client
	log    *slog.Logger
	bufs   sync.Pool // *[]byte of scanChunk bytes
	// noCond is set once the store refused a conditional write as not
	// implemented: from then on a HEAD check stands in for it.
	noCond atomic.Bool
	// learned is the parts-in-flight level the last multipart upload
	// settled on; the next one starts there.
	learned atomic.Int32
	// fileSend is the HTTP client below the SDK that sends bodies with
	// sendfile (nil only if the SDK had no client to wrap).
	fileSend *fileSendClient
}

// LearnedStreams is the parts-in-flight level the last multipart upload
// settled on (0: none yet).
func (c *S3) LearnedStreams() int { return int(c.learned.Load()) }

// SetLearnedStreams starts the next multipart upload at n parts in flight
// (bounded by the ceiling; the probe goes on from there).
func (c *S3) SetLearnedStreams(n int) {
	c.learned.Store(int32(max(0, min(n, c.eng.Concurrency))))
}

var _ uploader.StreamLearner = (*S3)(nil)

const (
	mib = 1 << 20
	// S3 limits: https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
	maxObjectSize = 5 << 40
	maxParts      = 10000
	minPartSize   = 5 * mib

	defaultPartSize     = 16 * mib
	defaultConcurrency  = 32
	defaultMaxFiles     = 16
	defaultStallTimeout = 60 * time.Second
)

// Checksum algorithm names accepted in S3Options.Checksum.
const (
	ChecksumCRC32C = "crc32c"
	ChecksumMD5    = "md5"
	ChecksumNone   = "none"
)

// NewS3 builds a client for opts. It does not contact the store.
func NewS3(ctx context.Context, opts S3Options, eng EngineOptions) (*S3, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3: bucket is empty")
	}
	switch strings.ToLower(opts.Checksum) {
	case "":
		opts.Checksum = ChecksumCRC32C
	case ChecksumCRC32C, ChecksumMD5, ChecksumNone:
		opts.Checksum = strings.ToLower(opts.Checksum)
	default:
		return nil, fmt.Errorf("s3://%s: unknown checksum %q (want crc32c, md5 or none)", opts.Bucket, opts.Checksum)
	}
	switch strings.ToLower(opts.OnConflict) {
	case "":
		opts.OnConflict = ConflictSuffix
	case ConflictSuffix, ConflictFail, ConflictOverwrite:
		opts.OnConflict = strings.ToLower(opts.OnConflict)
	default:
		return nil, fmt.Errorf("s3://%s: unknown on_conflict %q (want suffix, fail or overwrite)", opts.Bucket, opts.OnConflict)
	}
	if eng.PartSize <= 0 {
		eng.PartSize = defaultPartSize
	}
	if eng.PartSize < minPartSize {
		// S3 rejects non-final parts under 5 MiB at Complete time; fail
		// early rather than after uploading the whole file.
		eng.PartSize = minPartSize
	}
	if eng.Concurrency <= 0 {
		eng.Concurrency = defaultConcurrency
	}
	if eng.MultipartThreshold <= 0 {
		eng.MultipartThreshold = eng.PartSize
	}
	if eng.MaxFiles <= 0 {
		eng.MaxFiles = defaultMaxFiles
	}
	if eng.StallTimeout <= 0 {
		eng.StallTimeout = defaultStallTimeout
	}
	log := eng.Logger
	if log == nil {
		log = slog.Default()
	}

	lopts := credentialOptions(opts)
	if opts.Region != "" {
		lopts = append(lopts, config.WithRegion(opts.Region))
	}
	if eng.HTTPClient == nil {
		// A BuildableClient rather than a plain *http.Client: the config
		// loader adds a custom CA bundle (AWS_CA_BUNDLE, ca_bundle) to it.
		lopts = append(lopts, config.WithHTTPClient(awshttp.NewBuildableClient().
			WithTransportOptions(func(tr *http.Transport) { tuneTransport(tr, eng) })))
	}
	lopts = append(lopts,
		// S3-compatible stores reject the SDK's default CRC32 trailers; the
		// engine sends explicit per-part checksums instead.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	)
	cfg, err := config.LoadDefaultConfig(ctx, lopts...)
	if err != nil {
		// The error may quote a config file path, never a secret.
		return nil, fmt.Errorf("s3://%s: load AWS config: %w", opts.Bucket, err)
	}
	if cfg.Region == "" {
		// S3-compatible stores mostly ignore the region but SigV4 needs one.
		cfg.Region = "us-east-1"
	}
	var fileSend *fileSendClient
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		// A HEAD answered 429 has no body, so no throttling error code the
		// SDK knows: retry on the status itself.
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Retryables = append(slices.Clone(so.Retryables), retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if httpStatus(err) == http.StatusTooManyRequests {
					return aws.TrueTernary
				}
				return aws.UnknownTernary
			}))
		})
		if eng.HTTPClient != nil {
			o.HTTPClient = eng.HTTPClient
		}
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if o.HTTPClient != nil {
			fileSend = newFileSendClient(o.HTTPClient)
			o.HTTPClient = fileSend
		}
		// No "Expect: 100-continue" (the SDK adds it to PUTs from 2 MB):
		// waiting for the store's go-ahead costs a round trip per part and
		// per file, a quarter of a 2 MiB file's time over a 40 ms WAN. What
		// it would save (a body sent to a store that refuses it) is rare.
		o.ContinueHeaderThresholdBytes = -1
	})
	return &S3{opts: opts, eng: eng, client: client, log: log, fileSend: fileSend}, nil
}

// NewTransport returns the HTTP transport the engine uses (see
// tuneTransport); for callers that wrap it in EngineOptions.HTTPClient.
func NewTransport(eng EngineOptions) *http.Transport {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
			Control:   controlSocket,
		}).DialContext,
	}
	tuneTransport(tr, eng)
	return tr
}

// tuneTransport sets the engine's transport settings: HTTP/1.1 (S3 speaks
// nothing else), a pool large enough for every part of every file in
// flight, and timeouts so a dead peer fails a request instead of hanging it.
func tuneTransport(tr *http.Transport, eng EngineOptions) {
	conc, files := eng.Concurrency, eng.MaxFiles
	if conc <= 0 {
		conc = defaultConcurrency
	}
	if files <= 0 {
		files = defaultMaxFiles
	}
	// +4 for the control calls (Head, List, Complete) alongside the parts.
	pool := conc*files + 4
	tr.MaxIdleConns = pool * 2
	tr.MaxIdleConnsPerHost = pool
	tr.IdleConnTimeout = 90 * time.Second
	tr.TLSHandshakeTimeout = 15 * time.Second
	tr.ExpectContinueTimeout = 1 * time.Second
	// After a body is written the store may need a while to answer (it
	// checksums and persists the part), but not minutes.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	// The write buffer holds the headers and a body's first bytes; the
	// rest goes by sendfile (fileSendClient) or 32 KiB copies whatever its
	// size, so a large one only costs memory on every connection.
	tr.WriteBufferSize = 64 << 10
	tr.ReadBufferSize = 64 << 10
}

// Client exposes the SDK client for platform-specific calls (e.g. Skylark
// polling for processed/ objects).
func (c *S3) Client() *s3.Client { return c.client }

// Bucket returns the configured bucket.
func (c *S3) Bucket() string { return c.opts.Bucket }

// Put uploads src to in.Key, resuming from cp (which it fills: Bucket, Key,
// UploadID, PartSize, Parts, SHA256, ETag, Object, Uploaded) and saving it
// through s before each step counts. On return with nil error the object is
// complete and verified and cp.Uploaded is true.
//
// Errors name the file and s3://bucket/key; IsPermanent reports those a retry
// cannot fix; errors.Is(err, ErrSourceChanged) when the file is no longer the
// version in src (any open multipart upload is then aborted).
func (c *S3) Put(ctx context.Context, src *uploader.Source, in PutInput, cp *uploader.Checkpoint, s uploader.Session) error {
	return c.put(ctx, src, in, cp, s)
}

// Abort aborts the multipart upload recorded in cp, if any, and clears
// cp.UploadID and cp.Parts (the caller saves cp). An upload the store no
// longer knows (already aborted or completed) is not an error.
func (c *S3) Abort(ctx context.Context, cp *uploader.Checkpoint) error {
	if cp == nil || cp.UploadID == "" {
		return nil
	}
	bucket := cp.Bucket
	if bucket == "" {
		bucket = c.opts.Bucket
	}
	_, err := c.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(cp.Key), UploadId: aws.String(cp.UploadID),
	})
	if err != nil && !isNoSuchUpload(err) {
		return classify(fmt.Errorf("abort multipart upload of s3://%s/%s: %w", bucket, cp.Key, err))
	}
	cp.UploadID = ""
	cp.Parts = nil
	return nil
}

// CleanOrphans aborts multipart uploads under prefix that were initiated
// more than olderThan ago and that known does not claim (known is asked with
// the upload id; a nil known claims nothing). Incomplete uploads cost storage
// until aborted, and a crash between CreateMultipartUpload and the first
// Save leaves one no job knows about.
func (c *S3) CleanOrphans(ctx context.Context, prefix string, olderThan time.Duration, known func(uploadID string) bool) (aborted int, err error) {
	bucket := c.opts.Bucket
	cutoff := time.Now().Add(-olderThan)
	// The prefix is applied here, not sent: MinIO answers a Prefix that is
	// not a complete object key with an empty list. Open uploads are few,
	// so listing them all costs little.
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)}
	for {
		out, err := c.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return aborted, classify(fmt.Errorf("list multipart uploads in s3://%s/%s: %w", bucket, prefix, err))
		}
		for _, u := range out.Uploads {
			id, key := aws.ToString(u.UploadId), aws.ToString(u.Key)
			if !strings.HasPrefix(key, prefix) || (known != nil && known(id)) {
				continue
			}
			if u.Initiated != nil && u.Initiated.After(cutoff) {
				continue
			}
			_, err := c.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(bucket), Key: aws.String(key), UploadId: aws.String(id),
			})
			if err != nil && !isNoSuchUpload(err) {
				return aborted, classify(fmt.Errorf("abort orphan upload of s3://%s/%s: %w", bucket, key, err))
			}
			c.log.Info("aborted orphan multipart upload", "object", "s3://"+bucket+"/"+key, "upload_id", id, "initiated", aws.ToTime(u.Initiated))
			aborted++
		}
		if !aws.ToBool(out.IsTruncated) {
			return aborted, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// objectURL is how errors and cp.Object name an object.
func objectURL(bucket, key string) string { return "s3://" + bucket + "/" + key }

// acl returns the canned ACL for in, or "" for the bucket default.
func (c *S3) acl(in PutInput) types.ObjectCannedACL {
	if in.ACL != "" {
		return types.ObjectCannedACL(in.ACL)
	}
	return types.ObjectCannedACL(c.opts.ACL)
}
