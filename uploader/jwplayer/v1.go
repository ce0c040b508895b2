package jwplayer

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/watchfolder/watchfolder/uploader"
)

// v1Answer is the /v1/videos/create answer.
type v1Answer struct {
	Status  string `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Media   struct {
		Key string `json:"key"`
	} `json:"media"`
	Link struct {
		Protocol string `json:"protocol"`
		Address  string `json:"address"`
		Path     string `json:"path"`
		Query    struct {
			AWSAccessKeyID string      `json:"AWSAccessKeyId"`
			Expires        json.Number `json:"Expires"`
			Signature      string      `json:"Signature"`
		} `json:"query"`
	} `json:"link"`
}

func (d *Destination) uploadV1(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	// v1 sends the file in one PUT to S3, whose single-PUT limit is 5 GB:
	// refuse before a video is created rather than leave an empty one.
	if src.Size >= d.o.DirectLimit {
		return uploader.Permanent(fmt.Errorf("jwplayer: upload %s: %d bytes is over the v1 API's single-upload limit of 5 GB; use api = \"v2\" (multipart)", src.Path, src.Size))
	}
	f, err := openSource(src)
	if err != nil {
		return err
	}
	defer f.Close()
	job := jobHandle(src)
	if cp.VendorID == "" {
		// A crash (or a lost answer) after an earlier create left a
		// video carrying this job's handle: resume it, never create a
		// second one.
		key, status, err := d.v1Find(ctx, src, job)
		if err != nil {
			return err
		}
		switch {
		case key != "" && status != "created":
			cp.VendorID = key
			return d.markUploadedV1(ctx, src, cp, s)
		case key != "":
			cp.VendorID = key
			d.log.Info("resuming this job's video (v1)", "file", src.Path, "media", key)
			if err := d.v1Link(ctx, src, cp, s, "update", url.Values{"video_key": {key}}); err != nil {
				return err
			}
		default:
			params := url.Values{}
			params.Set("title", src.Meta.Title)
			if src.Meta.Title == "" {
				params.Set("title", stem(src))
			}
			if src.Meta.Description != "" {
				params.Set("description", src.Meta.Description)
			}
			if len(src.Meta.Tags) > 0 {
				params.Set("tags", strings.Join(src.Meta.Tags, ","))
			}
			for k, v := range src.Meta.Custom {
				params.Set("custom."+k, v)
			}
			params.Set("custom."+jobParam, job)
			if err := d.v1Link(ctx, src, cp, s, "create", params); err != nil {
				return err
			}
		}
	} else if cp.Extra["secret_upload_url"] == "" {
		if err := d.v1Link(ctx, src, cp, s, "update", url.Values{"video_key": {cp.VendorID}}); err != nil {
			return err
		}
	}
	op := "jwplayer: v1 upload of " + src.Path
	for attempt := 0; ; attempt++ {
		err = d.withRetry(ctx, func() error {
			var sent atomic.Int64
			h := md5.New()
			etag, err := d.putBytes(ctx, op, cp.Extra["secret_upload_url"], "", func() io.Reader {
				return &countingReader{r: io.TeeReader(io.NewSectionReader(f, 0, src.Size), h), n: &sent, tick: s.Progress}
			}, src.Size)
			if err != nil {
				return err
			}
			if sum := `"` + hex.EncodeToString(h.Sum(nil)) + `"`; etag != "" && etag != sum {
				return fmt.Errorf("%s: ETag %s does not match the file's MD5 %s", op, etag, sum)
			}
			cp.ETag = etag
			return nil
		})
		var ae *uploader.APIError
		if err != nil && attempt == 0 && errors.As(err, &ae) && ae.Status == http.StatusForbidden {
			// The link's Expires passed (a long queue, a resume the next
			// day): v1 renews it with /videos/update.
			d.log.Warn("upload link refused: renewing it", "file", src.Path, "media", cp.VendorID)
			if err := d.v1Link(ctx, src, cp, s, "update", url.Values{"video_key": {cp.VendorID}}); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := unchanged(f, src); err != nil {
			return err
		}
		return d.markUploadedV1(ctx, src, cp, s)
	}
}

func (d *Destination) markUploadedV1(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	cp.Uploaded = true
	cp.Object = "jwplayer:v1/videos/" + cp.VendorID
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("jwplayer: upload %s: save checkpoint: %w", src.Path, err)
	}
	return nil
}

// v1Call sends one signed v1 call and checks the JSON status.
func (d *Destination) v1Call(ctx context.Context, op, call string, params url.Values, out any) error {
	var raw json.RawMessage
	_, err := uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: op, Method: http.MethodPost, URL: d.base + "/v1/" + call,
		Prepare: func(r *http.Request) error { r.URL.RawQuery = d.signV1(params); return nil },
		Out:     &raw,
	})
	if err != nil {
		return err
	}
	var st struct {
		Status  string `json:"status"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if st.Status != "ok" {
		msg := st.Message
		if msg == "" {
			msg = "status " + strconv.Quote(st.Status)
		}
		if st.Code != "" {
			msg = st.Code + ": " + msg
		}
		return uploader.Permanent(fmt.Errorf("%s: %s", op, msg))
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// v1Link calls videos/create or videos/update (upload_method=s3) and saves
// the video key and its upload URL before any byte is sent.
func (d *Destination) v1Link(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, verb string, params url.Values) error {
	params.Set("upload_method", "s3")
	op := "jwplayer: v1 " + verb + " video for " + src.Path
	var ans v1Answer
	if err := d.v1Call(ctx, op, "videos/"+verb, params, &ans); err != nil {
		return err
	}
	link, err := v1URL(ans)
	if err != nil || (verb == "create" && ans.Media.Key == "") {
		return fmt.Errorf("%s: answer lacks media.key or a usable link", op)
	}
	if verb == "create" {
		cp.VendorID = ans.Media.Key
	}
	setExtra(cp, "secret_upload_url", link)
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("jwplayer: upload %s: save checkpoint: %w", src.Path, err)
	}
	d.log.Info("video "+verb+"d (v1)", "file", src.Path, "media", cp.VendorID)
	return nil
}

// v1Find returns the key and status of a video carrying this job's handle.
func (d *Destination) v1Find(ctx context.Context, src *uploader.Source, job string) (key, status string, err error) {
	var ans struct {
		Videos []struct {
			Key    string `json:"key"`
			Status string `json:"status"`
		} `json:"videos"`
	}
	params := url.Values{"search:custom." + jobParam: {job}}
	if err := d.v1Call(ctx, "jwplayer: v1 find video for "+src.Path, "videos/list", params, &ans); err != nil {
		return "", "", err
	}
	for _, v := range ans.Videos {
		if v.Key != "" {
			return v.Key, v.Status, nil
		}
	}
	return "", "", nil
}

// v1URL builds the S3 upload URL from the create answer's link.
func v1URL(a v1Answer) (string, error) {
	l := a.Link
	if l.Address == "" || l.Path == "" {
		return "", fmt.Errorf("incomplete link")
	}
	// https even when the link says http: the query signature is a
	// credential and the bytes are the customer's media.
	u := "https://" + l.Address + l.Path +
		"?AWSAccessKeyId=" + url.QueryEscape(l.Query.AWSAccessKeyID) +
		"&Expires=" + url.QueryEscape(string(l.Query.Expires)) +
		"&Signature=" + url.QueryEscape(l.Query.Signature)
	if _, err := url.Parse(u); err != nil {
		return "", err
	}
	return u, nil
}

// signV1 returns the signed query string for params (which it does not
// modify): the api_* parameters are added, then api_signature.
func (d *Destination) signV1(params url.Values) string {
	p := url.Values{}
	for k, v := range params {
		p[k] = append([]string(nil), v...)
	}
	p.Set("api_format", "json")
	p.Set("api_key", d.o.APIKey)
	p.Set("api_nonce", d.nonce())
	p.Set("api_timestamp", strconv.FormatInt(d.now().Unix(), 10))
	base := canonicalV1(p)
	sum := sha1.Sum([]byte(base + d.o.APISecret))
	return base + "&api_signature=" + hex.EncodeToString(sum[:])
}

// canonicalV1 sorts by key (then value) and joins quote(k)=quote(v) with &.
func canonicalV1(p url.Values) string {
	type kv struct{ k, v string }
	var all []kv
	for k, vs := range p {
		for _, v := range vs {
			all = append(all, kv{k, v})
		}
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].k != all[b].k {
			return all[a].k < all[b].k
		}
		return all[a].v < all[b].v
	})
	parts := make([]string, len(all))
	for i, e := range all {
		parts[i] = pyQuote(e.k) + "=" + pyQuote(e.v)
	}
	return strings.Join(parts, "&")
}

// pyQuote encodes like Python's urllib.parse.quote(s.encode(), safe='~'):
// only A-Z a-z 0-9 _ . - ~ stay as they are; every other byte is %XX.
func pyQuote(s string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// randomNonce is 9 random digits.
func randomNonce() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000_000))
	if err != nil {
		return "000000000"
	}
	return fmt.Sprintf("%09d", n.Int64())
}
