// Package uploader holds the Destination contract that every delivery target
// implements, the declaration each destination type makes of its
// configuration (DestinationType), and the metadata that travels with a
// file. The S3 transfer engine lives in uploader/s3engine, so a platform
// that does not write to S3 does not depend on the AWS SDK. It knows nothing of the watcher, the state store or the daemon:
// progress is persisted through the Session the caller hands in.
package uploader

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/watchfolder/watchfolder/probe"
)

// Source describes one version of a file to deliver. The daemon builds it
// from the job; Size, ModTime, Inode and Device pin the version so a file that
// changed since it was found is never delivered under the old job.
type Source struct {
	JobID   uint64
	Folder  string // folder name from the config
	Path    string // absolute path of the file on disk, where it is now
	RelPath string // slash-separated path below the folder root, e.g. "sub/clip.mp4"
	Size    int64
	ModTime time.Time
	Inode   uint64
	Device  uint64
	Found   time.Time // when the job was created; drives {yyyy} {mm} {dd}
	Meta    Metadata
	// Duration is the media's play length when a prober read it from the
	// container; 0 means unknown. Platforms with a minimum length (JW
	// refuses media shorter than 2 s) check it before creating anything.
	Duration time.Duration
	// Media is everything the media check found (container, codecs,
	// picture size, frame rate, audio layout); nil when the folder's probe
	// is off. Duration above is its duration.
	Media *probe.Facts
}

// Metadata is the sidecar (<stem>.json) content, or what is derived from the
// file name when there is no sidecar.
type Metadata struct {
	Title       string            `json:"title,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
	ExternalID  string            `json:"external_id,omitempty"`
	Custom      map[string]string `json:"custom_params,omitempty"`
	// Platform holds per-platform extras keyed by destination type
	// ("skylark": {"uid": "asse_..."}, "wistia": {"project_id": "..."}).
	Platform map[string]json.RawMessage `json:"platform,omitempty"`
}

// Part is one committed part of a multipart upload.
type Part struct {
	Number   int32  `json:"n"`
	ETag     string `json:"etag"`
	Checksum string `json:"sum,omitempty"` // base64 value of the checksum algorithm in Checkpoint.Checksum
	Size     int64  `json:"size"`
}

// Checkpoint is everything a destination needs to resume after a crash. It is
// owned by the destination, stored opaquely (as JSON) on the job by the
// daemon, and committed durably by Session.Save before a step counts as done.
type Checkpoint struct {
	Bucket   string `json:"bucket,omitempty"`
	Key      string `json:"key,omitempty"`
	UploadID string `json:"upload_id,omitempty"` // S3 multipart upload id
	// Creating is saved before CreateMultipartUpload: if the process dies
	// before the new upload id is saved, the next attempt finds this mark
	// and aborts the unrecorded upload on Bucket/Key instead of leaving it.
	Creating bool   `json:"creating,omitempty"`
	PartSize int64  `json:"part_size,omitempty"`
	Checksum string `json:"checksum,omitempty"` // crc32c | md5 | none
	Parts    []Part `json:"parts,omitempty"`
	Uploaded bool   `json:"uploaded,omitempty"` // object complete and verified
	SHA256   string `json:"sha256,omitempty"`   // hex, whole file
	ETag     string `json:"etag,omitempty"`     // final object ETag

	// Object is the location to show operators, e.g. "s3://bucket/key".
	Object string `json:"object,omitempty"`
	// VendorID is the platform's id for the media (JW media id, Wistia
	// hashed_id, Blue Billywig mediaclip id, Skylark asset uid).
	VendorID string `json:"vendor_id,omitempty"`
	// Extra holds platform-specific resume handles (e.g. JW upload_id).
	// Never store account secrets here. A per-upload credential that must
	// survive a restart (JW upload_token) goes under a key starting with
	// "secret_": status output redacts those keys.
	Extra map[string]string `json:"extra,omitempty"`
}

// Session is how a destination reports progress to the caller.
type Session interface {
	// Save durably commits cp. A destination must not treat a step as done
	// (nor start a step that depends on it) until Save returned nil.
	Save(ctx context.Context, cp *Checkpoint) error
	// Progress reports bytes sent so far for status output; not durable.
	Progress(bytesDone int64)
}

// Destination delivers a file to one target. Upload moves the bytes; Register
// turns them into a platform id (and waits for processing when configured).
// Both resume from cp, which holds what earlier (possibly crashed) attempts
// saved; both must be safe to call again after a crash at any point.
type Destination interface {
	Name() string
	Type() string
	Upload(ctx context.Context, src *Source, cp *Checkpoint, s Session) error
	Register(ctx context.Context, src *Source, cp *Checkpoint, s Session) error
	// Abort releases what an unfinished Upload left behind (an open
	// multipart upload) when the job is given up or its source changed.
	Abort(ctx context.Context, cp *Checkpoint) error
}

// StreamLearner is a destination that learns how many parts in flight its
// link takes (the S3 engine's probe). The daemon keeps the level across
// restarts and reloads so the first upload after one starts there.
type StreamLearner interface {
	LearnedStreams() int // 0: nothing learned yet
	SetLearnedStreams(n int)
}

// TokenCheckName is what a platform's token check looks for: a name, id or
// external id no media has, so the answer says only whether the API
// accepted the credentials (`watchfolder doctor`).
const TokenCheckName = "watchfolder-token-check"

// TokenCheckSource stands for the file in a token check's messages.
func TokenCheckSource() *Source { return &Source{Path: "(token check)", RelPath: "(token check)"} }

// ErrSourceChanged means the file on disk is no longer the version the job
// was created for (size, mtime or inode differ): the job goes back to waiting.
var ErrSourceChanged = errors.New("source file changed since it was found")

// PermanentError marks a failure that retrying cannot fix (bad credentials,
// a rejected request, a file over the size limit).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so IsPermanent reports true. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or anything it wraps) is permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RetryAfterError carries a server's requested wait (HTTP Retry-After).
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter returns how long the server asked to wait, if it did.
func RetryAfter(err error) (time.Duration, bool) {
	var r *RetryAfterError
	if errors.As(err, &r) {
		return r.After, true
	}
	return 0, false
}
