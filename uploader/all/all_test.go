package all

import (
	"testing"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
	"github.com/watchfolder/watchfolder/uploader/skylark"
	"github.com/watchfolder/watchfolder/uploader/wistia"
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

// The destinations that upload through the S3 engine report and take the
// parts-in-flight level it learned, so the daemon keeps it across restarts.
var (
	_ uploader.StreamLearner = (*s3engine.S3Destination)(nil)
	_ uploader.StreamLearner = (*bluebillywig.Destination)(nil)
	_ uploader.StreamLearner = (*wistia.Destination)(nil)
	_ uploader.StreamLearner = (*skylark.Destination)(nil)
)
