//go:build !linux

package watcher

import "fmt"

// leaseProbe is the non-Linux stand-in: read leases are Linux-only, so the
// watcher falls back to quiet time alone.
type leaseProbe struct{}

func (leaseProbe) HasWriter(path string) (bool, error) {
	return false, fmt.Errorf("%w: read leases exist only on Linux (%s)", errProbeUnsupported, path)
}
