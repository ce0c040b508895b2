package s3engine

// The resumable transfer engine behind (*S3).Put.
//
// Data path. One goroutine (the scanner) reads the file front to back in
// 1 MiB chunks. Every chunk feeds the whole-file SHA-256 and the current
// part's checksum (CRC32C or MD5). When a part is fully scanned it is handed
// to one of Concurrency workers, which send it (when streams lets it start:
// see streams.go) as an io.SectionReader over the shared *os.File, so no
// part is ever buffered in memory. The hand-off is
// unbuffered, so the scanner runs at most one part ahead of the workers: the
// bytes a worker sends were read by the scanner moments ago and come from
// the page cache. Each byte is thus read from disk once and hashed once,
// and the SHA-256 comes "for free" from the same pass that the per-part
// checksums need anyway (they must be known before a part is sent).
//
// Why the SHA-256 is sequential and the parts are not: SHA-256 cannot be
// computed out of order, but parts finish in any order. Splitting scanning
// (ordered, CPU-bound, fast: ~1.5-2 GB/s with SHA-NI) from sending
// (parallel, network-bound) keeps both busy. On resume the scanner still
// reads the committed parts (only hashing them, and checking them against
// their recorded checksum), so cp.SHA256 always covers the whole file.
//
// Where the SHA-256 ends up. S3 object metadata is fixed when the upload is
// created, but for a multipart upload the hash is known only after the last
// part was read. A first hashing pass would read 200 GB twice (the second
// time mostly from disk, the page cache being smaller than the file) and a
// CopyObject onto itself to add metadata is a full server-side copy (and
// needs UploadPartCopy above 5 GB). So: a single-PUT object carries
// x-amz-meta-sha256 (hash known before the PUT), a multipart object does not;
// for both the hash is recorded in cp.SHA256 (the job). Integrity of the
// stored bytes is checked end to end with the store's own per-part checksums
// (CRC32C composite or MD5 ETag) verified after Complete; a single PUT is
// verified from the checksum the store echoes in its answer (a HEAD when it
// echoes none).

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/watchfolder/watchfolder/uploader"
)

// castagnoli is the CRC32C table (read-only after init).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// unsignedPayload makes SigV4 sign the headers only (x-amz-content-sha256:
// UNSIGNED-PAYLOAD). Over plain http the SDK would otherwise hash every body
// with SHA-256 before sending it: a full extra CPU pass over the file. The
// body's integrity is covered by the explicit CRC32C/MD5 header instead,
// which the store verifies.
var unsignedPayload = s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)

// scanChunk is the scanner's read size: large enough for few syscalls, small
// enough to keep memory flat.
const scanChunk = 1 << 20

// scanBuf takes a scanner buffer from the engine's pool: a burst of small
// files would otherwise allocate (and zero) one per file.
func (c *S3) scanBuf() *[]byte {
	if b, ok := c.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, scanChunk)
	return &b
}

// errStalled is the cancel cause of a part whose body stopped moving.
var errStalled = errors.New("no progress")

// ErrVerify marks an object whose size or checksum read back from the store
// does not match what was sent. The object is deleted and the checkpoint
// reset, so a retry uploads it again.
var ErrVerify = errors.New("verification failed")

func (c *S3) put(ctx context.Context, src *uploader.Source, in PutInput, cp *uploader.Checkpoint, s uploader.Session) error {
	bucket, base := c.opts.Bucket, in.Key
	obj := objectURL(bucket, base)
	wrap := func(err error) error { return fmt.Errorf("upload %s to %s: %w", src.Path, obj, err) }
	if base == "" {
		return uploader.Permanent(wrap(errors.New("empty object key")))
	}
	// cp.Key may be base with a " (n)" suffix: the free name an earlier
	// attempt chose because base was taken.
	if cp.Uploaded && cp.Bucket == bucket && conflictIndex(base, cp.Key) >= 0 {
		return nil
	}
	if src.Size > maxObjectSize {
		return uploader.Permanent(wrap(fmt.Errorf("file is %d bytes, over the 5 TiB S3 object size limit", src.Size)))
	}
	if (cp.Bucket != "" && cp.Bucket != bucket) || (cp.Key != "" && conflictIndex(base, cp.Key) < 0) {
		// The destination's bucket or key template changed since the last
		// attempt: the old upload is of no use. Failing to abort it is not
		// worth failing this upload for (CleanOrphans gets it later).
		if err := c.Abort(ctx, cp); err != nil {
			c.log.Warn("abort superseded upload", "file", src.Path, "err", err)
		}
		resetS3(cp)
	}
	if cp.Key != "" {
		in.Key = cp.Key
	}

	f, err := openSource(src.Path)
	if err != nil {
		if errors.Is(err, uploader.ErrSourceChanged) {
			c.abandon(ctx, src, cp, s)
		}
		return wrap(err)
	}
	defer f.Close()
	if err := sameVersion(f, src); err != nil {
		c.abandon(ctx, src, cp, s)
		return wrap(err)
	}
	if src.Size < c.eng.MultipartThreshold {
		if cp.UploadID != "" {
			if err := c.Abort(ctx, cp); err != nil {
				c.log.Warn("abort multipart upload before single PUT", "file", src.Path, "err", err)
			}
		}
		return c.putSingle(ctx, f, src, in, base, cp, s, wrap)
	}
	return c.putMultipart(ctx, f, src, in, base, cp, s, wrap)
}

// openSource: see uploader.OpenSource.
func openSource(path string) (*os.File, error) { return uploader.OpenSource(path) }

// failed is the end of a transfer that went wrong: when the file changed
// under it (a part's body read short because the file was truncated, say)
// the open multipart upload is aborted at once and the error says the
// source changed; otherwise err is returned as is.
func (c *S3) failed(ctx context.Context, f *os.File, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, err error) error {
	if !errors.Is(err, uploader.ErrSourceChanged) {
		verr := sameVersion(f, src)
		if verr == nil || !(errors.Is(verr, uploader.ErrSourceChanged) || errors.Is(verr, fs.ErrNotExist)) {
			return err
		}
		err = fmt.Errorf("%w (the transfer failed: %v)", verr, err)
	}
	c.abandon(ctx, src, cp, s)
	return err
}

// resetS3 forgets everything the engine recorded in cp, keeping what the
// platform destinations own (VendorID, Extra).
func resetS3(cp *uploader.Checkpoint) {
	cp.Bucket, cp.Key, cp.UploadID, cp.PartSize, cp.Checksum = "", "", "", 0, ""
	cp.Parts, cp.Uploaded, cp.SHA256, cp.ETag, cp.Object = nil, false, "", "", ""
	cp.Creating = false
}

// abandon aborts the open upload of a file that changed or vanished and
// records that, best effort: the caller's error matters more.
func (c *S3) abandon(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) {
	if cp.UploadID == "" {
		return
	}
	if err := c.Abort(ctx, cp); err != nil {
		c.log.Warn("abort upload of changed file", "file", src.Path, "err", err)
		return
	}
	if err := s.Save(ctx, cp); err != nil {
		c.log.Warn("save checkpoint after abort", "file", src.Path, "err", err)
	}
}

// sameVersion checks that the open file is the version src describes. An
// Inode or Device of 0 in src means "not recorded" and is not compared.
func sameVersion(f *os.File, src *uploader.Source) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	var diffs []string
	if fi.Size() != src.Size {
		diffs = append(diffs, fmt.Sprintf("size %d -> %d", src.Size, fi.Size()))
	}
	if !fi.ModTime().Equal(src.ModTime) {
		diffs = append(diffs, fmt.Sprintf("mtime %s -> %s", src.ModTime.Format(time.RFC3339Nano), fi.ModTime().Format(time.RFC3339Nano)))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if src.Inode != 0 && st.Ino != src.Inode {
			diffs = append(diffs, fmt.Sprintf("inode %d -> %d", src.Inode, st.Ino))
		}
		if src.Device != 0 && uint64(st.Dev) != src.Device {
			diffs = append(diffs, fmt.Sprintf("device %d -> %d", src.Device, st.Dev))
		}
	}
	// A re-export may have replaced the file at its path (renamed over
	// it): the open descriptor still reads the old version, which must not
	// be completed as the file now in the folder. A vanished path is
	// reported as such, so the job ends "gone" rather than waiting.
	pi, err := os.Stat(src.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s is no longer in the folder: %w", src.Path, err)
	case err != nil:
		return fmt.Errorf("stat %s: %w", src.Path, err)
	case !os.SameFile(fi, pi):
		diffs = append(diffs, "replaced by another file at its path")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w (%s)", uploader.ErrSourceChanged, strings.Join(diffs, ", "))
	}
	return nil
}

// partSizeFor grows want (to whole MiB) so size fits in 10,000 parts.
func partSizeFor(size, want int64) int64 {
	ps := max(want, minPartSize)
	if (size+ps-1)/ps > maxParts {
		ps = (size + maxParts - 1) / maxParts
		ps = (ps + mib - 1) / mib * mib
	}
	return ps
}

// metadata merges the configured and per-object x-amz-meta-* values and
// the job's token.
func (c *S3) metadata(in PutInput, token string) map[string]string {
	m := make(map[string]string, len(c.opts.Metadata)+len(in.Metadata)+2)
	for k, v := range c.opts.Metadata {
		m[strings.ToLower(k)] = v
	}
	for k, v := range in.Metadata {
		m[strings.ToLower(k)] = v
	}
	m[metaJob] = token
	return m
}

func (c *S3) contentType(in PutInput) string {
	switch {
	case in.ContentType != "":
		return in.ContentType
	case c.opts.ContentType != "":
		return c.opts.ContentType
	}
	return uploader.ContentTypeFor(in.Key)
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// newSum returns the part hash for the configured algorithm, nil for none.
func (c *S3) newSum() hash.Hash {
	switch c.opts.Checksum {
	case ChecksumCRC32C:
		return crc32.New(castagnoli)
	case ChecksumMD5:
		return md5.New()
	}
	return nil
}

// scanRange reads [off, off+n) once, feeding sha (if not nil) and returning
// the configured part checksum (nil for none).
func (c *S3) scanRange(ctx context.Context, f *os.File, off, n int64, sha hash.Hash, buf []byte) ([]byte, error) {
	sum := c.newSum()
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := buf[:min(int64(len(buf)), n-done)]
		k, err := f.ReadAt(chunk, off+done)
		if k < len(chunk) {
			if err == nil || err == io.EOF {
				err = fmt.Errorf("%w (file shorter than recorded: read ended at %d of %d bytes)", uploader.ErrSourceChanged, off+done+int64(k), off+n)
			}
			return nil, fmt.Errorf("read at offset %d: %w", off+done, err)
		}
		if sha != nil {
			sha.Write(chunk)
		}
		if sum != nil {
			sum.Write(chunk)
		}
		done += int64(k)
	}
	if sum == nil {
		return nil, nil
	}
	return sum.Sum(nil), nil
}

// progress reports bytes sent, serialised so the uploader.Session sees a single
// caller and values in the order they were reached.
type progress struct {
	mu   sync.Mutex
	done int64
	s    uploader.Session
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	p.done += n
	p.s.Progress(p.done)
	p.mu.Unlock()
}

// partBody is one request body: a window of the file, paced by the limiter,
// counted for progress, and watched for stalls. It is seekable so the SDK
// can rewind it to retry.
type partBody struct {
	ctx   context.Context
	sr    *io.SectionReader
	lim   *uploader.Limiter
	prog  *progress
	timer *time.Timer
	stall time.Duration
	watch *partWatch // a multipart part's, for streams; nil for a single PUT
	// file and base, when set, let the HTTP client send the part with
	// sendfile (see fileSendClient) from offset base.
	file *os.File
	base int64

	mu  sync.Mutex // pos, hw, gen: Read's, or a fileBody's watcher's
	pos int64
	hw  int64 // bytes already reported to prog; retries don't count twice
	// gen counts rewinds: a fileBody of an earlier attempt (net/http may
	// close it after the retry began) must not move this one's position.
	gen uint64
}

func (b *partBody) Read(p []byte) (int, error) {
	// The transport may read a body after the request returned (an early
	// answer): by then the body's buffer may be back in the pool.
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	rem := b.sr.Size() - b.pos
	b.mu.Unlock()
	if rem <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rem {
		p = p[:rem]
	}
	if b.lim != nil && len(p) > uploader.LimiterChunk {
		p = p[:uploader.LimiterChunk]
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := b.lim.WaitN(b.ctx, len(p)); err != nil {
		return 0, err
	}
	n, err := b.sr.Read(p)
	if n > 0 {
		b.mu.Lock()
		b.moved(b.pos + int64(n))
		b.mu.Unlock()
	}
	return n, err
}

// advanceTo records that the first pos bytes of the body were handed to
// the connection (a fileBody's watcher, reading its file position) in the
// attempt gen.
func (b *partBody) advanceTo(gen uint64, pos int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen == b.gen && pos > b.pos {
		b.moved(pos)
	}
}

// moved sets the position after bytes were handed over; b.mu is held.
func (b *partBody) moved(pos int64) {
	b.pos = pos
	if b.pos >= b.sr.Size() {
		// Body handed over: from here ResponseHeaderTimeout guards
		// the wait for the answer.
		b.timer.Stop()
	} else {
		b.timer.Reset(b.stall)
	}
	if b.pos > b.hw {
		b.prog.add(b.pos - b.hw)
		if b.watch != nil {
			b.watch.sentBytes(b.pos - b.hw)
		}
		b.hw = b.pos
	}
}

func (b *partBody) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.sr.Seek(off, whence)
	if err == nil {
		b.gen++
		if p < b.pos {
			b.timer.Reset(b.stall)
		}
		b.pos = p
	}
	return p, err
}

// send runs do with a body over [off, off+n) of f. If the body makes no
// progress for StallTimeout the request is cancelled: a half-open
// connection otherwise blocks a part (and the whole file) for good.
func (c *S3) send(ctx context.Context, f io.ReaderAt, off, n int64, prog *progress, w *partWatch, do func(ctx context.Context, body io.ReadSeeker) error) error {
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body := &partBody{
		ctx: pctx, sr: io.NewSectionReader(f, off, n), lim: c.eng.Limiter, prog: prog,
		stall: c.eng.StallTimeout, watch: w, base: off,
	}
	body.file, _ = f.(*os.File)
	body.timer = time.AfterFunc(c.eng.StallTimeout, func() { cancel(errStalled) })
	defer body.timer.Stop()
	err := do(withFileSend(pctx, body), body)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(pctx), errStalled) {
		return fmt.Errorf("body made no progress for %s, cancelled: %w", c.eng.StallTimeout, err)
	}
	return err
}

func (c *S3) putSingle(ctx context.Context, f *os.File, src *uploader.Source, in PutInput, base string, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket, size := c.opts.Bucket, src.Size
	sha := sha256.New()
	buf := c.scanBuf()
	defer c.bufs.Put(buf)
	sum, err := c.scanRange(ctx, f, 0, size, sha, *buf)
	if err != nil {
		return wrap(c.failed(ctx, f, src, cp, s, err))
	}
	// A file that fits in the scan buffer is sent from it: one read instead
	// of two, and the bytes sent are exactly the bytes hashed.
	var body io.ReaderAt = f
	if size <= int64(len(*buf)) {
		body = bytes.NewReader((*buf)[:size])
	}
	shaHex := hex.EncodeToString(sha.Sum(nil))
	token := jobToken(src)
	meta := c.metadata(in, token)
	meta["sha256"] = shaHex
	var wantCRC, wantETag string
	switch c.opts.Checksum {
	case ChecksumCRC32C:
		wantCRC = base64.StdEncoding.EncodeToString(sum)
	case ChecksumMD5:
		wantETag = hex.EncodeToString(sum)
	}
	prog := &progress{s: s}
	guard := c.opts.OnConflict != ConflictOverwrite
	own, replaceOwn := false, false
	if guard && c.noCond.Load() {
		if in.Key, own, err = c.claimKey(ctx, base, in.Key, token); err != nil {
			return wrap(err)
		}
	}
	var out *s3.PutObjectOutput
	for try := 0; ; try++ {
		if try > maxClaimTries {
			return wrap(fmt.Errorf("%s and its suffixed names kept being taken by other writers (%d tries)", base, try))
		}
		if own {
			// This job wrote the object before (its answer, or the record of
			// it, was lost): verified, it is the delivery.
			etag, err := c.verify(ctx, bucket, in.Key, size, wantCRC, wantETag, token)
			if err == nil {
				c.log.Info("object already written by this job", "file", src.Path, "object", objectURL(bucket, in.Key))
				return c.recordSingle(ctx, src, in.Key, shaHex, etag, cp, s, wrap)
			}
			if !errors.Is(err, ErrVerify) {
				return wrap(err)
			}
			// Ours, but not these bytes: replace it.
			own, replaceOwn = false, true
		}
		cond := guard && !replaceOwn && !c.noCond.Load()
		key := in.Key
		err := c.send(ctx, body, 0, size, prog, nil, func(ctx context.Context, body io.ReadSeeker) error {
			pin := &s3.PutObjectInput{
				Bucket: aws.String(bucket), Key: aws.String(key), Body: body,
				ContentLength:        aws.Int64(size),
				ContentType:          aws.String(c.contentType(in)),
				ACL:                  c.acl(in),
				StorageClass:         types.StorageClass(c.opts.StorageClass),
				CacheControl:         optString(c.opts.CacheControl),
				ContentDisposition:   optString(c.opts.ContentDisposition),
				Metadata:             meta,
				SSEKMSKeyId:          optString(c.opts.SSEKMSKeyID),
				ServerSideEncryption: types.ServerSideEncryption(c.opts.SSE),
			}
			if cond {
				pin.IfNoneMatch = aws.String("*")
			}
			switch c.opts.Checksum {
			case ChecksumCRC32C:
				pin.ChecksumCRC32C = aws.String(wantCRC)
			case ChecksumMD5:
				pin.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum))
			}
			var err error
			out, err = c.client.PutObject(ctx, pin, unsignedPayload)
			return err
		})
		if err == nil {
			break
		}
		if !cond || !(isPreconditionFailed(err) || isConditionalUnsupported(err)) {
			return wrap(c.failed(ctx, f, src, cp, s, classify(fmt.Errorf("put object: %w", err))))
		}
		if isConditionalUnsupported(err) {
			c.conditionalUnsupported(err)
		}
		if in.Key, own, err = c.claimKey(ctx, base, in.Key, token); err != nil {
			return wrap(err)
		}
	}
	key := in.Key
	// Written in place during the PUT (same size, so no checksum error
	// with checksum "none")? The object is not the version of this job.
	if err := sameVersion(f, src); err != nil {
		if _, derr := c.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); derr != nil {
			c.log.Warn("delete object of a file that changed during upload", "object", objectURL(bucket, key), "err", derr)
		}
		return wrap(err)
	}
	etag, verified, err := c.verifyPut(out, wantCRC, wantETag)
	if err == nil && !verified {
		etag, err = c.verify(ctx, bucket, key, size, wantCRC, wantETag, token)
		if errors.Is(err, errGone) {
			// The store took the PUT (and checked its body against the
			// checksum sent with it) and the object is gone already: a
			// consumer such as a platform's watch folder ingested it and
			// moved it away. It was delivered; a second PUT would deliver
			// it twice.
			c.log.Info("object gone right after upload; taken as delivered", "file", src.Path, "object", objectURL(bucket, key))
			etag, err = strings.Trim(aws.ToString(out.ETag), `"`), nil
		}
	}
	if err != nil {
		return wrap(c.verifyFailed(ctx, cp, s, bucket, key, err))
	}
	return c.recordSingle(ctx, src, key, shaHex, etag, cp, s, wrap)
}

// recordSingle records a single-PUT object as uploaded.
func (c *S3) recordSingle(ctx context.Context, src *uploader.Source, key, shaHex, etag string, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket := c.opts.Bucket
	cp.Bucket, cp.Key, cp.UploadID, cp.PartSize, cp.Parts = bucket, key, "", 0, nil
	cp.Checksum, cp.SHA256, cp.ETag = c.opts.Checksum, shaHex, etag
	cp.Object, cp.Uploaded, cp.Creating = objectURL(bucket, key), true, false
	if err := s.Save(ctx, cp); err != nil {
		return wrap(fmt.Errorf("save checkpoint: %w", err))
	}
	c.log.Debug("uploaded", "file", src.Path, "object", cp.Object, "bytes", src.Size)
	return nil
}

// verifyFailed handles an object that was written but reads back wrong (or
// could not be read back). A mismatch deletes the object: consumers such as
// platform watch folders must not ingest it, and it cannot be "aborted" once
// complete. Then cp is reset so the retry starts over. Other errors (the
// HEAD itself failed) leave everything as is for the retry to verify again.
func (c *S3) verifyFailed(ctx context.Context, cp *uploader.Checkpoint, s uploader.Session, bucket, key string, err error) error {
	if !errors.Is(err, ErrVerify) {
		return err
	}
	if _, derr := c.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); derr != nil {
		c.log.Warn("delete object that failed verification", "object", objectURL(bucket, key), "err", derr)
	}
	resetS3(cp)
	if serr := s.Save(ctx, cp); serr != nil {
		c.log.Warn("save checkpoint after failed verification", "object", objectURL(bucket, key), "err", serr)
	}
	return err
}

// verify reads the object's size and checksum back. wantCRC is the base64
// CRC32C (composite with "-N" for multipart), wantETag the hex MD5 ETag
// (with "-N" for multipart); empty ones are not checked. A store that does
// not report a checksum is not a mismatch. It returns the object's ETag.
//
// An object that carries another job's token (see jobToken) is not this
// job's: errNotOurs. A missing object is errGone.
func (c *S3) verify(ctx context.Context, bucket, key string, size int64, wantCRC, wantETag, token string) (string, error) {
	in := &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if wantCRC != "" {
		in.ChecksumMode = types.ChecksumModeEnabled
	}
	h, err := c.client.HeadObject(ctx, in)
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("head object to verify it: %w: %w", errGone, err)
		}
		return "", classify(fmt.Errorf("head object to verify it: %w", err))
	}
	etag := strings.Trim(aws.ToString(h.ETag), `"`)
	if t := h.Metadata[metaJob]; token != "" && t != "" && t != token {
		return etag, fmt.Errorf("%w: %s now holds another job's object (job %s)", errNotOurs, objectURL(bucket, key), t)
	}
	if got := aws.ToInt64(h.ContentLength); got != size {
		return etag, fmt.Errorf("%w: stored object is %d bytes, file is %d", ErrVerify, got, size)
	}
	if got := aws.ToString(h.ChecksumCRC32C); wantCRC != "" && got != "" && !sameChecksum(got, wantCRC) {
		return etag, fmt.Errorf("%w: stored CRC32C %s, computed %s", ErrVerify, got, wantCRC)
	}
	// With SSE-KMS (or SSE-C) the ETag is not an MD5 of the data.
	if wantETag != "" && c.opts.SSE != "aws:kms" && etag != wantETag {
		return etag, fmt.Errorf("%w: stored ETag %s, computed %s", ErrVerify, etag, wantETag)
	}
	return etag, nil
}

// verifyPut checks a single PUT from the store's answer, which saves a
// HEAD round trip per object (a burst of small files is mostly round
// trips). The store computed the checksum it echoes over the bytes it
// stored, and rejects a PUT whose body is not ContentLength bytes, so an
// echoed CRC32C equal to ours (or, for md5, an ETag equal to the MD5 the
// store checked Content-MD5 against) verifies size and content. verified
// is false when the answer cannot tell (no checksum configured, none
// echoed, SSE-KMS ETags): then verify's HEAD decides.
func (c *S3) verifyPut(out *s3.PutObjectOutput, wantCRC, wantETag string) (etag string, verified bool, err error) {
	if out == nil {
		return "", false, nil
	}
	etag = strings.Trim(aws.ToString(out.ETag), `"`)
	if etag == "" {
		return "", false, nil
	}
	if got := aws.ToString(out.ChecksumCRC32C); wantCRC != "" && got != "" {
		if !sameChecksum(got, wantCRC) {
			return etag, false, fmt.Errorf("%w: store answered the PUT with CRC32C %s, computed %s", ErrVerify, got, wantCRC)
		}
		return etag, true, nil
	}
	if wantETag != "" && c.opts.SSE == "" {
		if etag != wantETag {
			return etag, false, fmt.Errorf("%w: store answered the PUT with ETag %s, computed %s", ErrVerify, etag, wantETag)
		}
		return etag, true, nil
	}
	return etag, false, nil
}

// sameChecksum compares checksums where one side may lack the "-N" part
// count suffix (stores differ in whether HeadObject reports it).
func sameChecksum(got, want string) bool {
	if got == want {
		return true
	}
	g, _, gs := strings.Cut(got, "-")
	w, _, ws := strings.Cut(want, "-")
	return g == w && gs != ws
}

// partJob is one scanned part ready to send.
type partJob struct {
	n   int32
	off int64
	len int64
	sum []byte
}

// errKeyTaken ends a multipart attempt whose key another writer took
// while the parts were sent: the caller starts again under in.Key.
var errKeyTaken = errors.New("object key taken during the upload")

func (c *S3) putMultipart(ctx context.Context, f *os.File, src *uploader.Source, in PutInput, base string, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	for try := 0; ; try++ {
		err := c.multipart(ctx, f, src, &in, base, cp, s, wrap)
		if !errors.Is(err, errKeyTaken) {
			return err
		}
		if try >= maxClaimTries {
			return wrap(fmt.Errorf("%s and its suffixed names kept being taken by other writers (%d tries)", base, try))
		}
		c.log.Warn("object key taken by another writer during the upload; sending again under a free name",
			"file", src.Path, "object", objectURL(c.opts.Bucket, in.Key))
	}
}

// multipart is one attempt of putMultipart on in.Key.
func (c *S3) multipart(ctx context.Context, f *os.File, src *uploader.Source, in *PutInput, base string, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket, size, alg := c.opts.Bucket, src.Size, c.opts.Checksum
	partSize := partSizeFor(size, c.eng.PartSize)
	token := jobToken(src)
	guard := c.opts.OnConflict != ConflictOverwrite
	var rtt rttGauge // round trips of the small requests before the parts

	if cp.UploadID != "" && (cp.Checksum != alg || cp.PartSize < minPartSize || (size+cp.PartSize-1)/cp.PartSize > maxParts) {
		// Parts of an upload created with another checksum algorithm or
		// an unusable part size cannot be completed together with new ones.
		if err := c.Abort(ctx, cp); err != nil {
			c.log.Warn("abort incompatible upload", "file", src.Path, "err", err)
		}
		resetS3(cp)
	}
	var unrecorded map[int32]types.Part
	if cp.UploadID != "" {
		partSize = cp.PartSize
		var err error
		t0 := time.Now()
		unrecorded, err = c.keepStoredParts(ctx, cp, size)
		rtt.observe(t0)
		if err != nil {
			if !isNoSuchUpload(err) {
				return wrap(classify(err))
			}
			// Completed before a crash lost the answer (the object is then
			// this job's, found below), or aborted: start over.
			c.log.Info("multipart upload gone from the store", "file", src.Path, "object", objectURL(bucket, in.Key), "upload_id", cp.UploadID)
			cp.UploadID, cp.Parts, unrecorded = "", nil, nil
		}
	}
	if cp.UploadID == "" {
		// Claim a free key before sending: a conflict found only at
		// Complete would cost the whole upload (parts cannot move to
		// another key). Complete's condition still decides atomically.
		own := false
		var err error
		if guard {
			t0 := time.Now()
			in.Key, own, err = c.claimKey(ctx, base, in.Key, token)
			rtt.observe(t0)
			if err != nil {
				return wrap(err)
			}
		} else {
			t0 := time.Now()
			own = c.isOwn(ctx, in.Key, token)
			rtt.observe(t0)
		}
		if own {
			return c.adoptOwn(ctx, f, src, in.Key, partSize, token, cp, s, wrap)
		}
		t0 := time.Now()
		if err := c.create(ctx, *in, cp, partSize, token, s); err != nil {
			return wrap(err)
		}
		rtt.observe(t0)
	}
	key := in.Key

	nParts := int32((size + partSize - 1) / partSize)
	committed := make(map[int32]uploader.Part, len(cp.Parts))
	prog := &progress{s: s}
	for _, p := range cp.Parts {
		committed[p.Number] = p
		prog.done += p.Size
	}
	if prog.done > 0 {
		s.Progress(prog.done)
	}

	gctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu         sync.Mutex // guards cp and saveFailed; serialises Save
		saveFailed bool
		wg         sync.WaitGroup
	)
	// Finished parts are recorded by a saver beside the streams: a stream
	// takes its next part at once instead of waiting for the commit (a
	// round trip to etcd in cluster mode, where it cost a 1 GiB upload on
	// loopback half again its time), and the saver commits every part
	// queued since its last commit in one Save. A part not yet recorded
	// when the process dies is adopted on resume (ListParts, its CRC32C
	// checked); nothing is completed before every part is recorded.
	finished := make(chan uploader.Part, nParts)
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		for p := range finished {
			batch := []uploader.Part{p}
			for more := true; more; {
				select {
				case q, ok := <-finished:
					if ok {
						batch = append(batch, q)
					} else {
						more = false
					}
				default:
					more = false
				}
			}
			mu.Lock()
			if !saveFailed {
				n := len(cp.Parts)
				cp.Parts = append(cp.Parts, batch...)
				// ctx, not gctx: a part that made it while another failed
				// is still worth recording.
				if err := s.Save(ctx, cp); err != nil {
					cp.Parts = cp.Parts[:n]
					saveFailed = true
					cancel(fmt.Errorf("save checkpoint after part %d: %w", batch[len(batch)-1].Number, err))
				}
			}
			mu.Unlock()
		}
	}()
	// The scanner (CRC32C of each part, the file's SHA-256) runs up to a
	// full ceiling of parts ahead: when several parts end together, their
	// streams refill at once instead of one scanned part at a time (seen
	// over a WAN as a third of the streams idle for half a second).
	jobs := make(chan partJob, c.eng.Concurrency)
	// Start where the last upload to this destination settled: the link
	// is most likely the same.
	ceiling, start := c.eng.Concurrency, int(c.learned.Load())
	if rtt.local() {
		// A store this close is not held back per connection (a TCP
		// window fills in microseconds): more streams would only put
		// more bytes in flight for a crash to throw away, and on a busy
		// machine its noise can look like a gain.
		ceiling = min(ceiling, streamStart)
	} else if start == 0 {
		// A distant store, first upload: start above where the usual
		// tools stay and probe up from there.
		start = streamStartFar
	}
	st := newStreams(ceiling, start, time.Now, func(l int) { c.learned.Store(int32(l)) })
	if !rtt.local() {
		st.staggerMax = farStagger
	}
	for range c.eng.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				if gctx.Err() != nil {
					continue
				}
				w, err := st.acquire(gctx, j.len)
				if err != nil {
					cancel(err)
					continue
				}
				p, err := c.uploadPart(gctx, f, cp.UploadID, key, j, prog, w)
				if st.release(w, err == nil) {
					l, _ := st.level()
					c.log.Debug("parts in flight settled", "file", src.Path, "streams", l, "max", c.eng.Concurrency)
				}
				if err != nil {
					cancel(err)
					continue
				}
				finished <- p
			}
		})
	}

	sha := sha256.New()
	bufp := c.scanBuf()
	defer c.bufs.Put(bufp)
	buf := *bufp
	scanErr := func() error {
		defer close(jobs)
		for n := int32(1); n <= nParts; n++ {
			off := int64(n-1) * partSize
			j := partJob{n: n, off: off, len: min(partSize, size-off)}
			sum, err := c.scanRange(gctx, f, j.off, j.len, sha, buf)
			if err != nil {
				return err
			}
			j.sum = sum
			if p, ok := committed[n]; ok {
				if p.Checksum == "" || p.Checksum == base64.StdEncoding.EncodeToString(sum) {
					continue
				}
				// The recorded part does not match the file's bytes (an
				// in-place edit that kept size and mtime, or a bad disk):
				// send it again.
				c.log.Warn("committed part differs from file, resending", "file", src.Path, "part", n)
				mu.Lock()
				cp.Parts = slices.DeleteFunc(cp.Parts, func(q uploader.Part) bool { return q.Number == n })
				mu.Unlock()
			} else if sp, ok := unrecorded[n]; ok && adoptable(alg, sp, j) {
				b64 := base64.StdEncoding.EncodeToString(sum)
				finished <- uploader.Part{Number: n, ETag: aws.ToString(sp.ETag), Checksum: b64, Size: j.len}
				prog.add(j.len)
				continue
			}
			select {
			case jobs <- j:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		}
		return nil
	}()
	wg.Wait()
	close(finished)
	<-saved
	if err := context.Cause(gctx); err != nil {
		return wrap(c.failed(ctx, f, src, cp, s, classify(err)))
	}
	if scanErr != nil {
		return wrap(c.failed(ctx, f, src, cp, s, scanErr))
	}

	slices.SortFunc(cp.Parts, func(a, b uploader.Part) int { return int(a.Number) - int(b.Number) })
	if len(cp.Parts) != int(nParts) {
		return wrap(fmt.Errorf("internal error: %d of %d parts committed", len(cp.Parts), nParts))
	}
	// The bytes were read between the checks: make sure nobody wrote to
	// the file meanwhile before turning the parts into an object.
	if err := sameVersion(f, src); err != nil {
		c.abandon(ctx, src, cp, s)
		return wrap(err)
	}
	cp.SHA256 = hex.EncodeToString(sha.Sum(nil))
	wantCRC, wantETag, err := compositeSums(alg, cp.Parts)
	if err != nil {
		return wrap(err)
	}
	completed := make([]types.CompletedPart, len(cp.Parts))
	for i, p := range cp.Parts {
		completed[i] = types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
		if alg == ChecksumCRC32C {
			completed[i].ChecksumCRC32C = aws.String(p.Checksum)
		}
	}
	complete := func(cond bool) (*s3.CompleteMultipartUploadOutput, error) {
		cin := &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: aws.String(cp.UploadID),
			MultipartUpload: &types.CompletedMultipartUpload{Parts: completed},
		}
		if cond {
			cin.IfNoneMatch = aws.String("*")
		}
		return c.client.CompleteMultipartUpload(ctx, cin)
	}
	cond := guard && !c.noCond.Load()
	cout, err := complete(cond)
	if err != nil && cond && (isPreconditionFailed(err) || isConditionalUnsupported(err)) {
		if isConditionalUnsupported(err) {
			c.conditionalUnsupported(err)
		}
		next, own, cerr := c.claimKey(ctx, base, key, token)
		if cerr == nil && next == key && !own {
			// Free after all (the store lacks the condition): complete
			// without it.
			cout, err = complete(false)
		} else {
			if aerr := c.Abort(ctx, cp); aerr != nil {
				c.log.Warn("abort upload whose key was taken", "file", src.Path, "err", aerr)
			}
			resetS3(cp)
			if serr := s.Save(ctx, cp); serr != nil {
				c.log.Warn("save checkpoint", "file", src.Path, "err", serr)
			}
			if cerr != nil {
				return wrap(cerr)
			}
			in.Key = next
			return errKeyTaken
		}
	}
	if err != nil && !isNoSuchUpload(err) {
		return wrap(c.failed(ctx, f, src, cp, s, classify(fmt.Errorf("complete multipart upload: %w", err))))
	}
	// NoSuchUpload at Complete: an earlier Complete may have succeeded with
	// its answer lost (the SDK's retry then finds the upload gone). The
	// verification below decides; on mismatch everything starts over.
	completeErr := err
	etag, err := c.verify(ctx, bucket, key, size, wantCRC, wantETag, token)
	if err != nil && completeErr == nil && errors.Is(err, errGone) {
		// Complete answered: the object was made, and a consumer (a
		// platform's watch folder) took it away at once. Sending it again
		// would deliver it twice.
		c.log.Info("object gone right after upload; taken as delivered", "file", src.Path, "object", objectURL(bucket, key))
		etag, err = strings.Trim(aws.ToString(cout.ETag), `"`), nil
	}
	if err != nil {
		if completeErr != nil {
			resetS3(cp)
			if serr := s.Save(ctx, cp); serr != nil {
				c.log.Warn("save checkpoint", "file", src.Path, "err", serr)
			}
			return wrap(fmt.Errorf("complete multipart upload: %w (and the object does not verify: %v)", completeErr, err))
		}
		return wrap(c.verifyFailed(ctx, cp, s, bucket, key, err))
	}
	cp.ETag, cp.Object, cp.Uploaded = etag, objectURL(bucket, key), true
	if err := s.Save(ctx, cp); err != nil {
		return wrap(fmt.Errorf("save checkpoint: %w", err))
	}
	c.log.Debug("uploaded", "file", src.Path, "object", cp.Object, "bytes", size, "parts", nParts)
	return nil
}

// create starts a multipart upload and records it in cp before any part is
// sent, so a crash after this point resumes (or cleans up) this upload.
func (c *S3) create(ctx context.Context, in PutInput, cp *uploader.Checkpoint, partSize int64, token string, s uploader.Session) error {
	bucket, key := c.opts.Bucket, in.Key
	if cp.Creating && cp.Bucket == bucket && cp.Key != "" {
		// An earlier attempt died between creating an upload and saving its
		// id: that upload is ours and nobody else will ever complete it.
		if n, err := c.abortUnrecorded(ctx, cp.Key); err != nil {
			c.log.Warn("abort uploads left by a crash", "object", objectURL(bucket, cp.Key), "err", err)
		} else if n > 0 {
			c.log.Info("aborted uploads left by a crash", "object", objectURL(bucket, cp.Key), "count", n)
		}
	}
	resetS3(cp)
	cp.Bucket, cp.Key, cp.Creating = bucket, key, true
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("save checkpoint before creating the upload: %w", err)
	}
	cin := &s3.CreateMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key),
		ContentType:          aws.String(c.contentType(in)),
		ACL:                  c.acl(in),
		StorageClass:         types.StorageClass(c.opts.StorageClass),
		CacheControl:         optString(c.opts.CacheControl),
		ContentDisposition:   optString(c.opts.ContentDisposition),
		Metadata:             c.metadata(in, token),
		ServerSideEncryption: types.ServerSideEncryption(c.opts.SSE),
		SSEKMSKeyId:          optString(c.opts.SSEKMSKeyID),
	}
	if c.opts.Checksum == ChecksumCRC32C {
		cin.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
	}
	out, err := c.client.CreateMultipartUpload(ctx, cin)
	if err != nil {
		return classify(fmt.Errorf("create multipart upload: %w", err))
	}
	resetS3(cp)
	cp.Bucket, cp.Key, cp.UploadID = bucket, key, aws.ToString(out.UploadId)
	cp.PartSize, cp.Checksum = partSize, c.opts.Checksum
	if err := s.Save(ctx, cp); err != nil {
		// Unrecorded, the upload would be an orphan: abort it now.
		if aerr := c.Abort(ctx, cp); aerr != nil {
			c.log.Warn("abort unrecorded upload", "object", objectURL(bucket, key), "err", aerr)
		}
		return fmt.Errorf("save checkpoint after creating the upload: %w", err)
	}
	return nil
}

// abortUnrecorded aborts every open multipart upload on exactly key. Only
// called for a key whose job recorded that it was creating an upload: the
// job owns the key, and no upload on it can be anyone else's.
func (c *S3) abortUnrecorded(ctx context.Context, key string) (int, error) {
	n := 0
	p := s3.NewListMultipartUploadsPaginator(c.client, &s3.ListMultipartUploadsInput{
		Bucket: aws.String(c.opts.Bucket), Prefix: aws.String(key),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("list multipart uploads: %w", err)
		}
		for _, u := range page.Uploads {
			if aws.ToString(u.Key) != key {
				continue
			}
			_, err := c.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(c.opts.Bucket), Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !isNoSuchUpload(err) {
				return n, fmt.Errorf("abort upload %s: %w", aws.ToString(u.UploadId), err)
			}
			n++
		}
	}
	return n, nil
}

// keepStoredParts drops from cp.Parts what the store does not list with the
// same ETag and size (or what does not fit the file's part layout). It
// returns the parts the store holds that cp does not record: sent before a
// crash that came before their commit; the caller adopts those whose
// checksum matches the file instead of sending them again.
func (c *S3) keepStoredParts(ctx context.Context, cp *uploader.Checkpoint, size int64) (map[int32]types.Part, error) {
	stored := make(map[int32]types.Part)
	p := s3.NewListPartsPaginator(c.client, &s3.ListPartsInput{
		Bucket: aws.String(cp.Bucket), Key: aws.String(cp.Key), UploadId: aws.String(cp.UploadID),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list parts: %w", err)
		}
		for _, sp := range page.Parts {
			stored[aws.ToInt32(sp.PartNumber)] = sp
		}
	}
	keep := cp.Parts[:0:0]
	seen := make(map[int32]bool, len(cp.Parts))
	for _, part := range cp.Parts {
		off := int64(part.Number-1) * cp.PartSize
		sp, ok := stored[part.Number]
		if !ok || seen[part.Number] || part.Number < 1 || off >= size || part.Size != min(cp.PartSize, size-off) ||
			aws.ToInt64(sp.Size) != part.Size || strings.Trim(aws.ToString(sp.ETag), `"`) != strings.Trim(part.ETag, `"`) {
			continue
		}
		seen[part.Number] = true
		keep = append(keep, part)
	}
	cp.Parts = keep
	for n := range seen {
		delete(stored, n)
	}
	return stored, nil
}

// adoptable reports whether a part the store holds but cp does not record
// is exactly the file's bytes for part j, judged by the checksum the store
// computed (CRC32C, or the ETag for MD5). With checksum "none" there is
// nothing to judge by, and the part is sent again.
func adoptable(alg string, sp types.Part, j partJob) bool {
	if j.sum == nil || aws.ToInt64(sp.Size) != j.len {
		return false
	}
	switch alg {
	case ChecksumCRC32C:
		return aws.ToString(sp.ChecksumCRC32C) == base64.StdEncoding.EncodeToString(j.sum)
	case ChecksumMD5:
		return strings.Trim(aws.ToString(sp.ETag), `"`) == hex.EncodeToString(j.sum)
	}
	return false
}

func (c *S3) uploadPart(ctx context.Context, f *os.File, uploadID, key string, j partJob, prog *progress, w *partWatch) (uploader.Part, error) {
	b64 := base64.StdEncoding.EncodeToString(j.sum)
	var etag string
	err := c.send(ctx, f, j.off, j.len, prog, w, func(ctx context.Context, body io.ReadSeeker) error {
		in := &s3.UploadPartInput{
			Bucket: aws.String(c.opts.Bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
			PartNumber: aws.Int32(j.n), ContentLength: aws.Int64(j.len), Body: body,
		}
		switch c.opts.Checksum {
		case ChecksumCRC32C:
			in.ChecksumCRC32C = aws.String(b64)
		case ChecksumMD5:
			in.ContentMD5 = aws.String(b64)
		}
		out, err := c.client.UploadPart(ctx, in, unsignedPayload)
		if err != nil {
			return err
		}
		etag = aws.ToString(out.ETag)
		return nil
	})
	if err != nil {
		return uploader.Part{}, fmt.Errorf("upload part %d (bytes %d-%d): %w", j.n, j.off, j.off+j.len-1, err)
	}
	if j.sum == nil {
		b64 = ""
	}
	return uploader.Part{Number: j.n, ETag: etag, Checksum: b64, Size: j.len}, nil
}

// compositeSums derives what the store reports for a multipart object from
// the part checksums: CRC32C over the concatenated binary part CRCs plus
// "-N" (S3's COMPOSITE checksum type), or for MD5 the ETag: MD5 over the
// concatenated binary part MD5s, hex, plus "-N".
func compositeSums(alg string, parts []uploader.Part) (crc, etag string, err error) {
	var h hash.Hash
	switch alg {
	case ChecksumCRC32C:
		h = crc32.New(castagnoli)
	case ChecksumMD5:
		h = md5.New()
	default:
		return "", "", nil
	}
	for _, p := range parts {
		raw, err := base64.StdEncoding.DecodeString(p.Checksum)
		if err != nil || len(raw) == 0 {
			return "", "", fmt.Errorf("part %d: bad recorded checksum %q", p.Number, p.Checksum)
		}
		h.Write(raw)
	}
	suffix := "-" + strconv.Itoa(len(parts))
	if alg == ChecksumCRC32C {
		return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, h.(hash.Hash32).Sum32())) + suffix, "", nil
	}
	return "", hex.EncodeToString(h.Sum(nil)) + suffix, nil
}

// Object key conflicts.
//
// Two jobs can render the same key (a clip saved again under its name after
// the first was delivered; a/x.mp4 and b/x.mp4 with key "{folder}/{name}").
// Unless OnConflict is "overwrite", an object is only ever created where no
// object is: PutObject and CompleteMultipartUpload carry If-None-Match: *,
// so the store refuses (412) atomically. On a refusal the object at the key
// is looked at: one carrying this job's token (x-amz-meta-watchfolder-job)
// is this job's own earlier write whose answer or record was lost, and is
// verified and kept; anything else is another job's. "suffix" then moves on
// to "name (1).ext", "name (2).ext", ... (the names processed/ uses), and
// "fail" fails the upload. A store that answers the condition with 501 Not
// Implemented gets a HEAD check before each write instead (not atomic).

// metaJob is the x-amz-meta-* key holding the token of the job that wrote
// an object.
const metaJob = "watchfolder-job"

// maxClaimTries bounds the writes retried because the key was taken in
// between (a race with other writers); maxSuffix bounds the names tried.
const (
	maxClaimTries = 10
	maxSuffix     = 10000
)

// ErrObjectExists means the object key is taken by an object this job did
// not write and OnConflict is "fail".
var ErrObjectExists = errors.New("object already exists")

var (
	// errGone: the object is not in the store.
	errGone = errors.New("object not found")
	// errNotOurs: the object at the key was written by another job.
	errNotOurs = errors.New("object belongs to another job")
)

// JobToken is the handle an object written by this engine carries in its
// x-amz-meta-watchfolder-job metadata (MetaJob); destinations that look for
// their object later (Skylark's processed/ copy) compare against it.
func JobToken(src *uploader.Source) string { return jobToken(src) }

// MetaJob is the x-amz-meta-* name of the job token.
const MetaJob = metaJob

// jobToken identifies the job (one version of one file in one state
// database) that writes an object: its id and when it was created (to the
// millisecond, so a store that keeps times coarser than Go's still gives
// the same token after a restart).
func jobToken(src *uploader.Source) string {
	return strconv.FormatUint(src.JobID, 10) + "-" + strconv.FormatInt(src.Found.UnixMilli(), 36)
}

// conflictKey is key's n-th alternative: " (n)" before the extension of its
// last path element, like the names processed/ uses. n = 0 is key itself.
func conflictKey(key string, n int) string {
	if n == 0 {
		return key
	}
	dir, stem, ext := splitKey(key)
	return dir + stem + " (" + strconv.Itoa(n) + ")" + ext
}

// conflictIndex returns n when k is conflictKey(base, n), else -1.
func conflictIndex(base, k string) int {
	if k == base {
		return 0
	}
	dir, stem, ext := splitKey(base)
	pre, suf := dir+stem+" (", ")"+ext
	if len(k) <= len(pre)+len(suf) || !strings.HasPrefix(k, pre) || !strings.HasSuffix(k, suf) {
		return -1
	}
	n, err := strconv.Atoi(k[len(pre) : len(k)-len(suf)])
	if err != nil || n < 1 || conflictKey(base, n) != k {
		return -1
	}
	return n
}

func splitKey(key string) (dir, stem, ext string) {
	dir, name := path.Split(key)
	ext = path.Ext(name)
	stem = strings.TrimSuffix(name, ext)
	if stem == "" {
		// ".mp4" is a name, not an extension.
		stem, ext = name, ""
	}
	return dir, stem, ext
}

// claimKey finds where the job with token writes its object, starting at
// from (base or one of its suffixed names): the first name that is free or
// holds this job's own object (own). With OnConflict "fail" only from
// itself is considered, and a name taken by another job is ErrObjectExists.
func (c *S3) claimKey(ctx context.Context, base, from, token string) (key string, own bool, err error) {
	bucket := c.opts.Bucket
	for n := max(conflictIndex(base, from), 0); n < maxSuffix; n++ {
		k := conflictKey(base, n)
		h, err := c.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
		switch {
		case isNotFound(err):
			return k, false, nil
		case httpStatus(err) == http.StatusForbidden:
			// Without s3:ListBucket (write-only drop buckets, policies
			// that grant only PutObject) S3 answers 403 for a key that
			// does not exist: HEAD cannot tell, so the conditional write
			// decides (and a real refusal comes back from it, with the
			// store's own message).
			return k, false, nil
		case err != nil:
			return "", false, classify(fmt.Errorf("head %s: %w", objectURL(bucket, k), err))
		case h.Metadata[metaJob] == token:
			return k, true, nil
		case c.opts.OnConflict == ConflictFail:
			return "", false, uploader.Permanent(fmt.Errorf("%w: %s was written by another job or by someone else (on_conflict = %q)",
				ErrObjectExists, objectURL(bucket, k), ConflictFail))
		}
	}
	return "", false, fmt.Errorf("no free name for %s after %d tries", objectURL(bucket, base), maxSuffix)
}

// isOwn reports whether key holds an object this job wrote; any doubt
// (an error) is no.
func (c *S3) isOwn(ctx context.Context, key, token string) bool {
	h, err := c.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(c.opts.Bucket), Key: aws.String(key)})
	return err == nil && h.Metadata[metaJob] == token
}

// conditionalUnsupported switches the engine to HEAD checks once the store
// refused a conditional write as not implemented.
func (c *S3) conditionalUnsupported(err error) {
	if c.noCond.CompareAndSwap(false, true) {
		c.log.Warn("the store does not support conditional writes (If-None-Match); object keys are checked with HEAD instead, which is not atomic",
			"bucket", c.opts.Bucket, "err", err)
	}
}

// adoptOwn finishes a job whose multipart object is already in the store at
// key, written by this job before a crash lost the record of it: the file is
// read once more for its SHA-256 and part checksums, and the object must
// verify against them. One that does not is deleted (it is ours) and the
// retry uploads it again.
func (c *S3) adoptOwn(ctx context.Context, f *os.File, src *uploader.Source, key string, partSize int64, token string, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket, size, alg := c.opts.Bucket, src.Size, c.opts.Checksum
	if partSize <= 0 {
		partSize = partSizeFor(size, c.eng.PartSize)
	}
	sha := sha256.New()
	bufp := c.scanBuf()
	defer c.bufs.Put(bufp)
	var parts []uploader.Part
	for off, n := int64(0), int32(1); off < size; off, n = off+partSize, n+1 {
		l := min(partSize, size-off)
		sum, err := c.scanRange(ctx, f, off, l, sha, *bufp)
		if err != nil {
			return wrap(c.failed(ctx, f, src, cp, s, err))
		}
		parts = append(parts, uploader.Part{Number: n, Checksum: base64.StdEncoding.EncodeToString(sum), Size: l})
	}
	wantCRC, wantETag, err := compositeSums(alg, parts)
	if err != nil {
		return wrap(err)
	}
	etag, err := c.verify(ctx, bucket, key, size, wantCRC, wantETag, token)
	if err != nil {
		return wrap(c.verifyFailed(ctx, cp, s, bucket, key, err))
	}
	resetS3(cp)
	cp.Bucket, cp.Key, cp.PartSize, cp.Checksum = bucket, key, partSize, alg
	cp.SHA256, cp.ETag = hex.EncodeToString(sha.Sum(nil)), etag
	cp.Object, cp.Uploaded = objectURL(bucket, key), true
	if err := s.Save(ctx, cp); err != nil {
		return wrap(fmt.Errorf("save checkpoint: %w", err))
	}
	c.log.Info("object already written by this job", "file", src.Path, "object", cp.Object)
	return nil
}

// rttGauge keeps the shortest duration of an upload's small requests (HEAD,
// create, list parts): about the round trip to the store, or more.
type rttGauge struct{ min time.Duration }

func (g *rttGauge) observe(since time.Time) {
	if d := time.Since(since); g.min == 0 || d < g.min {
		g.min = d
	}
}

// localRTT is the round trip below which the store counts as local
// (loopback, LAN, a metro link: a TCP window fills in a few ms, so no
// per-connection limit to probe for). Generous, because the requests are
// timed in this process: on a busy machine a loopback HEAD can take
// several milliseconds.
const localRTT = 20 * time.Millisecond

// local reports a store measured closer than localRTT.
func (g *rttGauge) local() bool { return g.min > 0 && g.min < localRTT }
