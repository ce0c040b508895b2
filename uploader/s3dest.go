package uploader

import (
	"context"
	"fmt"
	"strings"

	"github.com/watchfolder/watchfolder/internal/keytmpl"
)

// S3Destination is the plain "s3" destination: the file becomes an object
// whose key comes from a template; there is nothing to register.
type S3Destination struct {
	name string
	tmpl string
	s3   *S3
}

// NewS3Destination returns a destination writing to s3's bucket under keys
// rendered from keyTemplate (validated by config with keytmpl.Validate).
func NewS3Destination(name, keyTemplate string, s3 *S3) *S3Destination {
	return &S3Destination{name: name, tmpl: keyTemplate, s3: s3}
}

// Name returns the destination's name from the config.
func (d *S3Destination) Name() string { return d.name }

// Type returns "s3".
func (d *S3Destination) Type() string { return "s3" }

// Key renders the object key for src.
func (d *S3Destination) Key(src *Source) (string, error) {
	key, err := keytmpl.Render(d.tmpl, keytmpl.Vars{Folder: src.Folder, RelPath: src.RelPath, ID: src.JobID, Time: src.Found})
	if err != nil {
		return "", Permanent(fmt.Errorf("%s: key for %s: %w", d.name, src.Path, err))
	}
	return key, nil
}

// Upload writes the file to its object, resuming from cp.
func (d *S3Destination) Upload(ctx context.Context, src *Source, cp *Checkpoint, s Session) error {
	key, err := d.Key(src)
	if err != nil {
		return err
	}
	return d.s3.Put(ctx, src, PutInput{Key: key}, cp, s)
}

// Register has nothing to do for plain S3 beyond making sure the operator
// sees where the object is.
func (d *S3Destination) Register(ctx context.Context, src *Source, cp *Checkpoint, s Session) error {
	if cp.Object != "" || cp.Key == "" {
		return nil
	}
	bucket := cp.Bucket
	if bucket == "" {
		bucket = d.s3.Bucket()
	}
	cp.Object = objectURL(bucket, cp.Key)
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("%s: save checkpoint for %s: %w", d.name, cp.Object, err)
	}
	return nil
}

// Abort aborts the unfinished multipart upload recorded in cp.
func (d *S3Destination) Abort(ctx context.Context, cp *Checkpoint) error {
	return d.s3.Abort(ctx, cp)
}

// Prefix is the template's literal text before its first placeholder: every
// key this destination writes starts with it, so orphan cleanup can list
// only its own uploads. "" when the template starts with a placeholder.
func (d *S3Destination) Prefix() string {
	if i := strings.IndexByte(d.tmpl, '{'); i >= 0 {
		return d.tmpl[:i]
	}
	return d.tmpl
}

// S3 returns the engine the destination writes with.
func (d *S3Destination) S3() *S3 { return d.s3 }

var _ Destination = (*S3Destination)(nil)
