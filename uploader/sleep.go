package uploader

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx is done, returning ctx's error then.
// Platform polls use it so shutdown never waits out a poll interval.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
