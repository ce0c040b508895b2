package all

import (
	"testing"

	"github.com/watchfolder/watchfolder/config/table"
)

// TestDeclarations: names are unique, and every type reads an empty table
// without panicking and lists each declared key once.
func TestDeclarations(t *testing.T) {
	seen := map[string]bool{}
	for _, dt := range Types() {
		if dt.Name == "" || seen[dt.Name] || dt.Decode == nil {
			t.Fatalf("bad or duplicate declaration %q", dt.Name)
		}
		seen[dt.Name] = true
		p := &table.Problems{SkipSecrets: true}
		s := dt.Decode(table.New("destination.x", map[string]any{}, p))
		keys := map[string]bool{}
		for _, f := range s.Fields() {
			if keys[f.Key] {
				t.Errorf("%s: key %s listed twice", dt.Name, f.Key)
			}
			keys[f.Key] = true
		}
	}
	if len(seen) != 5 {
		t.Errorf("%d types, want s3, bluebillywig, jwplayer, wistia, skylark", len(seen))
	}
}
