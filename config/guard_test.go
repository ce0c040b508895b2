package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeepNestingRefused: a 24 KB file of nested inline tables is refused
// before the TOML parser runs (it used to take gigabytes).
func TestDeepNestingRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("x = ")
	for b.Len() < 18<<10 {
		b.WriteString("{a=")
	}
	b.WriteString("1")
	for range strings.Count(b.String(), "{") {
		b.WriteString("}")
	}
	data := []byte(b.String())
	if len(data) < 24<<10 {
		t.Fatalf("test file only %d bytes", len(data))
	}
	p := filepath.Join(t.TempDir(), "deep.toml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "nested deeper than 32") {
		t.Fatalf("err = %v", err)
	}
	// Arrays too, and the check ignores brackets in strings and comments.
	if err := checkShape([]byte("a = " + strings.Repeat("[", 40) + strings.Repeat("]", 40))); err == nil {
		t.Error("deep arrays accepted")
	}
	ok := "s = \"" + strings.Repeat("[{", 50) + "\"\n# " + strings.Repeat("{", 50) + "\nm = '''\n" + strings.Repeat("[", 50) + "'''\n[[folder]]\n"
	if err := checkShape([]byte(ok)); err != nil {
		t.Errorf("brackets in strings/comments counted: %v", err)
	}
	big := bytes.Repeat([]byte("# filler\n"), (maxConfigSize/9)+2)
	if err := checkShape(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

// TestFiledDirSymlinks: processed_dir/failed_dir are judged by where they
// really lead.
func TestFiledDirSymlinks(t *testing.T) {
	root := t.TempDir()
	folder := filepath.Join(root, "news")
	if err := os.MkdirAll(filepath.Join(folder, "inbox-done"), 0o755); err != nil {
		t.Fatal(err)
	}
	// /root/done -> /root/news/inbox-done: outside by name, inside really.
	if err := os.Symlink(filepath.Join(folder, "inbox-done"), filepath.Join(root, "done")); err != nil {
		t.Fatal(err)
	}
	// /root/news/processed -> /root/news/inbox-done: a name the watcher
	// skips leading to one it watches.
	if err := os.Symlink(filepath.Join(folder, "inbox-done"), filepath.Join(folder, "processed")); err != nil {
		t.Fatal(err)
	}
	// /root/up -> /root
	if err := os.Symlink(root, filepath.Join(root, "up")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want string
	}{
		{"symlink from outside into the folder", filepath.Join(root, "done"), "resolves through a symlink"},
		{"symlink inside the folder to another subdir", filepath.Join(folder, "processed"), "resolves through a symlink"},
		{"parent of the folder", root, "is a parent of the folder"},
		{"parent through a symlink", filepath.Join(root, "up"), "a parent of the folder"},
		{"plain default", filepath.Join(folder, "failed"), ""},
		{"outside", filepath.Join(root, "archive"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "[[folder]]\nname = \"news\"\npath = \"" + folder + "\"\ndestinations = [\"a\"]\nprocessed_dir = \"" + tt.dir + "\"\n" +
				"failed_dir = \"" + filepath.Join(root, "failed") + "\"\n[destination.a]\ntype = \"s3\"\nbucket = \"bkt\"\n"
			_, err := Parse([]byte(src), "t.toml")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "folder[0].processed_dir: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestHookURLRedacted: check shows a hook's scheme and host only.
func TestHookURLRedacted(t *testing.T) {
	c := mustParse(t, minimal+"\n[[notify]]\nurl = \"https://hooks.slack.test/services/T000/B000/XXXXSECRET?token=q\"\n")
	var buf bytes.Buffer
	if err := c.WriteEffective(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "XXXXSECRET") || strings.Contains(out, "T000") || strings.Contains(out, "token=q") ||
		!strings.Contains(out, `url = "https://hooks.slack.test/[redacted]"`) {
		t.Errorf("effective output:\n%s", out)
	}
	if _, err := Parse(buf.Bytes(), "again"); err != nil {
		t.Errorf("redacted output does not parse: %v", err)
	}
}
