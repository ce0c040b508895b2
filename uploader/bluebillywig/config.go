package bluebillywig

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

var (
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	accountRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// Declare declares the "bluebillywig" destination type: its keys, defaults,
// checks and secrets.
func Declare() uploader.DestinationType {
	return uploader.DestinationType{Name: Type, Decode: decode, SidecarKey: true}
}

type settings struct {
	publication, account, keyID, apiURL string
	secret                              table.Secret
	timeout, poll                       time.Duration
	s3                                  s3engine.S3Settings
}

func decode(t *table.Table) uploader.Settings {
	s := &settings{}
	if t.Missing("publication") {
		t.Errf("publication", "required")
	} else if p, ok := t.Str("publication"); ok {
		if !dnsLabel.MatchString(p) {
			t.Errf("publication", "%q is not a DNS label (lower-case letters, digits, -)", p)
		} else {
			s.publication = p
		}
	}
	if t.Missing("account") {
		t.Errf("account", "required")
	} else if a, ok := t.Str("account"); ok {
		if !accountRE.MatchString(a) || a == "." || a == ".." {
			t.Errf("account", "%q must match [A-Za-z0-9._-]+: it becomes part of the object key", a)
		} else {
			s.account = a
		}
	}
	// The key id may also come inside the secret ("<id>-<hex>", the form
	// the official SDKs take).
	if id, ok := t.Str("api_key_id"); ok && id != "" {
		if err := table.HeaderValue(id); err != nil || strings.ContainsAny(id, " \t-") {
			t.Errf("api_key_id", "must be a printable ASCII word without '-': it goes into the rpctoken header")
		} else {
			s.keyID = id
		}
	}
	s.secret = t.Required("api_secret")
	if s.keyID == "" && s.secret.IsSet() && !t.SkipSecrets() {
		// The id part is an identifier, not a secret: show it.
		if id, rest, ok := strings.Cut(s.secret.Value(), "-"); !ok || id == "" || rest == "" {
			t.Errf("api_key_id", "required unless api_secret has the form <id>-<secret>")
		} else {
			s.keyID = id
		}
	}
	def := ""
	if s.publication != "" {
		def = "https://" + s.publication + ".bbvms.com"
	}
	s.apiURL = t.URL("api_url", def)
	s.timeout, s.poll = t.Timing(defaultRegisterTimeout, defaultPollInterval)
	s.s3 = s3engine.DecodeS3(t, s3engine.S3Keys{BucketOptional: true,
		NoKeyReason: "not a key of type bluebillywig: the platform fixes the object key (upload/<account>/<name>)"})
	if s.s3.Options.Bucket == "" && s.publication != "" {
		s.s3.Options.Bucket = "mm." + s.publication + ".bbvms.com"
	}
	// The platform reads uploads through public URLs.
	if acl := s.s3.Options.ACL; acl != "" && acl != "public-read" {
		t.Errf("acl", "must be \"public-read\" for type bluebillywig (the platform fetches the upload publicly)")
	}
	s.s3.Options.ACL = "public-read"
	return s
}

func (s *settings) Fields() []uploader.Field {
	return append([]uploader.Field{
		{Key: "publication", Value: s.publication},
		{Key: "account", Value: s.account},
		{Key: "api_key_id", Value: s.keyID},
		{Key: "api_secret", Value: s.secret, Secret: true},
		{Key: "api_url", Value: s.apiURL},
		{Key: "register_timeout", Value: s.timeout},
		{Key: "poll_interval", Value: s.poll},
	}, s.s3.Fields()...)
}

func (s *settings) Build(ctx context.Context, env uploader.BuildEnv) (uploader.Destination, error) {
	eng, _, err := s.s3.Engine(ctx, env)
	if err != nil {
		return nil, err
	}
	return New(Options{
		Name: env.Name, Publication: s.publication, Account: s.account,
		APIKeyID: s.keyID, APISecret: s.secret.Value(), APIURL: s.apiURL,
		PollInterval: s.poll, RegisterTimeout: s.timeout,
		S3: eng, HTTPClient: env.APIClient, Logger: env.Logger,
	})
}
