package keytmpl

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzRender feeds hostile templates, folder names and relative paths to
// Render. Whatever it accepts must be a safe object key: relative, no "." or
// ".." segment, no empty segment, no control character, valid UTF-8, at
// most 1024 bytes. A template Validate accepts must also render the probe.
func FuzzRender(f *testing.F) {
	seeds := []struct {
		tmpl, folder, rel string
	}{
		{"{folder}/{relpath}", "news", "a/b.mp4"},
		{"{folder}/{yyyy}/{mm}/{dd}/{name}", "news", "clip.mp4"},
		{"{dir}/{stem}-{id}.{ext}", "news", "clip.mp4"},
		{"{dir}/{name}", "news", "../../etc/passwd"},
		{"/{relpath}", "news", "a.mp4"},
		{"x/../{name}", "news", "a.mp4"},
		{"{folder}/{relpath}", "..", "a.mp4"},
		{"{folder}/{relpath}", "a/../..", "a.mp4"},
		{"{folder}{relpath}", ".", "./a.mp4"},
		{"{stem}/{ext}", "f", ".."},
		{"{name}", "f", "a\nb.mp4"},
		{"{folder}/{name}", "f\u0085", "a.mp4"},
		{"{folder}/{name}", "f", "a\x7f.mp4"},
		{"{folder}/{name}", "f", "\xff\xfe.mp4"},
		{"{dir}", "f", "a.mp4"},
		{"{name}/", "f", "a.mp4"},
		{"{folder}/{name}", "f", "..."},
		{"{ext}/{stem}", "f", "a/..mp4"},
		{"{unknown}", "f", "a.mp4"},
		{"{", "f", "a.mp4"},
		{"}", "f", "a.mp4"},
		{"a\\..\\{name}", "f", "a.mp4"},
		{"{folder}/{relpath}", "news", strings.Repeat("d/", 600) + "x.mp4"},
	}
	for _, s := range seeds {
		f.Add(s.tmpl, s.folder, s.rel, uint64(7), int64(1700000000))
	}
	f.Fuzz(func(t *testing.T, tmpl, folder, rel string, id uint64, unix int64) {
		v := Vars{Folder: folder, RelPath: rel, ID: id, Time: time.Unix(unix%(1<<40), 0)}
		key, err := Render(tmpl, v)
		if err != nil {
			if key != "" {
				t.Fatalf("Render(%q) returned key %q with error %v", tmpl, key, err)
			}
			return
		}
		assertSafeKey(t, tmpl, key)
		if Validate(tmpl) == nil {
			probe := Vars{Folder: "f", RelPath: "a/b.mp4", ID: 1, Time: time.Unix(0, 0)}
			if _, err := Render(tmpl, probe); err != nil {
				t.Fatalf("Validate(%q) passed but the probe does not render: %v", tmpl, err)
			}
		}
	})
}

func assertSafeKey(t *testing.T, tmpl, key string) {
	t.Helper()
	switch {
	case key == "":
		t.Fatalf("Render(%q) = empty key", tmpl)
	case strings.HasPrefix(key, "/"):
		t.Fatalf("Render(%q) = %q starts with /", tmpl, key)
	case len(key) > 1024:
		t.Fatalf("Render(%q) = %d bytes", tmpl, len(key))
	case !utf8.ValidString(key):
		t.Fatalf("Render(%q) = %q is not valid UTF-8", tmpl, key)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			t.Fatalf("Render(%q) = %q contains control character %U", tmpl, key, r)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			t.Fatalf("Render(%q) = %q has segment %q", tmpl, key, seg)
		}
	}
}

// TestRenderHostile pins the outcomes the fuzzer looks for on known cases.
func TestRenderHostile(t *testing.T) {
	at := time.Date(2024, 3, 9, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, tmpl, folder, rel string
		want                    string // "" = must be refused
	}{
		{"plain", "{folder}/{relpath}", "news", "a/b.mp4", "news/a/b.mp4"},
		{"traversal in relpath is cleaned", "{folder}/{relpath}", "news", "../../etc/x.mp4", "news/etc/x.mp4"},
		{"dotdot folder", "{folder}/{name}", "..", "a.mp4", ""},
		{"dotdot literal", "x/../{name}", "news", "a.mp4", ""},
		{"absolute template", "/{name}", "news", "a.mp4", ""},
		{"newline in name", "{name}", "news", "a\nb.mp4", ""},
		{"DEL in name", "{name}", "news", "a\x7fb.mp4", ""},
		{"C1 control in name", "{name}", "news", "a\u0085b.mp4", ""},
		{"invalid UTF-8 in name", "{name}", "news", "a\xffb.mp4", ""},
		{"empty dir collapses", "{folder}/{dir}/{name}", "news", "a.mp4", "news/a.mp4"},
		{"stem dotdot", "{stem}/x", "news", "...", ""},
		{"trailing slash", "{name}/", "news", "a.mp4", ""},
		{"dates", "{yyyy}/{mm}/{dd}/{name}", "news", "a.mp4", "2024/03/09/a.mp4"},
		{"unicode NFD kept", "{name}", "news", "cafe\u0301.mp4", "cafe\u0301.mp4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := Render(c.tmpl, Vars{Folder: c.folder, RelPath: c.rel, ID: 3, Time: at})
			if c.want == "" {
				if err == nil {
					t.Fatalf("Render = %q, want an error", key)
				}
				return
			}
			if err != nil || key != c.want {
				t.Fatalf("Render = %q, %v; want %q", key, err, c.want)
			}
			assertSafeKey(t, c.tmpl, key)
		})
	}
}
