package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig"
	"github.com/watchfolder/watchfolder/uploader/jwplayer"
	"github.com/watchfolder/watchfolder/uploader/skylark"
	"github.com/watchfolder/watchfolder/uploader/wistia"
)

// buildDestinations turns the configured destinations into uploaders. The
// S3 settings of every type go through one function (s3Options), so all
// S3-writing platforms take the same keys.
func buildDestinations(ctx context.Context, cfg *config.Config, lim *uploader.Limiter, log *slog.Logger) (map[string]uploader.Destination, error) {
	eng := uploader.EngineOptions{
		PartSize:           cfg.Upload.PartSize,
		Concurrency:        cfg.Upload.Concurrency,
		MultipartThreshold: cfg.Upload.MultipartThreshold,
		MaxFiles:           cfg.Upload.MaxFiles,
		Limiter:            lim,
		Logger:             log,
	}
	// Platform API calls are small JSON requests: bound them so a
	// half-open connection cannot hang a worker.
	apiClient := &http.Client{Timeout: 2 * time.Minute}
	out := make(map[string]uploader.Destination, len(cfg.Destinations))
	for name, dc := range cfg.Destinations {
		dlog := log.With("destination", name)
		newS3 := func() (*uploader.S3, error) {
			s, err := uploader.NewS3(ctx, s3Options(dc.S3), eng)
			if err != nil {
				return nil, fmt.Errorf("destination %s: %w", name, err)
			}
			return s, nil
		}
		var d uploader.Destination
		switch dc.Type {
		case "s3":
			s, err := newS3()
			if err != nil {
				return nil, err
			}
			d = uploader.NewS3Destination(name, dc.S3.Key, s)
		case "bluebillywig":
			s, err := newS3()
			if err != nil {
				return nil, err
			}
			d, err = bluebillywig.New(bluebillywig.Options{
				Name: name, Publication: dc.Publication, Account: dc.Account,
				APIKeyID: dc.APIKeyID, APISecret: dc.APISecret.Value(), APIURL: dc.APIURL,
				PollInterval: dc.PollInterval, RegisterTimeout: dc.RegisterTimeout,
				S3: s, HTTPClient: apiClient, Logger: dlog,
			})
			if err != nil {
				return nil, fmt.Errorf("destination %s: %w", name, err)
			}
		case "jwplayer":
			var err error
			d, err = jwplayer.New(jwplayer.Options{
				Name: name, API: dc.API, SiteID: dc.SiteID, APIKey: dc.APIKey,
				APISecret: dc.APISecret.Value(), APIURL: dc.APIURL, UploadURL: dc.UploadURL,
				WaitFor: dc.WaitFor, PollInterval: dc.PollInterval, RegisterTimeout: dc.RegisterTimeout,
				PartSize: cfg.Upload.PartSize, Concurrency: cfg.Upload.Concurrency,
				HTTPClient: nil, Logger: dlog,
			})
			if err != nil {
				return nil, fmt.Errorf("destination %s: %w", name, err)
			}
		case "wistia":
			s, err := newS3()
			if err != nil {
				return nil, err
			}
			d, err = wistia.New(wistia.Options{
				Name: name, Token: dc.Token.Value(), UploadURL: dc.UploadURL, APIURL: dc.APIURL,
				ProjectID: dc.ProjectID, ContactID: dc.ContactID, Description: dc.Description,
				WaitFor: dc.WaitFor, PollInterval: dc.PollInterval, RegisterTimeout: dc.RegisterTimeout,
				KeyTemplate: dc.S3.Key, Region: dc.S3.Region, S3: s, HTTPClient: apiClient, Logger: dlog,
			})
			if err != nil {
				return nil, fmt.Errorf("destination %s: %w", name, err)
			}
		case "skylark":
			s, err := newS3()
			if err != nil {
				return nil, err
			}
			// config: "" means do not wait; the skylark package spells that "none".
			waitFor := dc.WaitFor
			if waitFor == "" {
				waitFor = "none"
			}
			d, err = skylark.New(skylark.Options{
				Name: name, KeyTemplate: dc.S3.Key, S3: s, WaitFor: waitFor,
				APIURL: dc.APIURL, Token: dc.Token.Value(),
				PollInterval: dc.PollInterval, RegisterTimeout: dc.RegisterTimeout,
				HTTPClient: apiClient, Logger: dlog,
			})
			if err != nil {
				return nil, fmt.Errorf("destination %s: %w", name, err)
			}
		default:
			return nil, fmt.Errorf("destination %s: unknown type %q", name, dc.Type)
		}
		out[name] = d
	}
	return out, nil
}

func s3Options(c config.S3) uploader.S3Options {
	return uploader.S3Options{
		Bucket: c.Bucket, Region: c.Region, Endpoint: c.Endpoint, PathStyle: c.PathStyle,
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey.Value(),
		SessionToken: c.SessionToken.Value(), Profile: c.Profile,
		ACL: c.ACL, ContentType: c.ContentType, ContentDisposition: c.ContentDisposition,
		CacheControl: c.CacheControl, StorageClass: c.StorageClass, Metadata: c.Metadata,
		SSE: c.SSE, SSEKMSKeyID: c.SSEKMSKeyID, Checksum: c.Checksum,
	}
}
