package config

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/internal/keytmpl"
)

// Destination types.
const (
	TypeS3           = "s3"
	TypeBlueBillywig = "bluebillywig"
	TypeJWPlayer     = "jwplayer"
	TypeWistia       = "wistia"
	TypeSkylark      = "skylark"
)

var destTypes = []string{TypeS3, TypeBlueBillywig, TypeJWPlayer, TypeWistia, TypeSkylark}

// s3Keys are the keys of every type that writes to S3 itself.
var s3Keys = []string{
	"bucket", "key", "region", "endpoint", "path_style",
	"access_key_id", "secret_access_key", "session_token", "profile",
	"acl", "content_type", "content_disposition", "cache_control", "storage_class",
	"metadata", "sse", "sse_kms_key_id", "checksum", "on_conflict",
}

// platformKeys are the keys of the video platform types.
var platformKeys = []string{
	"publication", "account", "api_key_id", "api_secret", "api_url", "upload_url",
	"api", "site_id", "api_key", "token", "project_id", "contact_id", "description",
	"wait_for", "register_timeout", "poll_interval",
}

// acls are the canned ACLs accepted by `acl`.
var acls = []string{
	"private", "public-read", "public-read-write", "authenticated-read",
	"bucket-owner-full-control", "aws-exec-read", "bucket-owner-read",
}

var storageClasses = []string{
	"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
	"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "EXPRESS_ONEZONE", "SNOW",
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	bucketRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$`)
	regionRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	urlSafeID  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	bbAccount  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	kmsKeyChar = regexp.MustCompile(`^[A-Za-z0-9:/_+=.@-]+$`)
)

func buildDestination(name string, t *table) *Destination {
	d := &Destination{Name: name}
	typ, ok := t.str("type")
	switch {
	case !ok && !t.has("type"):
		t.errf("type", "required: one of %s", quoteList(destTypes))
	case ok && !slices.Contains(destTypes, typ):
		t.errf("type", "%q is not one of %s", typ, quoteList(destTypes))
	}
	if !slices.Contains(destTypes, typ) {
		// Without a type nothing else can be judged; do not pile up
		// "unknown key" noise on top of the one real problem.
		return d
	}
	d.Type = typ

	switch typ {
	case TypeS3:
		d.S3 = buildS3(t, typ)
	case TypeBlueBillywig:
		buildBlueBillywig(t, d)
	case TypeJWPlayer:
		buildJWPlayer(t, d)
	case TypeWistia:
		d.S3 = buildS3(t, typ)
		d.Token = required(t, "token")
		d.UploadURL = urlKey(t, "upload_url", "https://upload.wistia.com")
		d.APIURL = urlKey(t, "api_url", "https://api.wistia.com")
		d.ProjectID = plain(t, "project_id")
		d.ContactID = plain(t, "contact_id")
		d.Description, _ = t.str("description")
		d.WaitFor = t.oneOf("wait_for", "", "", "ready")
		registerTiming(t, d, 2*time.Hour, 15*time.Second)
	case TypeSkylark:
		d.S3 = buildS3(t, typ)
		d.APIURL = urlKey(t, "api_url", "")
		d.Token = t.secret("token")
		if d.APIURL != "" && missing(t, "token") {
			t.errf("token", "required when api_url is set")
		}
		d.WaitFor = t.oneOf("wait_for", "processed", "", "processed")
		registerTiming(t, d, 2*time.Hour, 15*time.Second)
	}

	t.unknown(func(k string) string {
		switch {
		case k == "key" && typ == TypeBlueBillywig:
			return "not a key of type bluebillywig: the platform fixes the object key (upload/<account>/<name>)"
		case slices.Contains(s3Keys, k) || slices.Contains(platformKeys, k):
			return "not a key of type " + typ
		}
		return ""
	})
	return d
}

// required reads a secret that must be set.
func required(t *table, k string) Secret {
	if missing(t, k) {
		t.errf(k, "required")
		return Secret{}
	}
	return t.secret(k)
}

// missing reports whether k is absent or an empty string. A value of the
// wrong type is not missing: it is reported as such when read.
func missing(t *table, k string) bool {
	v, ok := t.get(k)
	return !ok || v == ""
}

// plain reads an identifier that goes into URLs or headers verbatim.
func plain(t *table, k string) string {
	s, ok := t.str(k)
	if ok && s != "" && !urlSafeID.MatchString(s) {
		t.errf(k, "%q must match [A-Za-z0-9_-]+", s)
		return ""
	}
	return s
}

// urlKey reads an http(s) base URL, without its trailing slash so that
// clients can append paths.
func urlKey(t *table, k, def string) string {
	s := t.strOr(k, def)
	if s == "" {
		return ""
	}
	if err := checkURL(s); err != nil {
		t.errf(k, "%v", err)
		return def
	}
	return strings.TrimRight(s, "/")
}

func registerTiming(t *table, d *Destination, timeout, poll time.Duration) {
	d.RegisterTimeout = t.duration("register_timeout", timeout, 0)
	d.PollInterval = t.duration("poll_interval", poll, 0)
	if d.RegisterTimeout <= 0 {
		t.errf("register_timeout", "must be greater than zero")
	}
	if d.PollInterval <= 0 {
		t.errf("poll_interval", "must be greater than zero")
	} else if d.PollInterval > d.RegisterTimeout && d.RegisterTimeout > 0 {
		t.errf("poll_interval", "%s is longer than register_timeout (%s)", d.PollInterval, d.RegisterTimeout)
	}
}

func buildBlueBillywig(t *table, d *Destination) {
	if missing(t, "publication") {
		t.errf("publication", "required")
	} else if p, ok := t.str("publication"); !ok {
		// wrong type, reported
	} else if !dnsLabel.MatchString(p) {
		t.errf("publication", "%q is not a DNS label (lower-case letters, digits, -)", p)
	} else {
		d.Publication = p
	}
	if missing(t, "account") {
		t.errf("account", "required")
	} else if a, ok := t.str("account"); !ok {
		// wrong type, reported
	} else if !bbAccount.MatchString(a) || a == "." || a == ".." {
		t.errf("account", "%q must match [A-Za-z0-9._-]+: it becomes part of the object key", a)
	} else {
		d.Account = a
	}
	if missing(t, "api_key_id") {
		t.errf("api_key_id", "required")
	} else if id, ok := t.str("api_key_id"); !ok {
		// wrong type, reported
	} else if err := headerValue(id); err != nil || strings.ContainsAny(id, " \t") {
		t.errf("api_key_id", "must be a printable ASCII word: it goes into the rpctoken header")
	} else {
		d.APIKeyID = id
	}
	d.APISecret = required(t, "api_secret")
	def := ""
	if d.Publication != "" {
		def = "https://" + d.Publication + ".bbvms.com"
	}
	d.APIURL = urlKey(t, "api_url", def)
	registerTiming(t, d, 30*time.Minute, 10*time.Second)

	d.S3 = buildS3(t, TypeBlueBillywig)
	if d.S3.Bucket == "" && d.Publication != "" {
		d.S3.Bucket = "mm." + d.Publication + ".bbvms.com"
	}
	// The platform reads uploads through public URLs.
	if d.S3.ACL != "" && d.S3.ACL != "public-read" {
		t.errf("acl", "must be \"public-read\" for type bluebillywig (the platform fetches the upload publicly)")
	}
	d.S3.ACL = "public-read"
}

func buildJWPlayer(t *table, d *Destination) {
	d.API = t.oneOf("api", "v2", "v2", "v1")
	siteID := plain(t, "site_id")
	apiKey := plain(t, "api_key")
	switch d.API {
	case "v2":
		if missing(t, "site_id") {
			t.errf("site_id", "required for api = \"v2\"")
		}
		if t.has("api_key") {
			t.errf("api_key", "only used with api = \"v1\"; v2 authenticates with api_secret alone")
		}
		d.SiteID = siteID
		d.APIURL = urlKey(t, "api_url", "https://api.jwplayer.com")
	case "v1":
		if missing(t, "api_key") {
			t.errf("api_key", "required for api = \"v1\"")
		}
		if t.has("site_id") {
			t.errf("site_id", "only used with api = \"v2\"")
		}
		d.APIKey = apiKey
		d.APIURL = urlKey(t, "api_url", "https://api.jwplatform.com")
	}
	d.APISecret = required(t, "api_secret")
	d.UploadURL = urlKey(t, "upload_url", "")
	d.WaitFor = t.oneOf("wait_for", "", "", "ready")
	registerTiming(t, d, 2*time.Hour, 15*time.Second)
}

func buildS3(t *table, typ string) S3 {
	s := S3{
		Region:    t.strOr("region", DefaultRegion),
		PathStyle: t.boolean("path_style", false),
		Checksum:  t.oneOf("checksum", "crc32c", "crc32c", "md5", "none"),
		SSE:       t.oneOf("sse", "", "", "AES256", "aws:kms"),
		// A key taken by an object another job wrote: keep both (suffix),
		// fail the upload, or replace it.
		OnConflict: t.oneOf("on_conflict", "suffix", "suffix", "fail", "overwrite"),
	}
	if b, ok := t.str("bucket"); ok && b != "" {
		if !bucketRE.MatchString(b) {
			t.errf("bucket", "%q is not a bucket name (3-63 letters, digits, '.', '-', '_')", b)
		} else {
			s.Bucket = b
		}
	} else if typ != TypeBlueBillywig && missing(t, "bucket") {
		t.errf("bucket", "required")
	}
	if typ != TypeBlueBillywig {
		s.Key = t.strOr("key", DefaultKeyTemplate)
		if err := keytmpl.Validate(s.Key); err != nil {
			t.errf("key", "%v", err)
		}
	}
	if !regionRE.MatchString(s.Region) {
		t.errf("region", "%q is not a region name", s.Region)
	}
	if e, ok := t.str("endpoint"); ok && e != "" {
		if err := checkURL(e); err != nil {
			t.errf("endpoint", "%v", err)
		} else {
			s.Endpoint = strings.TrimRight(e, "/")
		}
	}

	// The access key id is an identifier, not a secret, but operators keep
	// it next to the secret key, so it may come from ${ENV} or file: too.
	if v, ok := t.str("access_key_id"); ok && v != "" && !t.p.skipSecrets {
		if sec, _, err := resolveSecret(v); err != nil {
			t.errf("access_key_id", "%v", err)
		} else {
			s.AccessKeyID = sec.Value()
		}
	}
	s.SecretAccessKey = t.secret("secret_access_key")
	s.SessionToken = t.secret("session_token")
	s.Profile, _ = t.str("profile")
	hasID := s.AccessKeyID != "" || nonEmpty(t, "access_key_id")
	hasKey := s.SecretAccessKey.IsSet() || nonEmpty(t, "secret_access_key")
	switch {
	case hasID && !hasKey:
		t.errf("secret_access_key", "required when access_key_id is set")
	case hasKey && !hasID:
		t.errf("access_key_id", "required when secret_access_key is set")
	}
	if (s.SessionToken.IsSet() || nonEmpty(t, "session_token")) && !hasID {
		t.errf("session_token", "only used with access_key_id and secret_access_key")
	}
	if s.Profile != "" && (hasID || hasKey) {
		t.errf("profile", "cannot be combined with access_key_id/secret_access_key: choose one source of credentials")
	}

	if a, ok := t.str("acl"); ok && a != "" {
		if !slices.Contains(acls, a) {
			t.errf("acl", "%q is not one of %s", a, quoteList(acls))
		} else {
			s.ACL = a
		}
	}
	if sc, ok := t.str("storage_class"); ok && sc != "" {
		if !slices.Contains(storageClasses, sc) {
			t.errf("storage_class", "%q is not one of %s", sc, quoteList(storageClasses))
		} else {
			s.StorageClass = sc
		}
	}
	if ct, ok := t.str("content_type"); ok && ct != "" {
		if err := contentType(ct); err != nil {
			t.errf("content_type", "%v", err)
		} else {
			s.ContentType = ct
		}
	}
	for _, h := range []struct {
		k   string
		dst *string
	}{{"content_disposition", &s.ContentDisposition}, {"cache_control", &s.CacheControl}} {
		if v, ok := t.str(h.k); ok && v != "" {
			if err := headerValue(v); err != nil {
				t.errf(h.k, "%v", err)
			} else {
				*h.dst = v
			}
		}
	}
	if k, ok := t.str("sse_kms_key_id"); ok && k != "" {
		switch {
		case s.SSE != "aws:kms":
			t.errf("sse_kms_key_id", "only used with sse = \"aws:kms\"")
		case !kmsKeyChar.MatchString(k):
			t.errf("sse_kms_key_id", "%q is not a KMS key id or ARN", k)
		default:
			s.SSEKMSKeyID = k
		}
	}
	if t.has("metadata") {
		mt := t.sub("metadata")
		keys := make([]string, 0, len(mt.m))
		for k := range mt.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v, ok := mt.str(k)
			if !ok {
				continue
			}
			if !headerToken(k) {
				mt.errf(k, "metadata name must be an HTTP header token (letters, digits, !#$%%&'*+-.^_`|~)")
				continue
			}
			if err := headerValue(v); err != nil {
				mt.errf(k, "%v", err)
				continue
			}
			if s.Metadata == nil {
				s.Metadata = map[string]string{}
			}
			s.Metadata[k] = v
		}
	}
	return s
}

// nonEmpty reports whether k holds a non-empty string, valid or not, so a
// broken secret reference is not also reported as "missing".
func nonEmpty(t *table, k string) bool {
	s, ok := t.m[k].(string)
	return ok && s != ""
}
