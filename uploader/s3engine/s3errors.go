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

// httpStatus returns the HTTP status of the response in err's chain, or 0.
func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNotFound reports a missing object (HeadObject answers a bare 404).
func isNotFound(err error) bool {
	switch errorCode(err) {
	case "NotFound", "NoSuchKey":
		return true
	}
	return httpStatus(err) == 404
}

// isPreconditionFailed reports a conditional write refused because the key
// is taken (If-None-Match: *).
func isPreconditionFailed(err error) bool {
	return errorCode(err) == "PreconditionFailed" || httpStatus(err) == 412
}

// isConditionalUnsupported reports a store that refused a conditional write
// because it does not implement the condition header.
func isConditionalUnsupported(err error) bool {
	return errorCode(err) == "NotImplemented" || httpStatus(err) == 501
}
