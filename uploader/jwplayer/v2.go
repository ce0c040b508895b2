package jwplayer

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// v2 URLs: the only places they are built.

func (d *Destination) siteMedia() string {
	return d.base + "/v2/sites/" + url.PathEscape(d.o.SiteID) + "/media/"
}

func (d *Destination) createURL() string { return d.siteMedia() }

func (d *Destination) mediaURL(id string) string { return d.siteMedia() + url.PathEscape(id) + "/" }

func (d *Destination) reuploadURL(id string) string { return d.mediaURL(id) + "reupload/" }

func (d *Destination) findURL(externalID string) string {
	v := strings.ReplaceAll(strings.ReplaceAll(externalID, `\`, `\\`), `"`, `\"`)
	q := url.Values{}
	q.Set("q", `external_id:"`+v+`"`)
	q.Set("page_length", "10")
	return d.siteMedia() + "?" + q.Encode()
}

func (d *Destination) partsURL(uploadID string, page int) string {
	q := url.Values{}
	q.Set("page", strconv.Itoa(page))
	q.Set("page_length", strconv.Itoa(partsPageLength))
	return d.upBase + "/v2/uploads/" + url.PathEscape(uploadID) + "/parts?" + q.Encode()
}

func (d *Destination) completeURL(uploadID string) string {
	return d.upBase + "/v2/uploads/" + url.PathEscape(uploadID) + "/complete"
}

func (d *Destination) bearer(secret string) http.Header {
	return http.Header{"Authorization": {"Bearer " + secret}}
}

// media is the part of a v2 media object this package reads.
type media struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"error_message"`
	ExternalID   string `json:"external_id"`
	Metadata     struct {
		ExternalID   string            `json:"external_id"`
		CustomParams map[string]string `json:"custom_params"`
	} `json:"metadata"`
}

// ours reports whether m was created by this job (an earlier attempt).
func (m *media) ours(job string) bool {
	return m.Metadata.CustomParams[jobParam] == job || m.ExternalID == job || m.Metadata.ExternalID == job
}

// uploadHandles is what create and reupload answer.
type uploadHandles struct {
	ID          string `json:"id"`
	UploadLink  string `json:"upload_link"`
	UploadID    string `json:"upload_id"`
	UploadToken string `json:"upload_token"`
}

// hasBytes reports whether a media has received its upload already.
func hasBytes(status string) bool {
	switch status {
	case "processing", "updating", "ready", "failed":
		return true
	}
	return false
}

func (d *Destination) uploadV2(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	f, err := openSource(src)
	if err != nil {
		return err
	}
	defer f.Close()
	method := "direct"
	if src.Size > d.o.MultipartThreshold || src.Size > d.o.DirectLimit {
		method = "multipart"
	}
	resumed := cp.VendorID != ""
	if !resumed {
		if err := d.createOrFind(ctx, src, cp, s, method); err != nil {
			return err
		}
		if cp.Uploaded {
			return nil
		}
	} else if cp.Extra["method"] == "" || (uploadLink(cp) == "" && cp.Extra["upload_id"] == "") {
		if err := d.refreshHandles(ctx, src, cp, s, method); err != nil {
			return err
		}
	} else {
		// A crash after the last byte but before the commit: the media
		// has moved on from "created" and must not be uploaded again.
		m, err := d.getMedia(ctx, src, cp.VendorID)
		if err != nil {
			return err
		}
		if hasBytes(m.Status) {
			return d.markUploaded(ctx, src, cp, s)
		}
	}
	switch cp.Extra["method"] {
	case "direct":
		err = d.direct(ctx, src, f, cp, s, resumed)
	case "multipart":
		err = d.multipart(ctx, src, f, cp, s)
	default:
		err = uploader.Permanent(fmt.Errorf("jwplayer: upload %s: unknown upload method %q in checkpoint", src.Path, cp.Extra["method"]))
	}
	if err != nil {
		return err
	}
	if err := unchanged(f, src); err != nil {
		return err
	}
	return d.markUploaded(ctx, src, cp, s)
}

func (d *Destination) markUploaded(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session) error {
	cp.Uploaded = true
	cp.Object = "jwplayer:" + d.o.SiteID + "/media/" + cp.VendorID
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("jwplayer: upload %s: save checkpoint: %w", src.Path, err)
	}
	d.log.Info("uploaded", "file", src.Path, "media", cp.VendorID)
	return nil
}

// createOrFind looks for a media with the job's external id first and
// creates one only when there is none; the handles are saved before return.
// A media found there that another version of the file created gets this
// version's bytes through reupload.
func (d *Destination) createOrFind(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, method string) error {
	ext, job := externalID(src), jobHandle(src)
	backoff := time.Second
	// The create call is never retried blindly: an answer lost to a 5xx or
	// a dropped connection may still have created the media, so every new
	// try first looks it up by external_id.
	for try := 1; ; try++ {
		found, err := d.findByExternalID(ctx, src, ext)
		if err != nil {
			return err
		}
		var mine, other *media
		for i := range found {
			if found[i].ours(job) {
				mine = &found[i]
				break
			}
			if other == nil {
				other = &found[i]
			}
		}
		switch {
		case mine != nil:
			d.log.Info("resuming this job's media found by external_id", "file", src.Path, "media", mine.ID, "status", mine.Status)
			cp.VendorID = mine.ID
			setExtra(cp, "external_id", ext)
			if hasBytes(mine.Status) {
				return d.markUploaded(ctx, src, cp, s)
			}
			return d.refreshHandles(ctx, src, cp, s, method)
		case other != nil:
			// The sidecar's external_id names a media another version
			// of this file made: replace its source (JW reupload), so
			// the media id stays and the new bytes are sent.
			d.log.Warn("external_id names an existing media from another version of the file: replacing its source", "file", src.Path, "media", other.ID, "external_id", ext)
			cp.VendorID = other.ID
			setExtra(cp, "external_id", ext)
			setExtra(cp, "reupload", "true")
			return d.refreshHandles(ctx, src, cp, s, method)
		}
		h, err := d.create(ctx, src, ext, job, method)
		if err == nil {
			cp.VendorID = h.ID
			setExtra(cp, "external_id", ext)
			return d.saveHandles(ctx, src, cp, s, method, h)
		}
		if uploader.IsPermanent(err) || try >= createTries {
			return err
		}
		wait := backoff
		if ra, ok := uploader.RetryAfter(err); ok {
			wait = ra
		}
		backoff *= 2
		if err := uploader.Sleep(ctx, min(wait, 30*time.Second)); err != nil {
			return err
		}
	}
}

// createTries bounds create attempts (each preceded by a lookup) within one
// Upload call; the job-level retry takes over after that.
const createTries = 5

// create sends one media create request.
func (d *Destination) create(ctx context.Context, src *uploader.Source, ext, job, method string) (uploadHandles, error) {
	var h uploadHandles
	body := map[string]any{
		"upload":   map[string]any{"method": method, "mime_type": uploader.ContentTypeFor(src.Path)},
		"metadata": d.metadata(src, ext, job),
	}
	data, err := json.Marshal(body)
	if err != nil {
		return h, uploader.Permanent(fmt.Errorf("jwplayer: create media for %s: encode: %w", src.Path, err))
	}
	_, err = uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: "jwplayer: create media for " + src.Path, Method: http.MethodPost, URL: d.createURL(),
		Header: d.bearer(d.o.APISecret), Body: data, Out: &h, MaxTries: 1,
	})
	if err != nil {
		return h, err
	}
	if h.ID == "" {
		return h, fmt.Errorf("jwplayer: create media for %s: answer has no id", src.Path)
	}
	return h, nil
}

// refreshHandles asks JW for new upload handles for the recorded media.
func (d *Destination) refreshHandles(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, method string) error {
	data, _ := json.Marshal(map[string]any{"upload": map[string]any{"method": method, "mime_type": uploader.ContentTypeFor(src.Path)}})
	var h uploadHandles
	_, err := uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: "jwplayer: reupload media " + cp.VendorID + " for " + src.Path, Method: http.MethodPut,
		URL: d.reuploadURL(cp.VendorID), Header: d.bearer(d.o.APISecret), Body: data, Out: &h,
	})
	if err != nil {
		return err
	}
	return d.saveHandles(ctx, src, cp, s, method, h)
}

func (d *Destination) saveHandles(ctx context.Context, src *uploader.Source, cp *uploader.Checkpoint, s uploader.Session, method string, h uploadHandles) error {
	for _, k := range []string{"upload_link", "secret_upload_link", "upload_id", "secret_upload_token"} {
		delete(cp.Extra, k)
	}
	cp.Parts, cp.PartSize = nil, 0
	setExtra(cp, "method", method)
	setExtra(cp, "mime_type", uploader.ContentTypeFor(src.Path))
	switch method {
	case "direct":
		if h.UploadLink == "" {
			return fmt.Errorf("jwplayer: upload %s: media %s: answer has no upload_link", src.Path, cp.VendorID)
		}
		setExtra(cp, "secret_upload_link", h.UploadLink)
	case "multipart":
		if h.UploadID == "" || h.UploadToken == "" {
			return fmt.Errorf("jwplayer: upload %s: media %s: answer lacks upload_id or upload_token", src.Path, cp.VendorID)
		}
		setExtra(cp, "upload_id", h.UploadID)
		setExtra(cp, "secret_upload_token", h.UploadToken)
		cp.PartSize = d.partSize(src.Size)
	}
	if err := s.Save(ctx, cp); err != nil {
		return fmt.Errorf("jwplayer: upload %s: save checkpoint: %w", src.Path, err)
	}
	d.log.Info("media created", "file", src.Path, "media", cp.VendorID, "method", method)
	return nil
}

// mimeType is the mime_type the saved handles were asked with (older
// checkpoints did not record it: the same function computed it).
func mimeType(cp *uploader.Checkpoint, src *uploader.Source) string {
	if v := cp.Extra["mime_type"]; v != "" {
		return v
	}
	return uploader.ContentTypeFor(src.Path)
}

// uploadLink is the saved presigned direct-upload link. It lets anyone
// write the media's source until it expires, so it is kept under a
// "secret_" key (redacted in status output); "upload_link" is read for
// checkpoints written before that.
func uploadLink(cp *uploader.Checkpoint) string {
	if v := cp.Extra["secret_upload_link"]; v != "" {
		return v
	}
	return cp.Extra["upload_link"]
}

func (d *Destination) metadata(src *uploader.Source, ext, job string) map[string]any {
	m := map[string]any{"external_id": ext}
	m["title"] = src.Meta.Title
	if src.Meta.Title == "" {
		m["title"] = stem(src)
	}
	if src.Meta.Description != "" {
		m["description"] = src.Meta.Description
	}
	if len(src.Meta.Tags) > 0 {
		m["tags"] = src.Meta.Tags
	}
	custom := map[string]string{jobParam: job}
	for k, v := range src.Meta.Custom {
		if k != jobParam {
			custom[k] = v
		}
	}
	m["custom_params"] = custom
	return m
}

func (d *Destination) findByExternalID(ctx context.Context, src *uploader.Source, ext string) ([]media, error) {
	var ans struct {
		Media *[]media `json:"media"`
	}
	op := "jwplayer: find media by external_id for " + src.Path
	_, err := uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: op, Method: http.MethodGet, URL: d.findURL(ext), Header: d.bearer(d.o.APISecret), Out: &ans,
	})
	if err != nil {
		return nil, err
	}
	if ans.Media == nil {
		return nil, fmt.Errorf("%s: answer has no media list", op)
	}
	var out []media
	for _, m := range *ans.Media {
		if m.ExternalID == ext || m.Metadata.ExternalID == ext {
			out = append(out, m)
		}
	}
	return out, nil
}

func (d *Destination) getMedia(ctx context.Context, src *uploader.Source, id string) (*media, error) {
	var m media
	_, err := uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: "jwplayer: get media " + id + " for " + src.Path, Method: http.MethodGet, URL: d.mediaURL(id),
		Header: d.bearer(d.o.APISecret), Out: &m,
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// direct PUTs the whole file and checks the ETag against its MD5. A saved
// link that is refused (expired) is replaced once through reupload.
func (d *Destination) direct(ctx context.Context, src *uploader.Source, f *os.File, cp *uploader.Checkpoint, s uploader.Session, resumed bool) error {
	op := "jwplayer: direct upload of " + src.Path
	for attempt := 0; ; attempt++ {
		var sent atomic.Int64
		var sum string
		err := d.withRetry(ctx, func() error {
			sent.Store(0)
			h := md5.New()
			// The link is presigned over the create's mime_type: the PUT
			// must carry exactly that Content-Type.
			etag, err := d.putBytes(ctx, op, uploadLink(cp), mimeType(cp, src), func() io.Reader {
				return &countingReader{r: io.TeeReader(io.NewSectionReader(f, 0, src.Size), h), n: &sent, tick: s.Progress}
			}, src.Size)
			if err != nil {
				return err
			}
			sum = hex.EncodeToString(h.Sum(nil))
			if etag != `"`+sum+`"` {
				return fmt.Errorf("%s: ETag %s does not match the file's MD5 %s", op, etag, sum)
			}
			return nil
		})
		var ae *uploader.APIError
		if err != nil && resumed && attempt == 0 && errors.As(err, &ae) && ae.Status == http.StatusForbidden {
			d.log.Warn("saved upload link refused: asking for a new one", "file", src.Path, "media", cp.VendorID)
			if err := d.refreshHandles(ctx, src, cp, s, "direct"); err != nil {
				return err
			}
			continue
		}
		if err == nil {
			cp.ETag = `"` + sum + `"`
		}
		return err
	}
}

// partSize is the configured part size, grown to stay within 10,000 parts.
func (d *Destination) partSize(size int64) int64 {
	ps := d.o.PartSize
	if need := (size + maxParts - 1) / maxParts; need > ps {
		ps = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return ps
}

type partLink struct {
	ID         int    `json:"id"`
	UploadLink string `json:"upload_link"`
	ETag       string `json:"etag"`
}

// listParts fetches the part links page by page until every part has one.
func (d *Destination) listParts(ctx context.Context, src *uploader.Source, uploadID, token string, parts int) (map[int]partLink, error) {
	links := map[int]partLink{}
	for page := 1; len(links) < parts; page++ {
		var ans struct {
			Parts []partLink `json:"parts"`
		}
		_, err := uploader.DoAPI(ctx, d.api, uploader.Call{
			Op: "jwplayer: list upload parts for " + src.Path, Method: http.MethodGet,
			URL: d.partsURL(uploadID, page), Header: d.bearer(token), Out: &ans,
		})
		if err != nil {
			return nil, err
		}
		for _, p := range ans.Parts {
			if p.ID >= 1 && p.ID <= parts {
				links[p.ID] = p
			}
		}
		if len(ans.Parts) < partsPageLength {
			break
		}
	}
	if len(links) < parts {
		return nil, fmt.Errorf("jwplayer: list upload parts for %s: got links for %d of %d parts", src.Path, len(links), parts)
	}
	return links, nil
}

// multipart uploads every part the server does not hold yet, then completes.
func (d *Destination) multipart(ctx context.Context, src *uploader.Source, f *os.File, cp *uploader.Checkpoint, s uploader.Session) error {
	uploadID, token := cp.Extra["upload_id"], cp.Extra["secret_upload_token"]
	ps := cp.PartSize
	if ps <= 0 {
		ps = d.partSize(src.Size)
		cp.PartSize = ps
	}
	n := int((src.Size + ps - 1) / ps)
	if n == 0 {
		n = 1
	}
	if n > maxParts {
		return uploader.Permanent(fmt.Errorf("jwplayer: upload %s: %d parts exceed the 10,000 limit", src.Path, n))
	}
	links, err := d.listParts(ctx, src, uploadID, token, n)
	if err != nil {
		return err
	}
	partLen := func(i int) int64 { return min(ps, src.Size-int64(i-1)*ps) }

	var mu sync.Mutex // guards cp and the session
	done := map[int32]uploader.Part{}
	var sent atomic.Int64
	var todo []int
	for i := 1; i <= n; i++ {
		sec := io.NewSectionReader(f, int64(i-1)*ps, partLen(i))
		if l := links[i]; l.ETag != "" {
			sum, err := md5Of(sec)
			if err != nil {
				return fmt.Errorf("jwplayer: upload %s: read part %d: %w", src.Path, i, err)
			}
			if strings.Trim(l.ETag, `"`) == sum {
				done[int32(i)] = uploader.Part{Number: int32(i), ETag: sum, Size: partLen(i)}
				sent.Add(partLen(i))
				continue
			}
		}
		todo = append(todo, i)
	}
	record := func(p uploader.Part) error {
		mu.Lock()
		defer mu.Unlock()
		done[p.Number] = p
		cp.Parts = sortedParts(done)
		return s.Save(ctx, cp)
	}
	if len(todo) < n {
		d.log.Info("resuming multipart upload", "file", src.Path, "media", cp.VendorID, "parts_done", n-len(todo), "parts", n)
		mu.Lock()
		cp.Parts = sortedParts(done)
		mu.Unlock()
	}
	s.Progress(sent.Load())

	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	errs := make(chan error, d.o.Concurrency)
	var wg sync.WaitGroup
	for range min(d.o.Concurrency, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				sum, err := d.putPart(ctx2, src, f, links[i].UploadLink, i, int64(i-1)*ps, partLen(i), &sent, s)
				if err == nil {
					if err = record(uploader.Part{Number: int32(i), ETag: sum, Size: partLen(i)}); err != nil {
						err = fmt.Errorf("jwplayer: upload %s: save checkpoint: %w", src.Path, err)
					}
				}
				if err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, i := range todo {
		select {
		case jobs <- i:
		case <-ctx2.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("jwplayer: upload %s: %w", src.Path, err)
	}
	// Never complete an upload whose parts mix two versions of the file.
	if err := unchanged(f, src); err != nil {
		return err
	}
	_, err = uploader.DoAPI(ctx, d.api, uploader.Call{
		Op: "jwplayer: complete multipart upload of " + src.Path, Method: http.MethodPut,
		URL: d.completeURL(uploadID), Header: d.bearer(token),
	})
	return err
}

func (d *Destination) putPart(ctx context.Context, src *uploader.Source, f *os.File, link string, i int, off, n int64, sent *atomic.Int64, s uploader.Session) (string, error) {
	if link == "" {
		return "", fmt.Errorf("jwplayer: upload %s: part %d has no upload_link", src.Path, i)
	}
	op := fmt.Sprintf("jwplayer: upload %s part %d", src.Path, i)
	var sum string
	err := d.withRetry(ctx, func() error {
		var here atomic.Int64
		h := md5.New()
		etag, err := d.putBytes(ctx, op, link, "", func() io.Reader {
			here.Store(0)
			return &countingReader{r: io.TeeReader(io.NewSectionReader(f, off, n), h), n: &here, tick: func(int64) {}}
		}, n)
		if err != nil {
			return err
		}
		sum = hex.EncodeToString(h.Sum(nil))
		if etag != `"`+sum+`"` {
			return fmt.Errorf("%s: ETag %s does not match the part's MD5 %s", op, etag, sum)
		}
		return nil
	})
	if err == nil {
		s.Progress(sent.Add(n))
	}
	return sum, err
}

func md5Of(r io.Reader) (string, error) {
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sortedParts(m map[int32]uploader.Part) []uploader.Part {
	out := make([]uploader.Part, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Number < out[b].Number })
	return out
}
