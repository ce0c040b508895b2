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
	"github.com/watchfolder/watchfolder/uploader"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
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
	bucket, key := c.opts.Bucket, in.Key
	obj := objectURL(bucket, key)
	wrap := func(err error) error { return fmt.Errorf("upload %s to %s: %w", src.Path, obj, err) }
	if key == "" {
		return uploader.Permanent(wrap(errors.New("empty object key")))
	}
	if cp.Uploaded && cp.Bucket == bucket && cp.Key == key {
		return nil
	}
	if src.Size > maxObjectSize {
		return uploader.Permanent(wrap(fmt.Errorf("file is %d bytes, over the 5 TiB S3 object size limit", src.Size)))
	}
	if (cp.Bucket != "" && cp.Bucket != bucket) || (cp.Key != "" && cp.Key != key) {
		// The destination's bucket or key template changed since the last
		// attempt: the old upload is of no use. Failing to abort it is not
		// worth failing this upload for (CleanOrphans gets it later).
		if err := c.Abort(ctx, cp); err != nil {
			c.log.Warn("abort superseded upload", "file", src.Path, "err", err)
		}
		resetS3(cp)
	}

	f, err := os.Open(src.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			c.abandon(ctx, src, cp, s)
			return wrap(fmt.Errorf("%w: %w", uploader.ErrSourceChanged, err))
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
		return c.putSingle(ctx, f, src, in, cp, s, wrap)
	}
	return c.putMultipart(ctx, f, src, in, cp, s, wrap)
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

// metadata merges the configured and per-object x-amz-meta-* values.
func (c *S3) metadata(in PutInput) map[string]string {
	m := make(map[string]string, len(c.opts.Metadata)+len(in.Metadata)+1)
	for k, v := range c.opts.Metadata {
		m[strings.ToLower(k)] = v
	}
	for k, v := range in.Metadata {
		m[strings.ToLower(k)] = v
	}
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

// progress reports bytes sent, serialised so the Session sees a single
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
	pos   int64
	hw    int64      // bytes already reported to prog; retries don't count twice
	watch *partWatch // a multipart part's, for streams; nil for a single PUT
}

func (b *partBody) Read(p []byte) (int, error) {
	// The transport may read a body after the request returned (an early
	// answer): by then the body's buffer may be back in the pool.
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	rem := b.sr.Size() - b.pos
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
	b.pos += int64(n)
	if n > 0 {
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
	return n, err
}

func (b *partBody) Seek(off int64, whence int) (int64, error) {
	p, err := b.sr.Seek(off, whence)
	if err == nil {
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
		stall: c.eng.StallTimeout, watch: w,
	}
	body.timer = time.AfterFunc(c.eng.StallTimeout, func() { cancel(errStalled) })
	defer body.timer.Stop()
	err := do(pctx, body)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(pctx), errStalled) {
		return fmt.Errorf("body made no progress for %s, cancelled: %w", c.eng.StallTimeout, err)
	}
	return err
}

func (c *S3) putSingle(ctx context.Context, f *os.File, src *uploader.Source, in PutInput, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket, key, size := c.opts.Bucket, in.Key, src.Size
	sha := sha256.New()
	buf := c.scanBuf()
	defer c.bufs.Put(buf)
	sum, err := c.scanRange(ctx, f, 0, size, sha, *buf)
	if err != nil {
		return wrap(err)
	}
	// A file that fits in the scan buffer is sent from it: one read instead
	// of two, and the bytes sent are exactly the bytes hashed.
	var body io.ReaderAt = f
	if size <= int64(len(*buf)) {
		body = bytes.NewReader((*buf)[:size])
	}
	shaHex := hex.EncodeToString(sha.Sum(nil))
	meta := c.metadata(in)
	meta["sha256"] = shaHex
	prog := &progress{s: s}
	var out *s3.PutObjectOutput
	err = c.send(ctx, body, 0, size, prog, nil, func(ctx context.Context, body io.ReadSeeker) error {
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
		switch c.opts.Checksum {
		case ChecksumCRC32C:
			pin.ChecksumCRC32C = aws.String(base64.StdEncoding.EncodeToString(sum))
		case ChecksumMD5:
			pin.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum))
		}
		var err error
		out, err = c.client.PutObject(ctx, pin, unsignedPayload)
		return err
	})
	if err != nil {
		return wrap(classify(fmt.Errorf("put object: %w", err)))
	}
	// Written in place during the PUT (same size, so no checksum error
	// with checksum "none")? The object is not the version of this job.
	if err := sameVersion(f, src); err != nil {
		if _, derr := c.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); derr != nil {
			c.log.Warn("delete object of a file that changed during upload", "object", objectURL(bucket, key), "err", derr)
		}
		return wrap(err)
	}
	var wantCRC, wantETag string
	switch c.opts.Checksum {
	case ChecksumCRC32C:
		wantCRC = base64.StdEncoding.EncodeToString(sum)
	case ChecksumMD5:
		wantETag = hex.EncodeToString(sum)
	}
	etag, verified, err := c.verifyPut(out, wantCRC, wantETag)
	if err == nil && !verified {
		etag, err = c.verify(ctx, bucket, key, size, wantCRC, wantETag)
	}
	if err != nil {
		return wrap(c.verifyFailed(ctx, cp, s, bucket, key, err))
	}
	cp.Bucket, cp.Key, cp.UploadID, cp.PartSize, cp.Parts = bucket, key, "", 0, nil
	cp.Checksum, cp.SHA256, cp.ETag = c.opts.Checksum, shaHex, etag
	cp.Object, cp.Uploaded = objectURL(bucket, key), true
	if err := s.Save(ctx, cp); err != nil {
		return wrap(fmt.Errorf("save checkpoint: %w", err))
	}
	c.log.Debug("uploaded", "file", src.Path, "object", cp.Object, "bytes", size)
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
func (c *S3) verify(ctx context.Context, bucket, key string, size int64, wantCRC, wantETag string) (string, error) {
	in := &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if wantCRC != "" {
		in.ChecksumMode = types.ChecksumModeEnabled
	}
	h, err := c.client.HeadObject(ctx, in)
	if err != nil {
		return "", classify(fmt.Errorf("head object to verify it: %w", err))
	}
	etag := strings.Trim(aws.ToString(h.ETag), `"`)
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

func (c *S3) putMultipart(ctx context.Context, f *os.File, src *uploader.Source, in PutInput, cp *uploader.Checkpoint, s uploader.Session, wrap func(error) error) error {
	bucket, key, size, alg := c.opts.Bucket, in.Key, src.Size, c.opts.Checksum
	partSize := partSizeFor(size, c.eng.PartSize)

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
		if unrecorded, err = c.keepStoredParts(ctx, cp, size); err != nil {
			if !isNoSuchUpload(err) {
				return wrap(classify(err))
			}
			c.log.Info("multipart upload gone from the store, starting over", "file", src.Path, "object", objectURL(bucket, key), "upload_id", cp.UploadID)
			cp.UploadID, cp.Parts, unrecorded = "", nil, nil
		}
	}
	if cp.UploadID == "" {
		if err := c.create(ctx, in, cp, partSize, s); err != nil {
			return wrap(err)
		}
	}

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
	commit := func(p uploader.Part) error {
		mu.Lock()
		defer mu.Unlock()
		if saveFailed {
			return nil
		}
		cp.Parts = append(cp.Parts, p)
		// ctx, not gctx: a part that made it while another failed is
		// still worth recording.
		if err := s.Save(ctx, cp); err != nil {
			cp.Parts = cp.Parts[:len(cp.Parts)-1]
			saveFailed = true
			return fmt.Errorf("save checkpoint after part %d: %w", p.Number, err)
		}
		return nil
	}
	jobs := make(chan partJob)
	st := newStreams(c.eng.Concurrency, time.Now)
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
				if err == nil {
					err = commit(p)
				}
				if err != nil {
					cancel(err)
				}
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
				if err := commit(uploader.Part{Number: n, ETag: aws.ToString(sp.ETag), Checksum: b64, Size: j.len}); err != nil {
					cancel(err)
					return err
				}
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
	if err := context.Cause(gctx); err != nil {
		return wrap(classify(err))
	}
	if scanErr != nil {
		if errors.Is(scanErr, uploader.ErrSourceChanged) {
			c.abandon(ctx, src, cp, s)
		}
		return wrap(scanErr)
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
	_, err = c.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key), UploadId: aws.String(cp.UploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: completed},
	})
	if err != nil && !isNoSuchUpload(err) {
		return wrap(classify(fmt.Errorf("complete multipart upload: %w", err)))
	}
	// NoSuchUpload at Complete: an earlier Complete may have succeeded with
	// its answer lost (the SDK's retry then finds the upload gone). The
	// verification below decides; on mismatch everything starts over.
	completeErr := err
	etag, err := c.verify(ctx, bucket, key, size, wantCRC, wantETag)
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
func (c *S3) create(ctx context.Context, in PutInput, cp *uploader.Checkpoint, partSize int64, s uploader.Session) error {
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
		Metadata:             c.metadata(in),
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
