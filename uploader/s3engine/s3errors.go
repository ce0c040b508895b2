package s3engine

import (
	"errors"

	"github.com/watchfolder/watchfolder/uploader"
)

// permanentCodes are S3 error codes a retry cannot fix: wrong credentials or
// configuration, or an object the store will never accept. Everything else
// (network errors, 5xx, SlowDown, BadDigest: a body damaged in transit) is
// transient. Read-only.
var permanentCodes = map[string]bool{
	"AccessDenied":          true,
	"AccountProblem":        true,
	"AllAccessDisabled":     true,
	"InvalidAccessKeyId":    true,
	"SignatureDoesNotMatch": true,
	"NoSuchBucket":          true,
	"InvalidBucketName":     true,
	"EntityTooLarge":        true,
	"InvalidStorageClass":   true,
	"InvalidArgument":       true,
	"NotImplemented":        true,
	// HeadObject answers have no body: the SDK reports the status text.
	"Forbidden": true,
}

// apiError is smithy.APIError, matched by method so this package does not
// import smithy-go directly.
type apiError interface {
	error
	ErrorCode() string
}

// errorCode returns the S3 error code in err's chain, or "".
func errorCode(err error) string {
	var ae apiError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify marks err permanent when its S3 error code says retrying is
// pointless; other errors are returned unchanged.
func classify(err error) error {
	if err == nil || uploader.IsPermanent(err) {
		return err
	}
	if permanentCodes[errorCode(err)] {
		return uploader.Permanent(err)
	}
	return err
}

func isNoSuchUpload(err error) bool {
	return errorCode(err) == "NoSuchUpload"
}
