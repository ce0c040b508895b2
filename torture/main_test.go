// Package torture is watchfolder's reliability and security suite: it drives
// the real binary against a real MinIO, kills it at random moments, injects
// network faults, feeds it hostile input, and checks the promise — every
// finished file reaches every destination exactly once with the same bytes,
// and ends in processed/ or failed/ with a reason.
//
// The fast subset runs in `go test -race ./...`; the long suite is behind
// the build tag `torture` (./torture/run.sh). WF_TORTURE_SEED fixes the
// random seed; every test prints the seed it used.
package torture

import (
	"fmt"
	"os"
	"testing"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

var (
	binPath string
	minio   *testenv.MinIO
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wf-torture-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The race detector stays on in the binary: the point is to find bugs.
	// WF_TORTURE_RACE=0 builds without it (faster on a busy machine).
	binPath, err = testenv.BuildWatchfolder(dir, os.Getenv("WF_TORTURE_RACE") != "0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	minio, err = testenv.StartMinIO()
	if err != nil {
		fmt.Fprintln(os.Stderr, "minio:", err)
		os.Exit(1)
	}
	code := m.Run()
	minio.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}
