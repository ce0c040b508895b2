//go:build !torture

package torture

import "time"

// The fast subset: part of `go test -race ./...`, well under a minute.
var P = params{
	long:         false,
	crashKills:   4,
	crashFiles:   50,
	crashLarge:   3,
	outage:       3 * time.Second,
	manyFiles:    1000,
	deepLevels:   40,
	faultFiles:   6,
	settle:       90 * time.Second,
	diskFullJobs: 0, // long suite only
}
