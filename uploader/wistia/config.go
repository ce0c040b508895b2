package wistia

import (
	"context"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
)

// Declare declares the "wistia" destination type: its keys, defaults,
// checks and secrets.
func Declare() uploader.DestinationType {
	return uploader.DestinationType{Name: "wistia", Decode: decode, SidecarKey: true}
}

type settings struct {
	token                               table.Secret
	uploadURL, apiURL, project, contact string
	description, waitFor                string
	timeout, poll                       time.Duration
	s3                                  s3engine.S3Settings
}

func decode(t *table.Table) uploader.Settings {
	s := &settings{
		s3:        s3engine.DecodeS3(t, s3engine.S3Keys{KeyTemplate: s3engine.DefaultKeyTemplate}),
		token:     t.Required("token"),
		uploadURL: t.URL("upload_url", DefaultUploadURL),
		apiURL:    t.URL("api_url", DefaultAPIURL),
		project:   t.ID("project_id"),
		contact:   t.ID("contact_id"),
		waitFor:   t.OneOf("wait_for", "", "", "ready"),
	}
	s.description, _ = t.Str("description")
	s.timeout, s.poll = t.Timing(DefaultRegisterTimeout, DefaultPollInterval)
	return s
}

func (s *settings) Fields() []uploader.Field {
	return append([]uploader.Field{
		{Key: "token", Value: s.token, Secret: true},
		{Key: "upload_url", Value: s.uploadURL},
		{Key: "api_url", Value: s.apiURL},
		{Key: "project_id", Value: s.project},
		{Key: "contact_id", Value: s.contact},
		{Key: "description", Value: s.description},
		{Key: "wait_for", Value: s.waitFor},
		{Key: "register_timeout", Value: s.timeout},
		{Key: "poll_interval", Value: s.poll},
	}, s.s3.Fields()...)
}

func (s *settings) Build(ctx context.Context, env uploader.BuildEnv) (uploader.Destination, error) {
	eng, region, err := s.s3.Engine(ctx, env)
	if err != nil {
		return nil, err
	}
	return New(Options{
		Name: env.Name, Token: s.token.Value(), UploadURL: s.uploadURL, APIURL: s.apiURL,
		ProjectID: s.project, ContactID: s.contact, Description: s.description,
		WaitFor: s.waitFor, PollInterval: s.poll, RegisterTimeout: s.timeout,
		KeyTemplate: s.s3.KeyTemplate, Region: region, S3: eng, HTTPClient: env.APIClient, Logger: env.Logger,
	})
}
