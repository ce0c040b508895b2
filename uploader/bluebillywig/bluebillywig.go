// Package bluebillywig delivers media to Blue Billywig: it writes the file
// into the publication's S3 ingest bucket and then finds, through the SAPI,
// the mediaclip the platform creates for it, records its id and sets the
// sidecar metadata on it.
//
// Contract choices (each URL and query is built in exactly one function so a
// correction touches one place):
//
//   - Object key: upload/<account>/<unique name> (objectKey), where the unique
//     name is the sanitised file stem, "-", a suffix derived from the job
//     (base36 job id + 4 hex of a hash of size and mtime) and the lowercased
//     extension (uniqueName). It is deterministic, so an upload retried after
//     a crash reuses the same key. Dots in the stem become "-" so the platform
//     cannot mistake part of the stem for the extension. ACL public-read;
//     Content-Type is the engine's by-extension default.
//   - sourceid: the unique name without its extension, recorded in
//     Checkpoint.Extra["sourceid"]. It is the idempotency handle: a crash at
//     any point just searches for the same sourceid again.
//   - Search (searchURL): GET {api_url}/sapi/mediaclip?q=*&limit=15&offset=0
//     &fq[0]=(sourceid_string:"<sourceid>") with the literal, indexed fq[0]
//     parameter (PHP SDK SearchQuery); '"' is stripped from the value. An
//     answer with neither numfound nor items is an error, never "not yet".
//     Only items whose sourceid equals ours count. id may be a JSON number or
//     a string.
//   - Update (clipURL): PUT {api_url}/sapi/mediaclip/{id} with the changed
//     fields as JSON: title, description, tags (JSON array of strings — the
//     SDKs do not show the tags encoding; unverified). The title is the
//     sidecar's, else the original file name without extension (the
//     platform would otherwise show the suffixed unique object name).
//     Extra["metadata_applied"]="1" after success.
//   - Auth (rpcToken): header rpctoken: <keyId>-<40 lowercase hex
//     HMAC-SHA1(secret bytes, 8-byte big-endian floor(unix/120))>, computed
//     per try through uploader.Call.Prepare because it changes every 120 s.
//     The secret may also be given in the "<id>-<hex>" form the official
//     SDKs take (Python splits it on the first "-"): the id part is then
//     the key id, and api_key_id may be left out.
package bluebillywig

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Type is the destination type name used in the configuration.
const Type = "bluebillywig"

const (
	defaultPollInterval    = 10 * time.Second
	defaultRegisterTimeout = 30 * time.Minute
	// maxStem bounds the sanitised stem so keys stay sane.
	maxStem = 100
	// tokenWindow is the rpctoken HOTP counter period.
	tokenWindow = 120
)

// Options configure one Blue Billywig destination.
type Options struct {
	Name            string        // destination name from config
	Publication     string        // e.g. "demo" -> https://demo.bbvms.com, bucket mm.demo.bbvms.com
	Account         string        // key prefix upload/<account>/
	APIKeyID        string        // rpctoken key id
	APISecret       string        // shared secret (HMAC key = the string's own bytes)
	APIURL          string        // default https://<publication>.bbvms.com
	PollInterval    time.Duration // default 10s
	RegisterTimeout time.Duration // default 30m
	S3              *s3engine.S3  // engine for the publication's bucket
	HTTPClient      *http.Client  // nil: a client with timeouts
	Logger          *slog.Logger
	Now             func() time.Time // nil: time.Now
}

// Destination implements uploader.Destination for Blue Billywig.
type Destination struct {
	o      Options
	base   string // API base URL without trailing slash
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
}

var _ uploader.Destination = (*Destination)(nil)

// New validates o and builds a destination. It does not contact the platform.
func New(o Options) (*Destination, error) {
	o.APIKeyID, o.APISecret = splitSecret(o.APIKeyID, o.APISecret)
	switch {
	case o.Name == "":
		return nil, errors.New("bluebillywig: name is required")
	case o.Publication == "" && o.APIURL == "":
		return nil, fmt.Errorf("bluebillywig %s: publication is required", o.Name)
	case o.Account == "":
		return nil, fmt.Errorf("bluebillywig %s: account is required", o.Name)
	case o.APIKeyID == "":
		return nil, fmt.Errorf("bluebillywig %s: api key id is required", o.Name)
	case o.APISecret == "":
		return nil, fmt.Errorf("bluebillywig %s: api secret is required", o.Name)
	case o.S3 == nil:
		return nil, fmt.Errorf("bluebillywig %s: S3 engine is required", o.Name)
	case strings.Contains(o.Account, "/"):
		return nil, fmt.Errorf("bluebillywig %s: account must not contain '/'", o.Name)
	}
	base := o.APIURL
	if base == "" {
		base = "https://" + o.Publication + ".bbvms.com"
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bluebillywig %s: api url %q is not an http(s) URL", o.Name, base)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = defaultRegisterTimeout
	}
	d := &Destination{o: o, base: strings.TrimRight(base, "/"), client: o.HTTPClient, log: o.Logger, now: o.Now}
	if d.client == nil {
		d.client = defaultClient()
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

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 15 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}

// Name returns the configured destination name.
func (d *Destination) Name() string { return d.o.Name }

// LearnedStreams and SetLearnedStreams pass the upload engine's learned
// parts-in-flight level through (uploader.StreamLearner).
func (d *Destination) LearnedStreams() int     { return d.o.S3.LearnedStreams() }
func (d *Destination) SetLearnedStreams(n int) { d.o.S3.SetLearnedStreams(n) }

// CheckToken asks SAPI for a mediaclip no one has: any answer means the
// rpctoken was accepted (`watchfolder doctor`).
func (d *Destination) CheckToken(ctx context.Context) error {
	_, _, err := d.search(ctx, uploader.TokenCheckSource(), uploader.TokenCheckName)
	return err
}

// Type returns "bluebillywig".
func (d *Destination) Type() string { return Type }

// Upload writes the file to upload/<account>/<unique name> with ACL
// public-read and records the sourceid the platform will give the clip.
func (d *Destination) Upload(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	name := uniqueName(src)
	sourceID := strings.TrimSuffix(name, path.Ext(name))
	if prev := cp.Extra["sourceid"]; prev != "" && prev != sourceID {
		// The name is derived from the job; a different one means the
		// checkpoint belongs to another version of the file.
		return uploader.Permanent(fmt.Errorf("bluebillywig: upload %s: checkpoint sourceid %q does not match %q", src.Path, prev, sourceID))
	}
	if cp.Uploaded && cp.Extra["sourceid"] != "" {
		return nil
	}
	key := objectKey(d.o.Account, name)
	setExtra(cp, "sourceid", sourceID)
	in := s3engine.PutInput{Key: key, ACL: "public-read"}
	if err := d.o.S3.Put(ctx, src, in, cp, s); err != nil {
		return fmt.Errorf("bluebillywig: upload %s to s3://%s/%s: %w", src.Path, d.o.S3.Bucket(), key, err)
	}
	cp.Object = "s3://" + d.o.S3.Bucket() + "/" + key
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("bluebillywig: upload %s: save checkpoint: %w", src.Path, err)
	}
	d.log.Info("uploaded", "file", src.Path, "object", cp.Object, "sourceid", sourceID)
	return nil
}

// Register waits for the mediaclip with the recorded sourceid, records its id
// and applies the sidecar metadata once.
func (d *Destination) Register(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	sourceID := cp.Extra["sourceid"]
	if sourceID == "" {
		return uploader.Permanent(fmt.Errorf("bluebillywig: register %s: no sourceid recorded (upload not done)", src.Path))
	}
	if cp.VendorID == "" {
		id, err := d.waitForClip(ctx, src, sourceID)
		if err != nil {
			return err
		}
		cp.VendorID = id
		if err := s.Save(ctx, cp); err != nil {
			return fmt.Errorf("bluebillywig: register %s: save checkpoint: %w", src.Path, err)
		}
		d.log.Info("mediaclip found", "file", src.Path, "sourceid", sourceID, "id", id)
	}
	if cp.Extra["metadata_applied"] == "1" {
		return nil
	}
	body := metadataBody(src)
	data, err := json.Marshal(body)
	if err != nil {
		return uploader.Permanent(fmt.Errorf("bluebillywig: register %s: encode metadata: %w", src.Path, err))
	}
	_, err = uploader.DoAPI(ctx, d.client, uploader.Call{
		Op:      "bluebillywig: update mediaclip " + cp.VendorID + " for " + src.Path,
		Method:  http.MethodPut,
		URL:     d.clipURL(cp.VendorID),
		Body:    data,
		Prepare: d.sign,
		Message: sapiMessage,
	})
	if err != nil {
		return err
	}
	setExtra(cp, "metadata_applied", "1")
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("bluebillywig: register %s: save checkpoint: %w", src.Path, err)
	}
	d.log.Info("metadata applied", "file", src.Path, "id", cp.VendorID)
	return nil
}

// Abort releases an unfinished multipart upload in the ingest bucket.
func (d *Destination) Abort(ctx context.Context, cp *uploader.Checkpoint) error {
	if cp.UploadID == "" {
		return nil
	}
	if err := d.o.S3.Abort(ctx, cp); err != nil {
		return fmt.Errorf("bluebillywig: abort s3://%s/%s: %w", cp.Bucket, cp.Key, err)
	}
	return nil
}

// waitForClip polls the SAPI until the clip exists or RegisterTimeout passes.
func (d *Destination) waitForClip(ctx context.Context, src *uploader.Source, sourceID string) (string, error) {
	deadline := time.Now().Add(d.o.RegisterTimeout)
	for polls := 1; ; polls++ {
		id, found, err := d.search(ctx, src, sourceID)
		if err != nil {
			return "", err
		}
		if found {
			return id, nil
		}
		wait := d.o.PollInterval
		if rem := time.Until(deadline); rem <= 0 {
			return "", fmt.Errorf("bluebillywig: register %s: mediaclip with sourceid %s did not appear within %s (%d searches)",
				src.Path, sourceID, d.o.RegisterTimeout, polls)
		} else if rem < wait {
			wait = rem
		}
		d.log.Debug("mediaclip not there yet", "file", src.Path, "sourceid", sourceID, "poll", polls)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("bluebillywig: register %s: wait for mediaclip %s: %w", src.Path, sourceID, ctx.Err())
		case <-t.C:
		}
	}
}

// searchAnswer is the SAPI search result. Pointers tell "absent" from zero.
type searchAnswer struct {
	NumFound *json.Number `json:"numfound"`
	Items    *[]struct {
		ID       json.RawMessage `json:"id"`
		SourceID string          `json:"sourceid"`
	} `json:"items"`
}

func (d *Destination) search(ctx context.Context, src *uploader.Source, sourceID string) (id string, found bool, err error) {
	var ans searchAnswer
	op := "bluebillywig: search mediaclip " + sourceID + " for " + src.Path
	_, err = uploader.DoAPI(ctx, d.client, uploader.Call{
		Op:      op,
		Method:  http.MethodGet,
		URL:     d.searchURL(sourceID),
		Prepare: d.sign,
		Out:     &ans,
		Message: sapiMessage,
	})
	if err != nil {
		return "", false, err
	}
	if ans.NumFound == nil && ans.Items == nil {
		return "", false, fmt.Errorf("%s: answer has neither numfound nor items (was the filter parameter ignored?)", op)
	}
	if ans.Items == nil {
		return "", false, nil
	}
	for _, it := range *ans.Items {
		if it.SourceID != sourceID {
			continue
		}
		id, err := parseID(it.ID)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", op, err)
		}
		return id, true, nil
	}
	return "", false, nil
}

// parseID accepts a JSON number or string id.
func parseID(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil && s != "" {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&n); err == nil && n.String() != "" {
		return n.String(), nil
	}
	return "", fmt.Errorf("mediaclip id %s is neither a string nor a number", strings.TrimSpace(string(raw)))
}

// searchURL is the one place the SAPI search query is built.
func (d *Destination) searchURL(sourceID string) string {
	q := url.Values{}
	q.Set("q", "*")
	q.Set("limit", "15")
	q.Set("offset", "0")
	q.Set("fq[0]", `(sourceid_string:"`+strings.ReplaceAll(sourceID, `"`, "")+`")`)
	return d.base + "/sapi/mediaclip?" + q.Encode()
}

// clipURL is the one place the mediaclip update URL is built.
func (d *Destination) clipURL(id string) string {
	return d.base + "/sapi/mediaclip/" + url.PathEscape(id)
}

// splitSecret accepts the SDKs' "<id>-<secret>" form: with no key id, the
// part before the first "-" is the id; with a key id, a secret that starts
// with "<id>-" loses that prefix.
func splitSecret(keyID, secret string) (string, string) {
	if keyID == "" {
		if id, rest, ok := strings.Cut(secret, "-"); ok && id != "" && rest != "" {
			return id, rest
		}
		return keyID, secret
	}
	if rest, ok := strings.CutPrefix(secret, keyID+"-"); ok && rest != "" {
		return keyID, rest
	}
	return keyID, secret
}

// objectKey is the one place the ingest key is built.
func objectKey(account, name string) string {
	return "upload/" + account + "/" + name
}

// metadataBody returns the fields to PUT. The title is always set: without
// it the clip shows the unique object name the upload needed.
func metadataBody(src *uploader.Source) map[string]any {
	m := src.Meta
	b := map[string]any{"title": m.Title}
	if m.Title == "" {
		b["title"] = originalStem(src)
	}
	if m.Description != "" {
		b["description"] = m.Description
	}
	if len(m.Tags) > 0 {
		b["tags"] = m.Tags
	}
	return b
}

// originalStem is the file's own name without extension.
func originalStem(src *uploader.Source) string {
	name := src.RelPath
	if name == "" {
		name = src.Path
	}
	base := path.Base(strings.ReplaceAll(name, "\\", "/"))
	return strings.TrimSuffix(base, path.Ext(base))
}

// sign sets the rpctoken header for this try.
func (d *Destination) sign(r *http.Request) error {
	r.Header.Set("rpctoken", rpcToken(d.o.APIKeyID, d.o.APISecret, d.now()))
	return nil
}

// rpcToken is <keyId>-<hex HMAC-SHA1(secret, be64(floor(unix/120)))>.
func rpcToken(keyID, secret string, now time.Time) string {
	var ctr [8]byte
	binary.BigEndian.PutUint64(ctr[:], uint64(now.Unix()/tokenWindow))
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(ctr[:])
	return keyID + "-" + hex.EncodeToString(m.Sum(nil))
}

// sapiMessage extracts the SAPI's error text ("error" as a string or object).
func sapiMessage(body []byte) string { return uploader.GenericMessage(body) }

// uniqueName is <sanitised stem>-<job suffix><.ext lowercased>.
func uniqueName(src *uploader.Source) string {
	base := path.Base(strings.ReplaceAll(src.RelPath, "\\", "/"))
	if src.RelPath == "" {
		base = path.Base(strings.ReplaceAll(src.Path, "\\", "/"))
	}
	ext := strings.ToLower(path.Ext(base))
	stem := strings.TrimSuffix(base, path.Ext(base))
	ext = sanitize(strings.TrimPrefix(ext, "."), 16)
	if ext != "" {
		ext = "." + strings.ReplaceAll(ext, "-", "")
		if ext == "." {
			ext = ""
		}
	}
	stem = sanitize(strings.ReplaceAll(stem, ".", "-"), maxStem)
	if stem == "" {
		stem = "media"
	}
	return stem + "-" + jobSuffix(src) + ext
}

// jobSuffix is base36(JobID) + 4 hex of sha256(size, mtime).
func jobSuffix(src *uploader.Source) string {
	h := sha256.Sum256([]byte(strconv.FormatInt(src.Size, 10) + ":" + strconv.FormatInt(src.ModTime.UnixNano(), 10)))
	return strconv.FormatUint(src.JobID, 36) + hex.EncodeToString(h[:2])
}

// sanitize keeps [A-Za-z0-9._-], replaces other runs with "-", trims
// leading/trailing "-" and "." and bounds the length.
func sanitize(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		ok := r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		if !ok {
			if !dash {
				b.WriteByte('-')
			}
			dash = true
			continue
		}
		dash = r == '-'
		b.WriteRune(r)
	}
	out := strings.Trim(b.String(), "-.")
	if len(out) > max {
		out = strings.TrimRight(out[:max], "-.")
	}
	return out
}

func setExtra(cp *uploader.Checkpoint, k, v string) {
	if cp.Extra == nil {
		cp.Extra = map[string]string{}
	}
	cp.Extra[k] = v
}
