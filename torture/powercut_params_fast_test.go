//go:build !torture

package torture

import "time"

// The power-cut smoke test in `go test ./...`: a few cuts, well under a minute.
var PC = pcParams{cuts: 4, files: 14, large: 1, slow: 2, sidecars: 3, bad: 2, settle: 90 * time.Second}
