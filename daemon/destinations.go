package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/uploader"
)

// buildDestinations turns the configured destinations into uploaders. Each
// destination type builds itself from the settings its own declaration
// read (uploader.DestinationType); this file knows no type.
func buildDestinations(ctx context.Context, cfg *config.Config, lim *uploader.Limiter, log *slog.Logger) (map[string]uploader.Destination, error) {
	transfer := uploader.Transfer{
		PartSize:           cfg.Upload.PartSize,
		Concurrency:        cfg.Upload.Concurrency,
		MultipartThreshold: cfg.Upload.MultipartThreshold,
		MaxFiles:           cfg.Upload.MaxFiles,
		Limiter:            lim,
	}
	// Platform API calls are small JSON requests: bound them so a
	// half-open connection cannot hang a worker.
	apiClient := &http.Client{Timeout: 2 * time.Minute}
	out := make(map[string]uploader.Destination, len(cfg.Destinations))
	for name, dc := range cfg.Destinations {
		if dc.Settings == nil {
			return nil, fmt.Errorf("destination %s: unknown type %q", name, dc.Type)
		}
		d, err := dc.Settings.Build(ctx, uploader.BuildEnv{
			Name: name, Transfer: transfer, APIClient: apiClient, Logger: log.With("destination", name),
		})
		if err != nil {
			return nil, fmt.Errorf("destination %s: %w", name, err)
		}
		out[name] = d
	}
	return out, nil
}
