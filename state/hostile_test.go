package state

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// Hostile file names must either round-trip exactly (and keep Check
// clean) or be refused at Create: never stored under a different name.
func TestHostileNamesRoundTripOrRefused(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cases := []struct {
		name, rel string
		refused   bool
	}{
		{"newline", "a\nb.mp4", false},
		{"quotes and backslash", `q"\'.mp4`, false},
		{"NFD", "cafe\u0301.mp4", false},
		{"255 bytes", string(make255()), false},
		{"invalid UTF-8", "bad\xff.mp4", true},
		{"invalid UTF-8 in a directory", "d\xc3/x.mp4", true},
		{"NUL", "a\x00b.mp4", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := &Job{Folder: "news", Path: "/in/" + c.rel, RelPath: c.rel, State: Waiting}
			err := s.Create(ctx, j)
			if c.refused {
				if err == nil {
					t.Fatalf("Create accepted %q", c.rel)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Latest(ctx, "news", c.rel)
			if err != nil || got.RelPath != c.rel || got.Path != j.Path {
				t.Fatalf("Latest(%q) = %+v, %v", c.rel, got, err)
			}
		})
	}
	if problems, err := s.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("Check: %v %v", problems, err)
	}
	if _, err := s.Latest(ctx, "news", "bad\xff.mp4"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused job was stored: %v", err)
	}
}

func make255() []byte {
	b := make([]byte, 255)
	for i := range b {
		b[i] = 'z'
	}
	return b
}
