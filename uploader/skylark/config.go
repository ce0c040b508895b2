package skylark

import (
	"context"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Declare declares the "skylark" destination type: its keys, defaults,
// checks and secrets.
func Declare() uploader.DestinationType {
	return uploader.DestinationType{Name: "skylark", Decode: decode, SidecarKey: true}
}

type settings struct {
	apiURL, waitFor string
	token           table.Secret
	timeout, poll   time.Duration
	s3              s3engine.S3Settings
}

func decode(t *table.Table) uploader.Settings {
	s := &settings{s3: s3engine.DecodeS3(t, s3engine.S3Keys{KeyTemplate: DefaultKeyTemplate})}
	// Skylark ingests what is dropped at the bucket root (the documented
	// `aws s3 cp my-video.mp4 <bucket>`); an object under a prefix may
	// never be picked up, and the job would wait for processed/ in vain.
	if k := s.s3.KeyTemplate; strings.Contains(k, "/") || strings.Contains(k, "{relpath}") || strings.Contains(k, "{dir}") {
		t.Warn("key", "%q puts objects under a prefix; Skylark ingests only objects at the bucket root (use \"{name}\")", k)
	}
	if strings.HasPrefix(s.s3.KeyTemplate, processedPrefix) {
		t.Errf("key", "%q would write into the platform's %s prefix", s.s3.KeyTemplate, processedPrefix)
	}
	s.apiURL = t.URL("api_url", "")
	s.token = t.Secret("token")
	if s.apiURL != "" && t.Missing("token") {
		t.Errf("token", "required when api_url is set")
	}
	s.waitFor = t.OneOf("wait_for", "processed", "processed", "none")
	s.timeout, s.poll = t.Timing(DefaultRegisterTimeout, DefaultPollInterval)
	return s
}

func (s *settings) Fields() []uploader.Field {
	return append([]uploader.Field{
		{Key: "api_url", Value: s.apiURL},
		{Key: "token", Value: s.token, Secret: true},
		{Key: "wait_for", Value: s.waitFor},
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
		Name: env.Name, KeyTemplate: s.s3.KeyTemplate, S3: eng, WaitFor: s.waitFor,
		APIURL: s.apiURL, Token: s.token.Value(),
		PollInterval: s.poll, RegisterTimeout: s.timeout,
		HTTPClient: env.APIClient, Logger: env.Logger,
	})
}
