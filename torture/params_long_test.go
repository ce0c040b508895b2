//go:build torture

package torture

import "time"

// The long suite (./torture/run.sh).
var P = params{
	long:         true,
	crashKills:   32,
	crashFiles:   300,
	crashLarge:   24,
	outage:       30 * time.Second,
	manyFiles:    10000,
	deepLevels:   40,
	faultFiles:   16,
	settle:       20 * time.Minute,
	diskFullJobs: 400,
}
