package s3engine

import (
	"context"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/internal/keytmpl"
	"github.com/watchfolder/watchfolder/uploader"
)

// DefaultKeyTemplate is the plain S3 destination's default object key.
const DefaultKeyTemplate = "{folder}/{relpath}"

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
	bucketRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$`)
	regionRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	kmsKeyChar = regexp.MustCompile(`^[A-Za-z0-9:/_+=.@-]+$`)
	hostPort   = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$`)
)

// S3Keys describes how a destination type uses the shared S3 keys.
type S3Keys struct {
	// KeyTemplate is the default of `key`; "" means the type fixes the
	// object key itself and refuses a `key`.
	KeyTemplate string
	// NoKeyReason explains why `key` is refused when KeyTemplate is "".
	NoKeyReason string
	// BucketOptional: the type derives the bucket when none is given.
	BucketOptional bool
}

// S3Settings are the validated S3 keys of one destination.
type S3Settings struct {
	Options     S3Options
	KeyTemplate string // "" when the type fixes keys
	Secure      bool
	// endpoint as written (a URL, or a bare host that Secure completes)
	endpoint     string
	secretKey    table.Secret
	sessionToken table.Secret
	hasKey       bool
}

// DecodeS3 reads the S3 keys every S3-writing destination type shares.
func DecodeS3(t *table.Table, k S3Keys) S3Settings {
	s := S3Settings{Options: S3Options{
		Region:    t.StrOr("region", ""),
		PathStyle: t.Boolean("path_style", false),
		Checksum:  t.OneOf("checksum", "crc32c", "crc32c", "md5", "none"),
		SSE:       t.OneOf("sse", "", "", "AES256", "aws:kms"),
		Anonymous: t.Boolean("anonymous", false),
	}, Secure: t.Boolean("secure", true), hasKey: k.KeyTemplate != ""}
	o := &s.Options
	if b, ok := t.Str("bucket"); ok && b != "" {
		if !bucketRE.MatchString(b) {
			t.Errf("bucket", "%q is not a bucket name (3-63 letters, digits, '.', '-', '_')", b)
		} else {
			o.Bucket = b
		}
	} else if !k.BucketOptional && t.Missing("bucket") {
		t.Errf("bucket", "required")
	}
	if k.KeyTemplate != "" {
		s.KeyTemplate = t.StrOr("key", k.KeyTemplate)
		if err := keytmpl.Validate(s.KeyTemplate); err != nil {
			t.Errf("key", "%v", err)
		}
		// Types that fix their own unique keys never meet a taken key.
		o.OnConflict = t.OneOf("on_conflict", ConflictSuffix, ConflictSuffix, ConflictFail, ConflictOverwrite)
	} else if t.Has("key") {
		t.Get("key")
		t.Errf("key", "%s", k.NoKeyReason)
	}
	if o.Region != "" && !regionRE.MatchString(o.Region) {
		t.Errf("region", "%q is not a region name", o.Region)
	}
	if e, ok := t.Str("endpoint"); ok && e != "" {
		s.endpoint = e
		if strings.Contains(e, "://") {
			if err := table.CheckURL(e); err != nil {
				t.Errf("endpoint", "%v", err)
			} else {
				o.Endpoint = strings.TrimRight(e, "/")
				u, _ := url.Parse(o.Endpoint)
				if t.Has("secure") && s.Secure != (u.Scheme == "https") {
					t.Errf("secure", "contradicts the endpoint's %s:// scheme; give a bare host with secure, or a URL", u.Scheme)
				}
				s.Secure = u.Scheme == "https"
			}
		} else if !hostPort.MatchString(e) {
			t.Errf("endpoint", "%q is neither an http(s) URL nor a host[:port]", e)
		} else {
			// A bare host, as S3-destination documents write it
			// (s3host); secure chooses the scheme.
			scheme := "https://"
			if !s.Secure {
				scheme = "http://"
			}
			o.Endpoint = scheme + e
		}
	} else if t.Has("secure") {
		t.Errf("secure", "only used with a bare-host endpoint")
	}

	// The access key id is an identifier, not a secret, but operators keep
	// it next to the secret key, so it may come from ${ENV} or file: too.
	if v, ok := t.Str("access_key_id"); ok && v != "" && !t.SkipSecrets() {
		if sec, _, err := table.ResolveSecret(v); err != nil {
			t.Errf("access_key_id", "%v", err)
		} else {
			o.AccessKeyID = sec.Value()
		}
	}
	// Secret values stay inside table.Secret (which never prints them)
	// until Engine hands them to the SDK.
	s.secretKey = t.Secret("secret_access_key")
	s.sessionToken = t.Secret("session_token")
	o.Profile, _ = t.Str("profile")
	hasID := o.AccessKeyID != "" || t.NonEmpty("access_key_id")
	hasSecret := s.secretKey.IsSet() || t.NonEmpty("secret_access_key")
	switch {
	case hasID && !hasSecret:
		t.Errf("secret_access_key", "required when access_key_id is set")
	case hasSecret && !hasID:
		t.Errf("access_key_id", "required when secret_access_key is set")
	}
	if (s.sessionToken.IsSet() || t.NonEmpty("session_token")) && !hasID {
		t.Errf("session_token", "only used with access_key_id and secret_access_key")
	}
	if o.Profile != "" && (hasID || hasSecret) {
		t.Errf("profile", "cannot be combined with access_key_id/secret_access_key: choose one source of credentials")
	}
	if o.Anonymous && (hasID || hasSecret || o.Profile != "") {
		t.Errf("anonymous", "sends unsigned requests: remove access_key_id/secret_access_key/profile, or anonymous")
	}

	if a, ok := t.Str("acl"); ok && a != "" {
		if !slices.Contains(acls, a) {
			t.Errf("acl", "%q is not one of %s", a, table.QuoteList(acls))
		} else {
			o.ACL = a
		}
	}
	if sc, ok := t.Str("storage_class"); ok && sc != "" {
		if !slices.Contains(storageClasses, sc) {
			t.Errf("storage_class", "%q is not one of %s", sc, table.QuoteList(storageClasses))
		} else {
			o.StorageClass = sc
		}
	}
	if ct, ok := t.Str("content_type"); ok && ct != "" {
		if err := table.ContentType(ct); err != nil {
			t.Errf("content_type", "%v", err)
		} else {
			o.ContentType = ct
		}
	}
	for _, h := range []struct {
		k   string
		dst *string
	}{{"content_disposition", &o.ContentDisposition}, {"cache_control", &o.CacheControl}} {
		if v, ok := t.Str(h.k); ok && v != "" {
			if err := table.HeaderValue(v); err != nil {
				t.Errf(h.k, "%v", err)
			} else {
				*h.dst = v
			}
		}
	}
	if kid, ok := t.Str("sse_kms_key_id"); ok && kid != "" {
		switch {
		case o.SSE != "aws:kms":
			t.Errf("sse_kms_key_id", "only used with sse = \"aws:kms\"")
		case !kmsKeyChar.MatchString(kid):
			t.Errf("sse_kms_key_id", "%q is not a KMS key id or ARN", kid)
		default:
			o.SSEKMSKeyID = kid
		}
	}
	if t.Has("metadata") {
		mt := t.Sub("metadata")
		for _, k := range mt.Keys() {
			v, ok := mt.Str(k)
			if !ok {
				continue
			}
			if !table.HeaderToken(k) {
				mt.Errf(k, "metadata name must be an HTTP header token (letters, digits, !#$%%&'*+-.^_`|~)")
				continue
			}
			if err := table.HeaderValue(v); err != nil {
				mt.Errf(k, "%v", err)
				continue
			}
			if o.Metadata == nil {
				o.Metadata = map[string]string{}
			}
			o.Metadata[k] = v
		}
	}
	return s
}

// Fields lists the S3 keys for `check`.
func (s S3Settings) Fields() []uploader.Field {
	o := s.Options
	f := []uploader.Field{{Key: "bucket", Value: o.Bucket}}
	if s.hasKey {
		f = append(f, uploader.Field{Key: "key", Value: s.KeyTemplate},
			uploader.Field{Key: "on_conflict", Value: o.OnConflict})
	}
	f = append(f,
		uploader.Field{Key: "region", Value: o.Region},
		uploader.Field{Key: "endpoint", Value: s.endpoint},
	)
	if s.endpoint != "" && !strings.Contains(s.endpoint, "://") {
		f = append(f, uploader.Field{Key: "secure", Value: s.Secure})
	}
	meta := o.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return append(f,
		uploader.Field{Key: "path_style", Value: o.PathStyle},
		uploader.Field{Key: "anonymous", Value: o.Anonymous},
		uploader.Field{Key: "access_key_id", Value: o.AccessKeyID},
		uploader.Field{Key: "secret_access_key", Value: s.secretKey, Secret: true},
		uploader.Field{Key: "session_token", Value: s.sessionToken, Secret: true},
		uploader.Field{Key: "profile", Value: o.Profile},
		uploader.Field{Key: "acl", Value: o.ACL},
		uploader.Field{Key: "content_type", Value: o.ContentType},
		uploader.Field{Key: "content_disposition", Value: o.ContentDisposition},
		uploader.Field{Key: "cache_control", Value: o.CacheControl},
		uploader.Field{Key: "storage_class", Value: o.StorageClass},
		uploader.Field{Key: "metadata", Value: meta},
		uploader.Field{Key: "sse", Value: o.SSE},
		uploader.Field{Key: "sse_kms_key_id", Value: o.SSEKMSKeyID},
		uploader.Field{Key: "checksum", Value: o.Checksum},
	)
}

// Engine builds the transfer engine: the region is resolved once (see
// ResolveRegion) and kept for the destination's life.
// It returns the region it signs for.
func (s S3Settings) Engine(ctx context.Context, env uploader.BuildEnv) (*S3, string, error) {
	o := s.Options
	o.SecretAccessKey, o.SessionToken = s.secretKey.Value(), s.sessionToken.Value()
	region, err := ResolveRegion(ctx, o)
	if err != nil && env.Logger != nil {
		env.Logger.Warn("could not find the bucket's region; signing for "+region, "bucket", o.Bucket, "err", err)
	}
	o.Region = region
	t := env.Transfer
	eng, err := NewS3(ctx, o, EngineOptions{
		PartSize: t.PartSize, Concurrency: t.Concurrency, MultipartThreshold: t.MultipartThreshold,
		MaxFiles: t.MaxFiles, Limiter: t.Limiter, Logger: env.Logger,
	})
	if err != nil {
		return nil, "", err
	}
	return eng, region, nil
}

// DeclareS3 declares the plain "s3" destination type.
func DeclareS3() uploader.DestinationType {
	return uploader.DestinationType{Name: "s3", Decode: func(t *table.Table) uploader.Settings {
		return s3DestSettings{DecodeS3(t, S3Keys{KeyTemplate: DefaultKeyTemplate})}
	}}
}

type s3DestSettings struct{ s3 S3Settings }

func (s s3DestSettings) Fields() []uploader.Field { return s.s3.Fields() }

func (s s3DestSettings) Build(ctx context.Context, env uploader.BuildEnv) (uploader.Destination, error) {
	eng, _, err := s.s3.Engine(ctx, env)
	if err != nil {
		return nil, err
	}
	return NewS3Destination(env.Name, s.s3.KeyTemplate, eng), nil
}
