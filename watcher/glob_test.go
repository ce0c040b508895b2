package watcher

import "testing"

// Brace alternatives and "**" work in include and exclude (with path.Match
// "*.{mov,mxf}" matched nothing and "**" behaved as "*"), and sidecars are
// never candidates, even with include = ["*"].
func TestGlobsAndSidecars(t *testing.T) {
	braces := Folder{Include: []string{"*.{mov,MXF}"}, Exclude: []string{"**/proxies/**", "cache/**"}}
	all := Folder{Include: []string{"*"}, Sidecars: true}
	allNoSidecars := Folder{Include: []string{"*"}}
	tests := []struct {
		name string
		f    Folder
		rel  string
		want bool
	}{
		{"brace first", braces, "a.mov", true},
		{"brace second, any case", braces, "deep/b.mxf", true},
		{"brace other", braces, "a.mp4", false},
		{"** at any depth", braces, "x/y/proxies/z/a.mov", false},
		{"** at the root", braces, "proxies/a.mov", false},
		{"dir/** below the root only", braces, "cache/deep/er/a.mov", false},
		{"dir/** elsewhere", braces, "sub/cache/a.mov", true},
		{"sidecar with include *", all, "clip.json", false},
		{"sidecar upper case", all, "sub/CLIP.JSON", false},
		{"media with include *", all, "clip.mp4", true},
		{"receipt-like name is a json too", all, "b.mp4.receipt.json", false},
		{"json is a file when sidecars are ignored", allNoSidecars, "data.json", true},
	}
	for _, tt := range tests {
		if got := Match(tt.f, tt.rel); got != tt.want {
			t.Errorf("%s: Match(%q) = %v, want %v", tt.name, tt.rel, got, tt.want)
		}
	}
}

func TestValidGlob(t *testing.T) {
	for _, p := range []string{"*.{mov,mxf}", "**/raw/*.mov", "a?[0-9].wav", "*"} {
		if err := ValidGlob(p); err != nil {
			t.Errorf("ValidGlob(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"[bad", "*.{mov", "", "/abs/*.mov"} {
		if err := ValidGlob(p); err == nil {
			t.Errorf("ValidGlob(%q) accepted", p)
		}
	}
	if _, err := New(Options{Folders: []Folder{{Name: "n", Path: "/x", Include: []string{"*.{mov"}}}}); err == nil {
		t.Error("New accepted an invalid glob")
	}
}
