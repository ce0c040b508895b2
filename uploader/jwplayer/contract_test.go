package jwplayer

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/destinationtest"
	"github.com/watchfolder/watchfolder/uploader/jwplayer/jwplayertest"
)

func contractEnv(api string, threshold int64, size int) func(t *testing.T) *destinationtest.Env {
	return func(t *testing.T) *destinationtest.Env {
		f := setup(t)
		var mu sync.Mutex
		secret := f.Secret
		const wrong = "not-the-jw-secret"
		return &destinationtest.Env{
			New: func(t *testing.T) uploader.Destination {
				mu.Lock()
				defer mu.Unlock()
				c := f.Client()
				c.Timeout = 30 * time.Second
				d, err := New(Options{Name: "jw", API: api, SiteID: f.Site, APIKey: f.V1Key, APISecret: secret, APIURL: f.URL,
					PollInterval: 5 * time.Millisecond, RegisterTimeout: 10 * time.Second, WaitFor: waitFor(api),
					PartSize: 5 << 20, Concurrency: 2, MultipartThreshold: threshold, HTTPClient: c,
					Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
			Delivered: func(t *testing.T) int { return delivered(f) },
			Fault:     func(status int, ra string, n int) { f.Script(ra, repeat(status, n)...) },
			Refuse: func(on bool) {
				mu.Lock()
				defer mu.Unlock()
				secret = f.Secret
				if on {
					secret = wrong
				}
			},
			Message:           map[string]string{"v2": "Invalid API credentials", "v1": "Invalid signature"}[api],
			Secrets:           []string{f.Secret, wrong},
			HonoursRetryAfter: true,
			Size:              size,
		}
	}
}

func waitFor(api string) string {
	if api == "v2" {
		return "ready"
	}
	return ""
}

// delivered counts media that hold bytes: a media created and left empty
// counts too, as it shows in the customer's library.
func delivered(f *jwplayertest.Server) int {
	return len(f.All())
}

func repeat(status, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = status
	}
	return out
}

func TestContractV2Direct(t *testing.T) {
	destinationtest.Run(t, destinationtest.WithRefusedCredentials(contractEnv("v2", 0, 64<<10)))
}

func TestContractV2Multipart(t *testing.T) {
	destinationtest.Run(t, destinationtest.WithRefusedCredentials(contractEnv("v2", 5<<20, 11<<20)))
}

func TestContractV1(t *testing.T) {
	destinationtest.Run(t, destinationtest.WithRefusedCredentials(contractEnv("v1", 0, 64<<10)))
}
