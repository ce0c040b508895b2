//go:build torture

package torture

import "time"

// The power-cut torture of the long suite (./torture/run.sh).
var PC = pcParams{cuts: 60, files: 160, large: 12, slow: 12, sidecars: 20, bad: 8, settle: 15 * time.Minute}
