// Package keytmpl renders object key templates such as
// "{folder}/{yyyy}/{mm}/{dd}/{name}". It is shared by config (validation) and
// uploader (rendering) so both agree on what a template may produce.
package keytmpl

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Vars are the values a template can use.
type Vars struct {
	Folder  string
	RelPath string // slash-separated, below the folder root, with the file name
	ID      uint64
	Time    time.Time
}

var placeholders = map[string]bool{
	"folder": true, "relpath": true, "dir": true, "name": true, "stem": true,
	"ext": true, "yyyy": true, "mm": true, "dd": true, "id": true,
}

// Validate checks a template's syntax and that a typical file cannot make it
// escape: it must not render to an absolute key or contain "..".
func Validate(tmpl string) error {
	if strings.TrimSpace(tmpl) == "" {
		return errors.New("empty key template")
	}
	if err := scan(tmpl, func(string) {}); err != nil {
		return err
	}
	probe := Vars{Folder: "f", RelPath: "a/b.mp4", ID: 1, Time: time.Unix(0, 0).UTC()}
	if _, err := Render(tmpl, probe); err != nil {
		return err
	}
	return nil
}

// Render expands tmpl with v. It refuses results that are absolute, contain
// ".." or "." segments, empty segments, or control characters, so a hostile
// file or folder name cannot escape the intended prefix.
func Render(tmpl string, v Vars) (string, error) {
	rel := strings.TrimPrefix(path.Clean("/"+v.RelPath), "/")
	name := path.Base(rel)
	dir := path.Dir(rel)
	if dir == "." {
		dir = ""
	}
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	t := v.Time.UTC()
	vals := map[string]string{
		"folder": v.Folder, "relpath": rel, "dir": dir, "name": name, "stem": stem,
		"ext": strings.TrimPrefix(ext, "."), "yyyy": fmt.Sprintf("%04d", t.Year()),
		"mm": fmt.Sprintf("%02d", int(t.Month())), "dd": fmt.Sprintf("%02d", t.Day()),
		"id": strconv.FormatUint(v.ID, 10),
	}
	var b strings.Builder
	err := scan(tmpl, func(tok string) {
		if strings.HasPrefix(tok, "{") {
			b.WriteString(vals[tok[1:len(tok)-1]])
			return
		}
		b.WriteString(tok)
	})
	if err != nil {
		return "", err
	}
	key := b.String()
	// {dir} may be empty: collapse the doubled slash it leaves behind.
	for strings.Contains(key, "//") {
		key = strings.ReplaceAll(key, "//", "/")
	}
	key = strings.TrimPrefix(key, "/")
	if err := checkKey(key, tmpl); err != nil {
		return "", err
	}
	return key, nil
}

func checkKey(key, tmpl string) error {
	if key == "" {
		return fmt.Errorf("key template %q renders an empty key", tmpl)
	}
	if strings.HasPrefix(tmpl, "/") {
		return fmt.Errorf("key template %q renders an absolute key", tmpl)
	}
	if len(key) > 1024 {
		return fmt.Errorf("rendered key is %d bytes, over the 1024-byte S3 limit", len(key))
	}
	// S3 keys are UTF-8: a file name in another encoding would be stored
	// under a mangled key (or refused), so it is an error here.
	if !utf8.ValidString(key) {
		return fmt.Errorf("rendered key %q is not valid UTF-8 (rename the file)", key)
	}
	for _, r := range key {
		// C0, DEL and the C1 range (U+0080-U+009F) alike.
		if unicode.IsControl(r) {
			return fmt.Errorf("rendered key %q contains a control character", key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == ".." || seg == "." {
			return fmt.Errorf("key template %q renders %q, which contains a %q segment", tmpl, key, seg)
		}
	}
	if strings.HasSuffix(key, "/") {
		return fmt.Errorf("key template %q renders %q, which ends in /", tmpl, key)
	}
	return nil
}

// scan splits tmpl into literal text and {placeholder} tokens.
func scan(tmpl string, emit func(string)) error {
	for len(tmpl) > 0 {
		i := strings.IndexAny(tmpl, "{}")
		if i < 0 {
			emit(tmpl)
			return nil
		}
		if tmpl[i] == '}' {
			return fmt.Errorf("key template: unmatched } at %q", tmpl[i:])
		}
		if i > 0 {
			emit(tmpl[:i])
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return fmt.Errorf("key template: unclosed { at %q", tmpl[i:])
		}
		tok := tmpl[i : i+j+1]
		if !placeholders[tok[1:len(tok)-1]] {
			return fmt.Errorf("key template: unknown placeholder %s (known: {folder} {relpath} {dir} {name} {stem} {ext} {yyyy} {mm} {dd} {id})", tok)
		}
		emit(tok)
		tmpl = tmpl[i+j+1:]
	}
	return nil
}
