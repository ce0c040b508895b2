package watcher

import (
	"slices"
	"testing"
)

func TestMatch(t *testing.T) {
	base := Folder{Name: "n", Path: "/srv/watch", Skip: []string{"/srv/watch/processed", "/srv/watch/failed"}}
	custom := base
	custom.Include = []string{"*.MXF", "*.json"}
	custom.Exclude = []string{"*_proxy.*", "raw/*", "Drafts/*/*"}

	tests := []struct {
		f    Folder
		rel  string
		want bool
	}{
		{base, "clip.mp4", true},
		{base, "CLIP.MOV", true},
		{base, "sub/dir/song.flac", true},
		{base, "a.braw", true},
		{base, "empty.wav", true},
		{base, "notes.txt", false},
		{base, "clip.mp4.part", false},
		{base, "clip.part", false},
		{base, "clip.partial", false},
		{base, "clip.mp4.tmp", false},
		{base, "clip.mp4.crdownload", false},
		{base, "clip.mp4.download", false},
		{base, "clip.mp4~", false},
		{base, "~$clip.mp4", false},
		{base, ".clip.mp4", false},
		{base, "._clip.mp4", false},
		{base, ".DS_Store", false},
		{base, ".~lock.clip.mp4#", false},
		{base, "Thumbs.db", false},
		{base, "DESKTOP.INI", false},
		{base, ".hidden/clip.mp4", false},
		{base, "a/.git/clip.mp4", false},
		{base, "processed/clip.mp4", false},
		{base, "failed/x/clip.mp4", false},
		{base, "processedx/clip.mp4", true},
		{base, "../clip.mp4", false},
		{base, "", false},
		{base, ".", false},
		{custom, "a.mxf", true},
		{custom, "a.json", true},
		{custom, "a.mp4", false}, // Include replaces the defaults
		{custom, "cam_PROXY.mxf", false},
		{custom, "raw/a.mxf", false},
		{custom, "raw/deeper/a.mxf", true}, // "*" does not cross "/"
		{custom, "other/raw/a.mxf", true},  // patterns with "/" match the whole RelPath
		{custom, "drafts/x/a.mxf", false},
		{custom, "a.mxf.part", false}, // built-ins apply whatever Include says
		{Folder{Include: []string{"[bad"}}, "x", false},
	}
	for _, tt := range tests {
		if got := Match(tt.f, tt.rel); got != tt.want {
			t.Errorf("Match(include=%v exclude=%v, %q) = %v, want %v", tt.f.Include, tt.f.Exclude, tt.rel, got, tt.want)
		}
	}
}

func TestDefaultIncludeIsFresh(t *testing.T) {
	a := DefaultInclude()
	if !slices.Contains(a, "*.mp4") || !slices.Contains(a, "*.opus") {
		t.Fatalf("DefaultInclude = %v", a)
	}
	a[0] = "mutated"
	if DefaultInclude()[0] == "mutated" {
		t.Error("DefaultInclude returns shared state")
	}
}
