// Package wistia delivers media to Wistia through the S3 copy endpoint: the
// file is uploaded to the customer's own bucket with the shared S3 engine,
// then Wistia is asked to copy it in, and the media's hashed_id is recorded.
//
// Contract choices (Wistia's public docs leave these open; each lives in one
// place in this file so it is easy to correct):
//
//   - s3_copy is POST {upload_url}/s3_copy with "Authorization: Bearer
//     <token>" and an application/x-www-form-urlencoded body (the Upload
//     API's import request is documented as a form POST and s3_copy "uses
//     the same authorization as the regular upload API"). Parameters: bucket
//     (bare name), source_file (the key, never with a leading "/"), region
//     (omitted for us-east-1 or empty), name, and when set project_id,
//     description, contact_id. The answer is the Upload API's media JSON;
//     its hashed_id becomes Checkpoint.VendorID.
//   - Status: GET {api_url}/v1/medias/{hashed_id}.json -> "status":
//     queued|processing|ready|failed. Unknown values count as processing;
//     failed is a permanent error.
//   - Idempotency. s3_copy is not idempotent. Before the first call the
//     checkpoint is marked (Extra["copy_requested"]) and saved; every later
//     try (after a crash, a 5xx, a malformed answer, a 429) first lists
//     GET {api_url}/v1/medias.json?name=<name> (name is a documented filter
//     of Medias#list, an exact match; nothing else is sent) and adopts a
//     media whose name matches exactly. To make that name a safe handle the
//     media is created under "<title> [wf-<10 hex>]", the hex being derived
//     from the job (folder, relpath, job id, found time) and kept in
//     Extra["name"]. Once the hashed_id is committed the media is renamed to
//     the clean title with PUT {api_url}/v1/medias/{hashed_id}.json (form
//     "name"); a permanent failure of that rename is logged, not fatal.
//     Remaining gap: if Wistia's list lags behind the s3_copy answer, a
//     crash in that window can still duplicate.
//   - Names are at most 255 characters (Wistia's limit for a media name;
//     the exact limit is unverified, so the conservative reading counts
//     bytes): a longer title is cut at a rune boundary, deterministically,
//     before the handle suffix, so a retry computes the same handle.
//   - Title: sidecar title, else the file name without extension.
//     Description: sidecar description, else Options.Description. Project:
//     sidecar "platform": {"wistia": {"project_id": ...}} (string or
//     number), else Options.ProjectID.
//   - RegisterTimeout bounds one Register call's wait for "ready".
package wistia

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/watchfolder/watchfolder/internal/keytmpl"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Defaults for Options.
const (
	DefaultUploadURL       = "https://upload.wistia.com"
	DefaultAPIURL          = "https://api.wistia.com"
	DefaultPollInterval    = 15 * time.Second
	DefaultRegisterTimeout = 2 * time.Hour
)

// Checkpoint.Extra keys used by this package.
const (
	extraCopyRequested = "copy_requested" // "1" once s3_copy may have been sent
	extraName          = "name"           // the exact name sent to s3_copy
	extraRenamed       = "renamed"        // "1" once the clean title is set
)

// Options configure a Wistia destination.
type Options struct {
	Name            string
	Token           string        // Bearer token (upload + data API)
	UploadURL       string        // default https://upload.wistia.com
	APIURL          string        // default https://api.wistia.com
	ProjectID       string        // optional; sidecar "wistia": {"project_id"} overrides
	ContactID       string        // optional
	Description     string        // default description; sidecar description overrides
	WaitFor         string        // "" (do not wait) | "ready"
	PollInterval    time.Duration // default 15s
	RegisterTimeout time.Duration // default 2h
	KeyTemplate     string        // object key in the customer's bucket (keytmpl syntax)
	Region          string        // bucket region sent to s3_copy (omitted when us-east-1/empty)
	S3              *s3engine.S3  // engine for the customer's bucket
	HTTPClient      *http.Client
	Logger          *slog.Logger
}

// Destination implements uploader.Destination for Wistia.
type Destination struct {
	o   Options
	log *slog.Logger
	// copyBackoff is the first wait between s3_copy tries (doubles, capped
	// at 30s); a field so tests can shorten it.
	copyBackoff time.Duration
	copyTries   int
}

var _ uploader.Destination = (*Destination)(nil)

// New validates o and fills defaults.
func New(o Options) (*Destination, error) {
	if o.Name == "" {
		return nil, errors.New("wistia: destination name is empty")
	}
	if o.Token == "" {
		return nil, fmt.Errorf("wistia %q: token is empty", o.Name)
	}
	if o.S3 == nil {
		return nil, fmt.Errorf("wistia %q: no S3 engine for the source bucket", o.Name)
	}
	if err := keytmpl.Validate(o.KeyTemplate); err != nil {
		return nil, fmt.Errorf("wistia %q: key: %w", o.Name, err)
	}
	switch o.WaitFor {
	case "", "ready":
	default:
		return nil, fmt.Errorf("wistia %q: wait_for %q: want \"\" or \"ready\"", o.Name, o.WaitFor)
	}
	var err error
	if o.UploadURL, err = baseURL(o.UploadURL, DefaultUploadURL); err != nil {
		return nil, fmt.Errorf("wistia %q: upload_url: %w", o.Name, err)
	}
	if o.APIURL, err = baseURL(o.APIURL, DefaultAPIURL); err != nil {
		return nil, fmt.Errorf("wistia %q: api_url: %w", o.Name, err)
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
	log = log.With("type", "wistia")
	return &Destination{o: o, log: log, copyBackoff: 500 * time.Millisecond, copyTries: 6}, nil
}

func baseURL(v, def string) (string, error) {
	if v == "" {
		v = def
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http(s) URL", v)
	}
	return strings.TrimRight(v, "/"), nil
}

// Name returns the configured destination name.
func (d *Destination) Name() string { return d.o.Name }

// LearnedStreams and SetLearnedStreams pass the upload engine's learned
// parts-in-flight level through (uploader.StreamLearner).
func (d *Destination) LearnedStreams() int     { return d.o.S3.LearnedStreams() }
func (d *Destination) SetLearnedStreams(n int) { d.o.S3.SetLearnedStreams(n) }

// Type returns "wistia".
func (d *Destination) Type() string { return "wistia" }

// CheckToken lists the medias of a name no one uses: any answer means the
// API token was accepted (`watchfolder doctor`).
func (d *Destination) CheckToken(ctx context.Context) error {
	_, err := d.findByName(ctx, uploader.TokenCheckSource(), uploader.TokenCheckName, d.o.ProjectID)
	return err
}

// ---- Wistia endpoints: every URL this package calls is built here. ----

func (d *Destination) s3CopyURL() string { return d.o.UploadURL + "/s3_copy" }

func (d *Destination) mediaURL(hashedID string) string {
	return d.o.APIURL + "/v1/medias/" + url.PathEscape(hashedID) + ".json"
}

func (d *Destination) listByNameURL(name string) string {
	q := url.Values{"name": {name}}
	return d.o.APIURL + "/v1/medias.json?" + q.Encode()
}

func (d *Destination) s3CopyForm(bucket, key, name, desc, projectID string) url.Values {
	f := url.Values{
		"bucket":      {bucket},
		"source_file": {strings.TrimLeft(key, "/")},
		"name":        {name},
	}
	if r := d.o.Region; r != "" && r != "us-east-1" {
		f.Set("region", r)
	}
	if projectID != "" {
		f.Set("project_id", projectID)
	}
	if desc != "" {
		f.Set("description", desc)
	}
	if d.o.ContactID != "" {
		f.Set("contact_id", d.o.ContactID)
	}
	return f
}

// ---- Upload ----

// Upload puts the file into the customer's bucket under the rendered key.
func (d *Destination) Upload(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	if _, _, err := d.sidecar(src); err != nil {
		return err
	}
	key := cp.Key
	if key == "" {
		var err error
		key, err = keytmpl.Render(d.o.KeyTemplate, keytmpl.Vars{Folder: src.Folder, RelPath: src.RelPath, ID: src.JobID, Time: src.Found})
		if err != nil {
			return uploader.Permanent(fmt.Errorf("wistia %q: %s: key: %w", d.o.Name, src.RelPath, err))
		}
	}
	if err := d.o.S3.Put(ctx, src, s3engine.PutInput{Key: key}, cp, s); err != nil {
		return fmt.Errorf("wistia %q: %s: upload: %w", d.o.Name, src.RelPath, err)
	}
	if cp.Bucket == "" {
		cp.Bucket = d.o.S3.Bucket()
	}
	if cp.Key == "" {
		cp.Key = key
	}
	cp.Object = "s3://" + cp.Bucket + "/" + cp.Key
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("wistia %q: %s: save checkpoint: %w", d.o.Name, src.RelPath, err)
	}
	return nil
}

// Abort releases an unfinished multipart upload.
func (d *Destination) Abort(ctx context.Context, cp *uploader.Checkpoint) error {
	return d.o.S3.Abort(ctx, cp)
}

// ---- Register ----

// media is the part of Wistia's media JSON this package reads.
type media struct {
	ID       json.Number `json:"id"`
	HashedID string      `json:"hashed_id"`
	Name     string      `json:"name"`
	Status   string      `json:"status"`
	Message  string      `json:"error_message"`
}

// Register asks Wistia to copy the object in (once), records the hashed_id,
// sets the clean title and, with WaitFor "ready", waits for processing.
func (d *Destination) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	title, projectID, err := d.sidecar(src)
	if err != nil {
		return err
	}
	if cp.VendorID == "" {
		if !cp.Uploaded || cp.Bucket == "" || cp.Key == "" {
			return fmt.Errorf("wistia %q: %s: register: the object is not uploaded yet", d.o.Name, src.RelPath)
		}
		if err := d.copyIn(ctx, src, cp, s, title, projectID); err != nil {
			return err
		}
	}
	if cp.Extra[extraRenamed] == "" {
		if err := d.rename(ctx, src, cp, s, title); err != nil {
			return err
		}
	}
	if d.o.WaitFor == "ready" {
		return d.waitReady(ctx, src, cp)
	}
	return nil
}

// handleName is the name the media is created under: the title plus a
// job-derived handle that the recovery search can match exactly.
func handleName(src *uploader.Source, title string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d", src.Folder, src.RelPath, src.JobID, src.Found.UnixNano())
	suffix := " [wf-" + hex.EncodeToString(h.Sum(nil))[:10] + "]"
	return shorten(title, maxName-len(suffix)) + suffix
}

// maxName is the longest media name sent (Wistia: 255 characters).
const maxName = 255

// shorten cuts s to at most n bytes at a rune boundary.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := 0
	for cut < len(s) {
		_, w := utf8.DecodeRuneInString(s[cut:])
		if cut+w > n {
			break
		}
		cut += w
	}
	return strings.TrimSpace(s[:cut])
}

func (d *Destination) copyIn(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, title, projectID string) error {
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	name := cp.Extra[extraName]
	if name == "" {
		name = handleName(src, title)
	}
	desc := src.Meta.Description
	if desc == "" {
		desc = d.o.Description
	}
	op := fmt.Sprintf("wistia %q: %s: s3_copy s3://%s/%s", d.o.Name, src.RelPath, cp.Bucket, cp.Key)
	body := []byte(d.s3CopyForm(cp.Bucket, cp.Key, name, desc, projectID).Encode())
	backoff := d.copyBackoff
	var lastErr error
	for try := 1; try <= d.copyTries; try++ {
		var m *media
		if cp.Extra[extraCopyRequested] == "1" {
			found, err := d.findByName(ctx, src, name, projectID)
			if err != nil {
				return err
			}
			if found != nil {
				d.log.Info("adopting media created by an earlier try", "file", src.RelPath, "hashed_id", found.HashedID)
				m = found
			}
		}
		if m == nil {
			cp.Extra[extraName] = name
			cp.Extra[extraCopyRequested] = "1"
			if err := s.Save(ctx, cp); err != nil {
				return fmt.Errorf("%s: save checkpoint before copy: %w", op, err)
			}
			var out media
			_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
				Op: op, Method: http.MethodPost, URL: d.s3CopyURL(),
				Header: d.auth(http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}),
				Body:   body, Out: &out,
				MaxTries: 1, // every retry goes through the search above
			})
			switch {
			case err == nil && out.HashedID == "":
				err = fmt.Errorf("%s: answer has no hashed_id", op)
			case err != nil && uploader.IsPermanent(err):
				return err
			}
			if err != nil {
				lastErr = err
				wait, ok := uploader.RetryAfter(err)
				if !ok {
					wait = backoff
					backoff = min(backoff*2, 30*time.Second)
				}
				d.log.Warn("s3_copy failed, will retry", "file", src.RelPath, "try", try, "wait", wait, "err", err)
				if try == d.copyTries {
					break
				}
				if err := uploader.Sleep(ctx, wait); err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
				continue
			}
			m = &out
		}
		cp.VendorID = m.HashedID
		if err := s.Save(ctx, cp); err != nil {
			return fmt.Errorf("%s: save hashed_id %s: %w", op, m.HashedID, err)
		}
		d.log.Info("media created", "file", src.RelPath, "hashed_id", m.HashedID)
		return nil
	}
	return lastErr
}

// findByName lists medias with the exact handle name and returns the oldest.
func (d *Destination) findByName(ctx context.Context, src *uploader.Source, name, projectID string) (*media, error) {
	var list []media
	_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
		Op:     fmt.Sprintf("wistia %q: %s: list medias by name", d.o.Name, src.RelPath),
		Method: http.MethodGet, URL: d.listByNameURL(name),
		Header: d.auth(nil), Out: &list,
	})
	if err != nil {
		return nil, err
	}
	var best *media
	n := 0
	for i := range list {
		if list[i].Name != name || list[i].HashedID == "" {
			continue
		}
		n++
		if best == nil {
			best = &list[i]
		}
	}
	if n > 1 {
		d.log.Warn("several medias carry this job's name; adopting the first listed", "file", src.RelPath, "count", n, "hashed_id", best.HashedID)
	}
	return best, nil
}

func (d *Destination) rename(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, title string) error {
	op := fmt.Sprintf("wistia %q: %s: rename media %s", d.o.Name, src.RelPath, cp.VendorID)
	_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
		Op: op, Method: http.MethodPut, URL: d.mediaURL(cp.VendorID),
		Header: d.auth(http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}),
		Body:   []byte(url.Values{"name": {title}}.Encode()),
	})
	if err != nil {
		if !uploader.IsPermanent(err) {
			return err
		}
		d.log.Warn("could not set the media title; it keeps its job handle", "file", src.RelPath, "hashed_id", cp.VendorID, "err", err)
	}
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	cp.Extra[extraRenamed] = "1"
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("%s: save checkpoint: %w", op, err)
	}
	return nil
}

func (d *Destination) waitReady(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint) error {
	op := fmt.Sprintf("wistia %q: %s: media %s status", d.o.Name, src.RelPath, cp.VendorID)
	ctx, cancel := context.WithTimeout(ctx, d.o.RegisterTimeout)
	defer cancel()
	for {
		var m media
		_, err := uploader.DoAPI(ctx, d.o.HTTPClient, uploader.Call{
			Op: op, Method: http.MethodGet, URL: d.mediaURL(cp.VendorID),
			Header: d.auth(nil), Out: &m,
		})
		switch {
		case err != nil && uploader.IsPermanent(err):
			return err
		case err != nil:
			d.log.Warn("status check failed, polling on", "file", src.RelPath, "err", err)
		case m.Status == "ready":
			d.log.Info("media ready", "file", src.RelPath, "hashed_id", cp.VendorID)
			return nil
		case m.Status == "failed":
			msg := m.Message
			if msg == "" {
				msg = "Wistia reports processing failed"
			}
			return uploader.Permanent(fmt.Errorf("%s: failed: %s", op, msg))
		}
		if err := uploader.Sleep(ctx, d.o.PollInterval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%s: not ready after %s (last status %q)", op, d.o.RegisterTimeout, m.Status)
			}
			return fmt.Errorf("%s: %w", op, err)
		}
	}
}

// sidecar returns the media title and the project id, validating the
// sidecar's "wistia" object.
func (d *Destination) sidecar(src *uploader.Source) (title, projectID string, err error) {
	title = strings.TrimSpace(src.Meta.Title)
	if title == "" {
		base := path.Base(src.RelPath)
		title = strings.TrimSuffix(base, path.Ext(base))
	}
	title = shorten(title, maxName)
	projectID = d.o.ProjectID
	raw, ok := src.Meta.Platform["wistia"]
	if !ok {
		return title, projectID, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", "", uploader.Permanent(fmt.Errorf("wistia %q: %s: sidecar \"wistia\" must be a JSON object", d.o.Name, src.RelPath))
	}
	if p, ok := obj["project_id"]; ok {
		var s string
		var n json.Number
		switch {
		case json.Unmarshal(p, &s) == nil:
			projectID = s
		case json.Unmarshal(p, &n) == nil:
			projectID = n.String()
		default:
			return "", "", uploader.Permanent(fmt.Errorf("wistia %q: %s: sidecar wistia.project_id must be a string or a number", d.o.Name, src.RelPath))
		}
	}
	return title, projectID, nil
}

func (d *Destination) auth(h http.Header) http.Header {
	if h == nil {
		h = http.Header{}
	}
	h.Set("Authorization", "Bearer "+d.o.Token)
	return h
}
