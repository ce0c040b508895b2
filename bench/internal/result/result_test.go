package result

import (
	"path/filepath"
	"testing"
)

// TestAnnotateLast: only the last record gains the figures; the others
// and the last one's own extras are kept.
func TestAnnotateLast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.jsonl")
	recs := []Record{
		{Scenario: "1gib", Tool: "mc", Run: 1, WallS: 5},
		{Scenario: "resume", Tool: "watchfolder", Run: 1, WallS: 3, Extra: map[string]float64{"resent": 7}},
	}
	for _, r := range recs {
		if err := Append(path, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := AnnotateLast(path, map[string]float64{"store_cpu_s": 4.5, "link_cpu_s": 0}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Extra != nil || got[0].WallS != 5 {
		t.Fatalf("records before the last changed: %+v", got)
	}
	e := got[1].Extra
	if e["resent"] != 7 || e["store_cpu_s"] != 4.5 || len(e) != 3 {
		t.Fatalf("last record's extras: %v", e)
	}
	if err := AnnotateLast(filepath.Join(t.TempDir(), "empty.jsonl"), nil); err == nil {
		t.Fatal("annotating a missing results file succeeded")
	}
}
