package s3engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/internal/keytmpl"
	"github.com/watchfolder/watchfolder/uploader"
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
func (d *S3Destination) Key(src *uploader.Source) (string, error) {
	key, err := keytmpl.Render(d.tmpl, keytmpl.Vars{Folder: src.Folder, RelPath: src.RelPath, ID: src.JobID, Time: src.Found})
	if err != nil {
		return "", uploader.Permanent(fmt.Errorf("%s: key for %s: %w", d.name, src.Path, err))
	}
	return key, nil
}

// Upload writes the file to its object, resuming from cp.
func (d *S3Destination) Upload(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	key, err := d.Key(src)
	if err != nil {
		return err
	}
	return d.s3.Put(ctx, src, PutInput{Key: key}, cp, s)
}

// Register has nothing to do for plain S3 beyond making sure the operator
// sees where the object is.
func (d *S3Destination) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
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

// RegisterIsLocal reports that Register makes no request: the daemon may
// commit the upload's result and "done" together.
func (d *S3Destination) RegisterIsLocal() bool { return true }

// Abort aborts the unfinished multipart upload recorded in cp.
func (d *S3Destination) Abort(ctx context.Context, cp *uploader.Checkpoint) error {
	return d.s3.Abort(ctx, cp)
}

// Prefix is the literal start of every key this destination writes for
// files of folder: the template with {folder} expanded, up to the next
// placeholder. Orphan cleanup lists only uploads under it.
func (d *S3Destination) Prefix(folder string) string {
	t := d.tmpl
	var b strings.Builder
	for {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			b.WriteString(t)
			return b.String()
		}
		b.WriteString(t[:i])
		if !strings.HasPrefix(t[i:], "{folder}") {
			return b.String()
		}
		b.WriteString(folder)
		t = t[i+len("{folder}"):]
	}
}

// S3 returns the engine the destination writes with.
func (d *S3Destination) S3() *S3 { return d.s3 }

// LearnedStreams and SetLearnedStreams pass the engine's learned
// parts-in-flight level through (uploader.StreamLearner).
func (d *S3Destination) LearnedStreams() int     { return d.s3.LearnedStreams() }
func (d *S3Destination) SetLearnedStreams(n int) { d.s3.SetLearnedStreams(n) }

var _ uploader.Destination = (*S3Destination)(nil)

// CleanOrphans aborts multipart uploads under this destination's key
// prefixes for folders that no job knows of and that began more than
// olderThan ago: left by a crash between creating the upload and committing
// its id. A folder whose prefix is empty is skipped: cleaning the whole
// bucket could abort uploads that are not ours.
func (d *S3Destination) CleanOrphans(ctx context.Context, folders []string, olderThan time.Duration, known func(uploadID string) bool) (int, error) {
	total := 0
	for _, f := range folders {
		p := d.Prefix(f)
		if p == "" {
			continue
		}
		n, err := d.s3.CleanOrphans(ctx, p, olderThan, known)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
