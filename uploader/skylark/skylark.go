// Package skylark delivers media to Skylark through the account's S3
// watchfolder bucket (<environment>-<region>-skylark-ws-watchfolder).
//
// Contract choices (from Skylark's "Video Upload via S3" page where it is
// explicit; the rest chosen here, each in one place in this file):
//
//   - Simple mode: the object is written under the key template (default
//     "{name}", the bucket root). Skylark creates an Asset with a data source
//     named after the file without extension.
//   - Advanced mode: when the sidecar carries "platform": {"skylark": {...}}
//     with at least one field, that object is sent compacted as the S3
//     object metadata "asset" (x-amz-meta-asset), non-ASCII escaped as \uXXXX
//     so it is a valid header value. "uid" (a string starting "asse_" by
//     convention, any non-empty string accepted) attaches the file to that
//     existing Asset and becomes Checkpoint.VendorID. A sidecar "skylark"
//     value that is not a JSON object, a uid that is not a non-empty string,
//     or an asset object over S3's 2 KB metadata limit fails the job
//     permanently before anything is uploaded.
//   - Every object also carries x-amz-meta-watchfolder-job, a job-derived
//     handle, so the processed copy can be told apart from an older file of
//     the same name.
//   - Ingest confirmation (WaitFor "processed", the default; "none" skips
//     it): Skylark moves ingested objects to the processed/ prefix. The
//     processed copy is looked for at "processed/<key>" and, when the key has
//     directories, at "processed/<base name>" (ListObjectsV2 on the exact
//     key, then HeadObject). A candidate counts when its watchfolder-job
//     metadata equals this job's handle or, when the platform dropped the
//     metadata, when its size equals the file's and it was written no
//     earlier than one minute before our upload finished. The key found is
//     recorded in Extra["processed_key"] and Checkpoint.Object points at it.
//     Listing refused with 403 is permanent (the watchfolder credentials
//     cannot see processed/: use wait_for = "none").
//   - Asset lookup (only when APIURL is set and the sidecar gave no uid):
//     GET {api_url}/api/assets/versions/data-source/<stem> with
//     "Authorization: Bearer <token>", stem = the object's base name without
//     extension. The answer's "uid" (or objects[0].uid) becomes VendorID. 404
//     means "not there yet" and is polled until RegisterTimeout.
//   - Without APIURL in simple mode VendorID stays empty; the processed
//     object (Checkpoint.Object) is the record of the delivery.
//   - RegisterTimeout bounds one Register call (ingest wait plus lookup).
package skylark

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/internal/keytmpl"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Defaults for Options.
const (
	DefaultKeyTemplate     = "{name}"
	DefaultPollInterval    = 15 * time.Second
	DefaultRegisterTimeout = 2 * time.Hour

	processedPrefix = "processed/"
	metaAsset       = "asset"          // x-amz-meta-asset: Skylark's advanced mode
	metaHandle      = s3engine.MetaJob // x-amz-meta-watchfolder-job: the job token
	maxMetaBytes    = 2048             // S3's user metadata limit
	clockSlack      = time.Minute
)

// Checkpoint.Extra keys used by this package.
const (
	extraProcessedKey = "processed_key"
	extraUploadedAt   = "uploaded_at" // RFC 3339, when Upload finished
	extraHandle       = "handle"
)

// Options configure a Skylark destination.
type Options struct {
	Name            string
	KeyTemplate     string        // key in the watchfolder bucket; default "{name}"
	S3              *s3engine.S3  // engine for the account's watchfolder bucket
	WaitFor         string        // "" or "processed" (default) | "none"
	APIURL          string        // optional: fetch the asset by file name and record its uid
	Token           string        // Bearer for APIURL
	PollInterval    time.Duration // default 15s
	RegisterTimeout time.Duration // default 2h
	HTTPClient      *http.Client
	Logger          *slog.Logger
}

// Destination implements uploader.Destination for Skylark.
type Destination struct {
	o   Options
	log *slog.Logger
}

var _ uploader.Destination = (*Destination)(nil)

// New validates o and fills defaults.
func New(o Options) (*Destination, error) {
	if o.Name == "" {
		return nil, errors.New("skylark: destination name is empty")
	}
	if o.S3 == nil {
		return nil, fmt.Errorf("skylark %q: no S3 engine for the watchfolder bucket", o.Name)
	}
	if o.KeyTemplate == "" {
		o.KeyTemplate = DefaultKeyTemplate
	}
	if err := keytmpl.Validate(o.KeyTemplate); err != nil {
		return nil, fmt.Errorf("skylark %q: key: %w", o.Name, err)
	}
	if strings.HasPrefix(o.KeyTemplate, processedPrefix) {
		return nil, fmt.Errorf("skylark %q: key %q would write into the platform's %s prefix", o.Name, o.KeyTemplate, processedPrefix)
	}
	switch o.WaitFor {
	case "":
		o.WaitFor = "processed"
	case "processed", "none":
	default:
		return nil, fmt.Errorf("skylark %q: wait_for %q: want \"processed\" or \"none\"", o.Name, o.WaitFor)
	}
	if o.APIURL != "" {
		u, err := url.Parse(o.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("skylark %q: api_url %q is not an http(s) URL", o.Name, o.APIURL)
		}
		if o.Token == "" {
			return nil, fmt.Errorf("skylark %q: api_url is set but the token is empty", o.Name)
		}
		o.APIURL = strings.TrimRight(o.APIURL, "/")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = DefaultRegisterTimeout
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 2 * time.Minute}
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Destination{o: o, log: log.With("type", "skylark")}, nil
}

// Name returns the configured destination name.
func (d *Destination) Name() string { return d.o.Name }

// LearnedStreams and SetLearnedStreams pass the upload engine's learned
// parts-in-flight level through (uploader.StreamLearner).
func (d *Destination) LearnedStreams() int     { return d.o.S3.LearnedStreams() }
func (d *Destination) SetLearnedStreams(n int) { d.o.S3.SetLearnedStreams(n) }

// Type returns "skylark".
func (d *Destination) Type() string { return "skylark" }

// CheckToken fetches an asset no one has: 404 means the token was accepted
// and nothing was found (`watchfolder doctor`).
func (d *Destination) CheckToken(ctx context.Context) error {
	_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
		Op:     fmt.Sprintf("skylark %q: token check", d.o.Name),
		Method: http.MethodGet, URL: d.assetByNameURL(uploader.TokenCheckName),
		Header: http.Header{"Authorization": {"Bearer " + d.o.Token}},
	})
	var apiErr *uploader.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// ---- Skylark API endpoint: the only URL this package calls. ----

func (d *Destination) assetByNameURL(stem string) string {
	return d.o.APIURL + "/api/assets/versions/data-source/" + url.PathEscape(stem)
}

// ---- sidecar ----

// asset is the validated sidecar "skylark" object.
type asset struct {
	JSON string // compact, ASCII-only; "" in simple mode
	UID  string
}

func (d *Destination) asset(src *uploader.Source) (asset, error) {
	raw, ok := src.Meta.Platform["skylark"]
	if !ok {
		return asset{}, nil
	}
	bad := func(why string) error {
		return uploader.Permanent(fmt.Errorf("skylark %q: %s: sidecar \"skylark\" %s", d.o.Name, src.RelPath, why))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return asset{}, bad("must be a JSON object (an Asset, e.g. {\"uid\": \"asse_...\"})")
	}
	if len(obj) == 0 {
		return asset{}, nil
	}
	var a asset
	if u, ok := obj["uid"]; ok {
		if err := json.Unmarshal(u, &a.UID); err != nil || strings.TrimSpace(a.UID) == "" {
			return asset{}, bad("uid must be a non-empty string")
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return asset{}, bad("is not valid JSON")
	}
	a.JSON = asciiJSON(buf.String())
	if len(a.JSON) > maxMetaBytes-200 {
		return asset{}, bad(fmt.Sprintf("is %d bytes compacted, over S3's 2 KB metadata limit", len(a.JSON)))
	}
	return a, nil
}

// asciiJSON escapes every non-ASCII rune as \uXXXX (surrogate pairs above
// the BMP) so the JSON can travel as an HTTP header value. Non-ASCII runes
// only occur inside JSON strings, where the escape is equivalent.
func asciiJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// ---- Upload ----

// Upload validates the sidecar and writes the object into the watchfolder.
func (d *Destination) Upload(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	a, err := d.asset(src)
	if err != nil {
		return err
	}
	key := cp.Key
	if key == "" {
		key, err = keytmpl.Render(d.o.KeyTemplate, keytmpl.Vars{Folder: src.Folder, RelPath: src.RelPath, ID: src.JobID, Time: src.Found})
		if err != nil {
			return uploader.Permanent(fmt.Errorf("skylark %q: %s: key: %w", d.o.Name, src.RelPath, err))
		}
	}
	// The engine tags the object with the job's token; the processed copy
	// is recognised by it.
	h := s3engine.JobToken(src)
	if !cp.Uploaded {
		// A crash after the PUT but before its commit. Skylark moves an
		// ingested object by copy then delete, so the root key is looked
		// at first: our object still there is whole (a PUT or a multipart
		// complete is atomic, and the token is set with it) and must not
		// be sent again; once it is gone from the root, its processed
		// copy is already there. (Asking the engine instead races the
		// move: a HEAD just after the delete answers 404 and a second PUT
		// would be a second asset.)
		if found, pk := d.earlierUpload(ctx, key, h); found {
			cp.Bucket, cp.Key, cp.Uploaded = d.o.S3.Bucket(), key, true
			if cp.Extra == nil {
				cp.Extra = map[string]string{}
			}
			cp.Extra[extraHandle] = h
			if pk != "" {
				cp.Extra[extraProcessedKey] = pk
			}
			if cp.Extra[extraUploadedAt] == "" {
				cp.Extra[extraUploadedAt] = time.Now().UTC().Format(time.RFC3339)
			}
			cp.Object = "s3://" + cp.Bucket + "/" + key
			if pk != "" {
				cp.Object = "s3://" + cp.Bucket + "/" + pk
			}
			if err := s.Save(ctx, cp); err != nil {
				return fmt.Errorf("skylark %q: %s: save checkpoint: %w", d.o.Name, src.RelPath, err)
			}
			d.log.Info("uploaded by an earlier attempt: not sent again", "file", src.RelPath, "object", cp.Object)
			return nil
		}
	}
	meta := map[string]string{}
	if a.JSON != "" {
		meta[metaAsset] = a.JSON
	}
	if err := d.o.S3.Put(ctx, src, s3engine.PutInput{Key: key, Metadata: meta}, cp, s); err != nil {
		return fmt.Errorf("skylark %q: %s: upload: %w", d.o.Name, src.RelPath, err)
	}
	if cp.Bucket == "" {
		cp.Bucket = d.o.S3.Bucket()
	}
	if cp.Key == "" {
		cp.Key = key
	}
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	cp.Extra[extraHandle] = h
	if cp.Extra[extraUploadedAt] == "" {
		cp.Extra[extraUploadedAt] = time.Now().UTC().Format(time.RFC3339)
	}
	cp.Object = "s3://" + cp.Bucket + "/" + cp.Key
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("skylark %q: %s: save checkpoint: %w", d.o.Name, src.RelPath, err)
	}
	return nil
}

// Abort releases an unfinished multipart upload.
func (d *Destination) Abort(ctx context.Context, cp *uploader.Checkpoint) error {
	return d.o.S3.Abort(ctx, cp)
}

// ---- Register ----

// Register waits for Skylark to move the object to processed/ and records
// the asset uid (the sidecar's, or the API's when APIURL is set).
func (d *Destination) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	a, err := d.asset(src)
	if err != nil {
		return err
	}
	if !cp.Uploaded || cp.Key == "" {
		return fmt.Errorf("skylark %q: %s: register: the object is not uploaded yet", d.o.Name, src.RelPath)
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.RegisterTimeout)
	defer cancel()
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	if d.o.WaitFor == "processed" && cp.Extra[extraProcessedKey] == "" {
		pk, err := d.waitProcessed(ctx, src, cp)
		if err != nil {
			return err
		}
		cp.Extra[extraProcessedKey] = pk
		cp.Object = "s3://" + cp.Bucket + "/" + pk
		if err := s.Save(ctx, cp); err != nil {
			return fmt.Errorf("skylark %q: %s: save processed key: %w", d.o.Name, src.RelPath, err)
		}
		d.log.Info("ingested", "file", src.RelPath, "processed", pk)
	}
	if cp.VendorID != "" {
		return nil
	}
	uid := a.UID
	if uid == "" && d.o.APIURL != "" {
		base := path.Base(cp.Key)
		if uid, err = d.lookup(ctx, src, strings.TrimSuffix(base, path.Ext(base))); err != nil {
			return err
		}
	}
	if uid == "" {
		return nil // simple mode without API: the processed object is the record
	}
	cp.VendorID = uid
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("skylark %q: %s: save asset uid %s: %w", d.o.Name, src.RelPath, uid, err)
	}
	d.log.Info("asset recorded", "file", src.RelPath, "uid", uid)
	return nil
}

// earlierUpload looks for this job's object from an attempt whose commit was
// lost: at the root key (not ingested yet) or, once gone from there, in
// processed/. Skylark moves by copy then delete, so looking at the root
// first cannot miss the object between the two places.
func (d *Destination) earlierUpload(ctx context.Context, key, h string) (found bool, processedKey string) {
	if d.ownAtKey(ctx, key, h) {
		return true, ""
	}
	if pk := d.alreadyIngested(ctx, key, h); pk != "" {
		return true, pk
	}
	return false, ""
}

// ownAtKey reports whether key holds the object this job (token h) wrote.
func (d *Destination) ownAtKey(ctx context.Context, key, h string) bool {
	head, err := d.o.S3.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(d.o.S3.Bucket()), Key: aws.String(key)})
	return err == nil && head.Metadata[metaHandle] == h
}

// alreadyIngested returns the processed/ key of an object carrying this
// job's handle, or "" (also when processed/ cannot be read).
func (d *Destination) alreadyIngested(ctx context.Context, key, h string) string {
	client := d.o.S3.Client()
	for _, k := range processedCandidates(key) {
		head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(d.o.S3.Bucket()), Key: aws.String(k)})
		if err == nil && head.Metadata[metaHandle] == h {
			return k
		}
	}
	return ""
}

// processedCandidates are where Skylark may put the ingested object.
func processedCandidates(key string) []string {
	c := []string{processedPrefix + key}
	if b := path.Base(key); b != key {
		c = append(c, processedPrefix+b)
	}
	return c
}

func (d *Destination) waitProcessed(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint) (string, error) {
	op := fmt.Sprintf("skylark %q: %s: wait for s3://%s/%s to reach %s", d.o.Name, src.RelPath, cp.Bucket, cp.Key, processedPrefix)
	var since time.Time
	if t, err := time.Parse(time.RFC3339, cp.Extra[extraUploadedAt]); err == nil {
		since = t.Add(-clockSlack)
	}
	client := d.o.S3.Client()
	for {
		for _, k := range processedCandidates(cp.Key) {
			ok, err := d.isOurs(ctx, client, cp, src, k, since)
			if err != nil {
				if uploader.IsPermanent(err) {
					return "", fmt.Errorf("%s: %w", op, err)
				}
				if ctx.Err() == nil {
					d.log.Warn("checking processed/ failed, polling on", "file", src.RelPath, "err", err)
				}
			}
			if ok {
				return k, nil
			}
		}
		if err := uploader.Sleep(ctx, d.o.PollInterval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return "", fmt.Errorf("%s: not ingested after %s", op, d.o.RegisterTimeout)
			}
			return "", fmt.Errorf("%s: %w", op, err)
		}
	}
}

// isOurs reports whether key exists and is this job's processed object.
func (d *Destination) isOurs(ctx context.Context, client *s3.Client, cp *uploader.Checkpoint, src *uploader.Source, key string, since time.Time) (bool, error) {
	list, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(cp.Bucket), Prefix: aws.String(key), MaxKeys: aws.Int32(20)})
	if err != nil {
		return false, s3Err("list "+key, err)
	}
	found := false
	for _, o := range list.Contents {
		if aws.ToString(o.Key) == key {
			found = true
		}
	}
	if !found {
		return false, nil
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cp.Bucket), Key: aws.String(key)})
	if err != nil {
		return false, s3Err("head "+key, err)
	}
	if h, ok := head.Metadata[metaHandle]; ok {
		return h == cp.Extra[extraHandle], nil
	}
	return aws.ToInt64(head.ContentLength) == src.Size && !aws.ToTime(head.LastModified).Before(since), nil
}

// s3Err makes a refused (401/403) S3 call permanent.
func s3Err(what string, err error) error {
	var rs interface{ HTTPStatusCode() int }
	if errors.As(err, &rs) && (rs.HTTPStatusCode() == http.StatusForbidden || rs.HTTPStatusCode() == http.StatusUnauthorized) {
		return uploader.Permanent(fmt.Errorf("%s: access denied (the watchfolder credentials cannot read %s; set wait_for = \"none\"): %w", what, processedPrefix, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// assetAnswer accepts a bare Asset or a list wrapper.
type assetAnswer struct {
	UID     string `json:"uid"`
	Objects []struct {
		UID string `json:"uid"`
	} `json:"objects"`
}

func (d *Destination) lookup(ctx context.Context, src *uploader.Source, stem string) (string, error) {
	op := fmt.Sprintf("skylark %q: %s: fetch asset %q", d.o.Name, src.RelPath, stem)
	for {
		var out assetAnswer
		_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
			Op: op, Method: http.MethodGet, URL: d.assetByNameURL(stem),
			Header: http.Header{"Authorization": {"Bearer " + d.o.Token}}, Out: &out,
		})
		var apiErr *uploader.APIError
		switch {
		case err == nil:
			uid := out.UID
			if uid == "" && len(out.Objects) > 0 {
				uid = out.Objects[0].UID
			}
			if uid != "" {
				return uid, nil
			}
			d.log.Warn("asset answer has no uid yet, polling on", "file", src.RelPath)
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			// not created yet
		case uploader.IsPermanent(err):
			return "", err
		default:
			if ctx.Err() == nil {
				d.log.Warn("asset lookup failed, polling on", "file", src.RelPath, "err", err)
			}
		}
		if err := uploader.Sleep(ctx, d.o.PollInterval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return "", fmt.Errorf("%s: no asset after %s", op, d.o.RegisterTimeout)
			}
			return "", fmt.Errorf("%s: %w", op, err)
		}
	}
}
