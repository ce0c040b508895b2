package jwplayer

import (
	"context"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
)

// Declare declares the "jwplayer" destination type: its keys, defaults,
// checks and secrets. JW takes the bytes itself: no S3 keys.
func Declare() uploader.DestinationType {
	return uploader.DestinationType{Name: Type, Decode: decode, SidecarKey: true}
}

type settings struct {
	api, siteID, apiKey, apiURL, uploadURL, waitFor string
	secret                                          table.Secret
	threshold                                       int64
	timeout, poll                                   time.Duration
}

func decode(t *table.Table) uploader.Settings {
	s := &settings{api: t.OneOf("api", "v2", "v2", "v1")}
	siteID, apiKey := t.ID("site_id"), t.ID("api_key")
	switch s.api {
	case "v2":
		if t.Missing("site_id") {
			t.Errf("site_id", "required for api = \"v2\"")
		}
		if t.Has("api_key") {
			t.Errf("api_key", "only used with api = \"v1\"; v2 authenticates with api_secret alone")
		}
		s.siteID = siteID
		s.apiURL = t.URL("api_url", "https://api.jwplayer.com")
	case "v1":
		if t.Missing("api_key") {
			t.Errf("api_key", "required for api = \"v1\"")
		}
		if t.Has("site_id") {
			t.Errf("site_id", "only used with api = \"v2\"")
		}
		s.apiKey = apiKey
		s.apiURL = t.URL("api_url", "https://api.jwplatform.com")
	}
	s.secret = t.Required("api_secret")
	s.uploadURL = t.URL("upload_url", "")
	s.waitFor = t.OneOf("wait_for", "", "", "ready")
	// JW's guidance: direct upload for files of 100 MB or less (a direct
	// upload restarts from zero after any error), multipart above.
	s.threshold = t.SizeIn("multipart_threshold", defaultMultipartAbove, minPartSize, defaultDirectLimit)
	if s.api == "v1" && t.Has("multipart_threshold") {
		t.Errf("multipart_threshold", "only used with api = \"v2\" (v1 has no multipart upload)")
	}
	s.timeout, s.poll = t.Timing(defaultRegisterTimeout, defaultPollInterval)
	return s
}

func (s *settings) Fields() []uploader.Field {
	f := []uploader.Field{{Key: "api", Value: s.api}}
	if s.api == "v1" {
		f = append(f, uploader.Field{Key: "api_key", Value: s.apiKey})
	} else {
		f = append(f, uploader.Field{Key: "site_id", Value: s.siteID})
	}
	f = append(f,
		uploader.Field{Key: "api_secret", Value: s.secret, Secret: true},
		uploader.Field{Key: "api_url", Value: s.apiURL},
		uploader.Field{Key: "upload_url", Value: s.uploadURL},
		uploader.Field{Key: "wait_for", Value: s.waitFor},
	)
	if s.api == "v2" {
		f = append(f, uploader.Field{Key: "multipart_threshold", Value: table.FormatSize(s.threshold)})
	}
	return append(f,
		uploader.Field{Key: "register_timeout", Value: s.timeout},
		uploader.Field{Key: "poll_interval", Value: s.poll},
	)
}

func (s *settings) Build(ctx context.Context, env uploader.BuildEnv) (uploader.Destination, error) {
	return New(Options{
		Name: env.Name, API: s.api, SiteID: s.siteID, APIKey: s.apiKey,
		APISecret: s.secret.Value(), APIURL: s.apiURL, UploadURL: s.uploadURL,
		WaitFor: s.waitFor, PollInterval: s.poll, RegisterTimeout: s.timeout,
		PartSize: env.Transfer.PartSize, Concurrency: env.Transfer.Concurrency,
		MultipartThreshold: s.threshold, Logger: env.Logger,
	})
}
