// Package s3engine is the resumable S3 transfer engine (multipart with
// per-part checksums, adoption of parts the store already holds, orphan
// cleanup), the plain "s3" destination type, and the S3 keys every
// S3-writing destination type shares (DecodeS3).
package s3engine
