package config

import (
	"slices"
	"testing"
)

// The sidecar's platform keys come from the destination registry: every
// video platform, not plain S3 (which takes no extras).
func TestSidecarPlatformsFollowTheRegistry(t *testing.T) {
	got := SidecarPlatforms()
	for _, want := range []string{"bluebillywig", "jwplayer", "wistia", "skylark"} {
		if !slices.Contains(got, want) {
			t.Errorf("SidecarPlatforms() = %v, missing %s", got, want)
		}
	}
	if slices.Contains(got, "s3") {
		t.Errorf("SidecarPlatforms() = %v: s3 takes no sidecar extras", got)
	}
}
