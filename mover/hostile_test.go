package mover

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Hostile names: the longest legal names, odd characters, traversal.
func TestHostileNames(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		rel     string
		planErr bool
	}{
		{"255-byte name", strings.Repeat("n", 251) + ".mp4", false},
		{"newline and quotes", "a\n\"b\".mp4", false},
		{"leading dash", "-rf.mp4", false},
		{"traversal", "../escape.mp4", true},
		{"deep traversal", "a/../../escape.mp4", true},
		{"absolute", "/etc/passwd", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(dir, "processed")
			target, err := Plan(dest, c.rel)
			if c.planErr {
				if err == nil && !strings.HasPrefix(target, dest+string(filepath.Separator)) {
					t.Fatalf("Plan(%q) = %q escapes %s", c.rel, target, dest)
				}
				return
			}
			if err != nil {
				t.Fatalf("Plan(%q): %v", c.rel, err)
			}
			src := filepath.Join(dir, "src-"+c.name)
			if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := Move(src, target); err != nil {
				t.Fatalf("Move: %v", err)
			}
			if _, err := os.Stat(target); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// WriteFileAtomic must work for every name that fits NAME_MAX itself: its
// temporary file must not be named "<path>.<suffix>" (too long).
func TestWriteFileAtomicLongName(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{1, 200, 243, 255} {
		p := filepath.Join(dir, strings.Repeat("r", n))
		if err := WriteFileAtomic(p, []byte("receipt"), 0o640); err != nil {
			t.Fatalf("%d-byte name: %v", n, err)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%d-byte name: %v", n, err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".watchfolder-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// A leftover from a crash is overwritten by the retry, not kept.
	p := filepath.Join(dir, "again.receipt.json")
	if err := WriteFileAtomic(p, []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("again.receipt.json"))
	stale := filepath.Join(dir, ".watchfolder-"+hex.EncodeToString(h[:12])+".tmp")
	if err := os.WriteFile(stale, []byte("half a receipt from before a crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("second"), 0o644); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".watchfolder-*")); len(left) != 0 {
		t.Fatalf("crash leftover kept: %v", left)
	}
}

// Plan must find the plain target for a 255-byte name: its partial-copy
// name cannot be "<name>.watchfolder-partial" (over NAME_MAX).
func TestPlanLongNameIsFree(t *testing.T) {
	dest := t.TempDir()
	for _, n := range []int{234, 235, 255} {
		rel := strings.Repeat("p", n-4) + ".mov"
		got, err := Plan(dest, rel)
		if err != nil || got != filepath.Join(dest, rel) {
			t.Fatalf("%d-byte name: Plan = %q, %v; want the name itself", n, got, err)
		}
		if p := partialPath(got); len(filepath.Base(p)) > nameMax || filepath.Dir(p) != dest {
			t.Fatalf("%d-byte name: partial path %q", n, p)
		}
	}
}
