// Package jwplayer delivers media to JW Player: Management API v2 (default)
// with direct or resumable multipart upload, or the legacy v1 API with the
// s3 upload method. The media id is recorded as the checkpoint's VendorID.
//
// Contract choices (each URL and query is built in exactly one function so a
// correction touches one place):
//
// v2 (Authorization: Bearer <api secret>):
//   - Find by external id (findURL): GET {api_url}/v2/sites/{site}/media/
//     ?q=external_id:"<id>"&page_length=10. JW's search is approximate for
//     long values, so only media whose external_id equals ours count. Every
//     create is preceded by this search, so a crash between create and the
//     checkpoint commit never creates a second media. The external id is the
//     sidecar's external_id, else watchfolder:<folder>:<job>:<size>:<mtime>.
//   - Create (createURL): POST {api_url}/v2/sites/{site}/media/ with
//     {"upload":{"method","mime_type"},"metadata":{title,description,tags,
//     custom_params,external_id}}. Title defaults to the file stem.
//   - New upload handles for an existing media (reuploadURL): PUT
//     {api_url}/v2/sites/{site}/media/{id}/reupload/ with {"upload":{...}}
//     (SDK Media.reupload); used when the media was found by external id but
//     its handles were lost, or a saved direct link was refused.
//   - Media (mediaURL): GET {api_url}/v2/sites/{site}/media/{id}/ -> status
//     (ready: done; failed: permanent with error_message; anything else:
//     still processing). A media that is no longer "created" already has
//     its bytes: Upload then counts as done.
//   - Direct: one PUT of the raw bytes to upload_link, no auth, with
//     Content-Type equal to the create's upload.mime_type (the link is
//     presigned over it; any other value gets 403 SignatureDoesNotMatch);
//     the ETag must be the quoted MD5. Used up to MultipartThreshold
//     (default 100 MB, JW's guidance: a direct upload restarts from zero
//     after any error).
//   - Multipart (partsURL, completeURL on {upload_url}, default {api_url}):
//     GET /v2/uploads/{upload_id}/parts?page=N&page_length=1000 and PUT
//     /v2/uploads/{upload_id}/complete (no body), both with Bearer
//     <upload_token>. Parts are ceil(size/part_size) (never sent); a listed
//     part with an etag equal to the MD5 of our bytes is skipped; each part
//     PUT's ETag must be the quoted MD5 of the part.
//   - Checkpoint: VendorID = media id; Extra: method, upload_link (direct),
//     upload_id and secret_upload_token (multipart), external_id; PartSize;
//     Parts (done parts). All saved before the first byte is sent.
//
// Which media is ours: every media we create carries the job handle
// (watchfolder:<folder>:<job>:<size>:<mtime>) in custom_params
// watchfolder_job, and as external_id unless the sidecar names one. A
// media found by external_id whose job handle is ours is an earlier attempt
// of this job (resumed). One whose handle differs was made for another
// version of the file: its source is replaced through reupload (a new
// version of the same media, as the sidecar's external_id asks), never
// counted as done without sending the bytes.
//
// Media shorter than 2 s are refused by JW: when Source.Duration is known
// and shorter, the file fails before anything is created; when it is
// unknown the platform's own processing error is reported by Register.
//
// v1 (signed query, signURL): {api_url}/v1/videos/create with api_format=json,
// api_key, api_nonce (9 digits), api_timestamp, upload_method=s3, title,
// description, tags (comma-separated), custom.<name>; api_signature =
// sha1hex(canonical query + secret), the canonical query sorting by key and
// encoding like Python's quote(v, safe='~'). The answer's link becomes
// protocol://address+path?AWSAccessKeyId=..&Expires=..&Signature=.. (v1URL),
// saved as Extra["secret_upload_url"]; the file is PUT there, always over
// https whatever protocol the link names. Create is idempotent: the job
// handle travels as custom.watchfolder_job, and every create is preceded by
// /v1/videos/list search:custom.watchfolder_job=<handle>; a video found
// there is resumed. A refused (expired) link is renewed with
// /v1/videos/update upload_method=s3. v1 uploads are one PUT, so files of
// 5 GB or more are refused before anything is created.
package jwplayer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// Type is the destination type name used in the configuration.
const Type = "jwplayer"

const (
	defaultPollInterval    = 15 * time.Second
	defaultRegisterTimeout = 2 * time.Hour
	defaultPartSize        = 16 << 20
	minPartSize            = 5 << 20
	maxParts               = 10000
	defaultConcurrency     = 4
	defaultDirectLimit     = 5_000_000_000
	defaultMultipartAbove  = 100_000_000
	minDuration            = 2 * time.Second
	jobParam               = "watchfolder_job"
	partsPageLength        = 1000
)

// Options configure one JW Player destination.
type Options struct {
	Name            string
	API             string // "v2" (default) | "v1"
	SiteID          string // v2
	APIKey          string // v1
	APISecret       string // v2 bearer secret / v1 signing secret
	APIURL          string // default https://api.jwplayer.com (v2) / https://api.jwplatform.com (v1)
	UploadURL       string // v2: base URL of the /v2/uploads calls; default APIURL
	WaitFor         string // "" | "ready"
	PollInterval    time.Duration
	RegisterTimeout time.Duration
	PartSize        int64 // multipart part size (>= 5 MiB), default 16 MiB
	Concurrency     int   // parts in flight, default 4
	DirectLimit     int64 // direct upload never above this size, default 5 GB
	// MultipartThreshold: files larger than this use the resumable
	// multipart method (v2); default 100 MB.
	MultipartThreshold int64
	HTTPClient         *http.Client
	Logger             *slog.Logger
	Now                func() time.Time
}

// Destination implements uploader.Destination for JW Player.
type Destination struct {
	o       Options
	base    string // API base URL, no trailing slash
	upBase  string // v2 uploads base URL
	api     *http.Client
	up      *http.Client // for the bytes: no overall timeout
	log     *slog.Logger
	now     func() time.Time
	nonce   func() string
	retries int
}

var _ uploader.Destination = (*Destination)(nil)

// New validates o and builds a destination. It does not contact the platform.
func New(o Options) (*Destination, error) {
	if o.Name == "" {
		return nil, errors.New("jwplayer: name is required")
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("jwplayer %s: "+format, append([]any{o.Name}, a...)...)
	}
	switch o.API {
	case "":
		o.API = "v2"
	case "v1", "v2":
	default:
		return nil, fail("api must be v1 or v2, not %q", o.API)
	}
	if o.APISecret == "" {
		return nil, fail("api secret is required")
	}
	if o.API == "v2" && o.SiteID == "" {
		return nil, fail("site id is required for api v2")
	}
	if o.API == "v1" && o.APIKey == "" {
		return nil, fail("api key is required for api v1")
	}
	if o.WaitFor != "" && o.WaitFor != "ready" {
		return nil, fail("wait_for must be empty or \"ready\", not %q", o.WaitFor)
	}
	if o.APIURL == "" {
		o.APIURL = "https://api.jwplayer.com"
		if o.API == "v1" {
			o.APIURL = "https://api.jwplatform.com"
		}
	}
	if o.UploadURL == "" {
		o.UploadURL = o.APIURL
	}
	for _, u := range []string{o.APIURL, o.UploadURL} {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fail("%q is not an http(s) URL", u)
		}
	}
	if o.PartSize == 0 {
		o.PartSize = defaultPartSize
	}
	if o.PartSize < minPartSize {
		return nil, fail("part size %d is below the 5 MiB minimum", o.PartSize)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.DirectLimit <= 0 {
		o.DirectLimit = defaultDirectLimit
	}
	if o.MultipartThreshold <= 0 {
		o.MultipartThreshold = defaultMultipartAbove
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = defaultRegisterTimeout
	}
	d := &Destination{o: o, base: strings.TrimRight(o.APIURL, "/"), upBase: strings.TrimRight(o.UploadURL, "/"),
		api: o.HTTPClient, up: o.HTTPClient, log: o.Logger, now: o.Now, nonce: randomNonce, retries: 4}
	if d.api == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = 15 * time.Second
		t.ResponseHeaderTimeout = 5 * time.Minute // S3 answers a PUT only after the last byte
		d.api = &http.Client{Transport: t, Timeout: 2 * time.Minute}
		d.up = &http.Client{Transport: t}
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("type", Type)
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// Name returns the configured destination name.
func (d *Destination) Name() string { return d.o.Name }

// Type returns "jwplayer".
func (d *Destination) Type() string { return Type }

// CheckToken looks up media by an id no one uses (v2: external_id; v1: the
// job parameter): any answer means the credentials were accepted
// (`watchfolder doctor`).
func (d *Destination) CheckToken(ctx context.Context) error {
	if d.o.API == "v1" {
		_, _, err := d.v1Find(ctx, uploader.TokenCheckSource(), uploader.TokenCheckName)
		return err
	}
	_, err := d.findByExternalID(ctx, uploader.TokenCheckSource(), uploader.TokenCheckName)
	return err
}

// Upload creates the media (once) and sends the file's bytes.
func (d *Destination) Upload(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	if cp.Uploaded {
		return nil
	}
	if src.Duration > 0 && src.Duration < minDuration {
		return uploader.Permanent(fmt.Errorf("jwplayer: upload %s: media is %s long; JW Player refuses media shorter than %s", src.Path, src.Duration, minDuration))
	}
	if d.o.API == "v1" {
		return d.uploadV1(ctx, src, cp, s)
	}
	return d.uploadV2(ctx, src, cp, s)
}

// Register waits for processing when WaitFor is "ready" (v2 only).
func (d *Destination) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	if cp.VendorID == "" {
		return uploader.Permanent(fmt.Errorf("jwplayer: register %s: no media id recorded (upload not done)", src.Path))
	}
	if d.o.WaitFor != "ready" || d.o.API == "v1" {
		return nil
	}
	deadline := time.Now().Add(d.o.RegisterTimeout)
	for polls := 1; ; polls++ {
		m, err := d.getMedia(ctx, src, cp.VendorID)
		if err != nil {
			return err
		}
		switch m.Status {
		case "ready":
			d.log.Info("media ready", "file", src.Path, "media", cp.VendorID)
			return nil
		case "failed":
			msg := m.ErrorMessage
			if msg == "" {
				msg = "no error_message given"
			}
			return uploader.Permanent(fmt.Errorf("jwplayer: register %s: media %s failed: %s", src.Path, cp.VendorID, msg))
		}
		wait := d.o.PollInterval
		rem := time.Until(deadline)
		if rem <= 0 {
			return fmt.Errorf("jwplayer: register %s: media %s not ready within %s (status %q)", src.Path, cp.VendorID, d.o.RegisterTimeout, m.Status)
		}
		wait = min(wait, rem)
		d.log.Debug("media processing", "file", src.Path, "media", cp.VendorID, "status", m.Status, "poll", polls)
		if err := uploader.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("jwplayer: register %s: wait for media %s: %w", src.Path, cp.VendorID, err)
		}
	}
}

// Abort has nothing to release: JW's multipart uploads are owned by the
// media, which the job keeps.
func (d *Destination) Abort(ctx context.Context, cp *uploader.Checkpoint) error { return nil }

// openSource opens the file and checks it is still the job's version.
func openSource(src *uploader.Source) (*os.File, error) {
	f, err := uploader.OpenSource(src.Path)
	if err != nil {
		return nil, fmt.Errorf("jwplayer: open %s: %w", src.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("jwplayer: stat %s: %w", src.Path, err)
	}
	if st.Size() != src.Size || !st.ModTime().Equal(src.ModTime) {
		f.Close()
		return nil, fmt.Errorf("jwplayer: %s: %w", src.Path, uploader.ErrSourceChanged)
	}
	return f, nil
}

// unchanged checks, after bytes were read, that the open file is still the
// job's version: a file rewritten in place while it was sent must not be
// reported delivered.
func unchanged(f *os.File, src *uploader.Source) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("jwplayer: stat %s: %w", src.Path, err)
	}
	if st.Size() != src.Size || !st.ModTime().Equal(src.ModTime) {
		return fmt.Errorf("jwplayer: %s: %w", src.Path, uploader.ErrSourceChanged)
	}
	return nil
}

// putBytes PUTs n bytes from r to a presigned link, returning the answer's
// ETag. Errors never contain the link (its query is a credential).
func (d *Destination) putBytes(ctx context.Context, op, link, contentType string, body func() io.Reader, n int64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, link, nil)
	if err != nil {
		return "", uploader.Permanent(fmt.Errorf("%s: bad upload link", op))
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Body = io.NopCloser(body())
	req.ContentLength = n
	if n == 0 {
		req.Body = http.NoBody
	}
	resp, err := d.up.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		e := &uploader.APIError{Op: op, Status: resp.StatusCode, Message: s3Message(data)}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return "", e
		}
		return "", uploader.Permanent(e)
	}
	return resp.Header.Get("ETag"), nil
}

// s3Message pulls <Code> and <Message> out of an S3 XML error body.
func s3Message(b []byte) string {
	s := string(b)
	get := func(tag string) string {
		i := strings.Index(s, "<"+tag+">")
		j := strings.Index(s, "</"+tag+">")
		if i < 0 || j < i {
			return ""
		}
		return s[i+len(tag)+2 : j]
	}
	if c := get("Code"); c != "" {
		return strings.TrimSpace(c + " " + get("Message"))
	}
	return uploader.GenericMessage(b)
}

// withRetry runs f up to d.retries times while it fails transiently.
func (d *Destination) withRetry(ctx context.Context, f func() error) error {
	backoff := 500 * time.Millisecond
	var err error
	for try := 1; try <= d.retries; try++ {
		if err = f(); err == nil || uploader.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		if try < d.retries {
			if e := uploader.Sleep(ctx, backoff); e != nil {
				return err
			}
			backoff *= 2
		}
	}
	return err
}

// countingReader reports bytes read to a shared counter.
type countingReader struct {
	r    io.Reader
	n    *atomic.Int64
	tick func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.tick(c.n.Add(int64(n)))
	}
	return n, err
}

func stem(src *uploader.Source) string {
	name := src.RelPath
	if name == "" {
		name = src.Path
	}
	base := path.Base(strings.ReplaceAll(name, "\\", "/"))
	return strings.TrimSuffix(base, path.Ext(base))
}

// externalID is the sidecar's external_id or the job handle.
func externalID(src *uploader.Source) string {
	if src.Meta.ExternalID != "" {
		return src.Meta.ExternalID
	}
	return jobHandle(src)
}

// jobHandle names this job's version of the file; it tells our own earlier
// attempt apart from a media made for another version.
func jobHandle(src *uploader.Source) string {
	return "watchfolder:" + src.Folder + ":" + strconv.FormatUint(src.JobID, 10) + ":" +
		strconv.FormatInt(src.Size, 10) + ":" + strconv.FormatInt(src.ModTime.Unix(), 10)
}

func setExtra(cp *uploader.Checkpoint, k, v string) {
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	cp.Extra[k] = v
}
