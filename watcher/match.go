package watcher

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// DefaultInclude returns the globs used when Folder.Include is empty: the
// common video and audio container extensions. Matching is case-insensitive.
func DefaultInclude() []string {
	exts := []string{
		// video
		"mp4", "m4v", "mov", "mxf", "mkv", "avi", "wmv", "flv", "webm", "mpg",
		"mpeg", "m2ts", "mts", "ts", "vob", "3gp", "ogv", "dv", "r3d", "braw", "ari",
		// audio
		"mp3", "wav", "aif", "aiff", "m4a", "aac", "flac", "ogg", "opus", "wma",
	}
	globs := make([]string, len(exts))
	for i, e := range exts {
		globs[i] = "*." + e
	}
	return globs
}

// builtinExcluded reports whether a (lower-cased) base name is one that
// editors, copy tools and desktops leave behind while a file is still being
// produced, or as metadata next to it. These never become events, whatever
// Include says, because a partial file must never be uploaded.
func builtinExcluded(lower string) bool {
	switch {
	case strings.HasPrefix(lower, "."): // .name.tmp, ._name (AppleDouble), .DS_Store, .~lock.x#
		return true
	case strings.HasPrefix(lower, "~$"): // Office owner files
		return true
	case strings.HasSuffix(lower, "~"): // editor backups, some temp-then-rename tools
		return true
	case lower == "thumbs.db", lower == "desktop.ini":
		return true
	}
	for _, ext := range []string{".tmp", ".part", ".partial", ".crdownload", ".download"} {
		if strings.HasSuffix(lower, ext) {
			return true
		}
	}
	return false
}

// matcher is a Folder's name filter, compiled once.
type matcher struct {
	root     string          // cleaned folder root; "" when unknown (Match without Path)
	skip     []string        // cleaned absolute directories never watched
	include  []string        // lower-cased globs, other than the plain "*.ext" ones
	incExt   map[string]bool // lower-cased ".ext" of include globs "*.ext"
	exclude  []string        // lower-cased globs
	sidecars bool            // "*.json" files are sidecars, never candidates
}

func newMatcher(f Folder) (matcher, error) {
	m := matcher{sidecars: f.Sidecars}
	if f.Path != "" {
		m.root = filepath.Clean(f.Path)
	}
	for _, s := range f.Skip {
		if s != "" {
			m.skip = append(m.skip, filepath.Clean(s))
		}
	}
	inc := f.Include
	if len(inc) == 0 {
		inc = DefaultInclude()
	}
	all, err := compileGlobs(inc)
	if err != nil {
		return matcher{}, fmt.Errorf("include: %w", err)
	}
	// "*.ext" globs (the defaults among them) become one map lookup per
	// file instead of one glob match each: rescans of large trees match
	// every file against every pattern.
	for _, g := range all {
		if ext, ok := plainExt(g); ok {
			if m.incExt == nil {
				m.incExt = map[string]bool{}
			}
			m.incExt[ext] = true
		} else {
			m.include = append(m.include, g)
		}
	}
	if m.exclude, err = compileGlobs(f.Exclude); err != nil {
		return matcher{}, fmt.Errorf("exclude: %w", err)
	}
	return m, nil
}

func compileGlobs(globs []string) ([]string, error) {
	out := make([]string, 0, len(globs))
	for _, g := range globs {
		if err := ValidGlob(g); err != nil {
			return nil, err
		}
		out = append(out, strings.ToLower(g))
	}
	return out, nil
}

// plainExt returns ".ext" for a glob "*.ext" whose extension holds no
// glob syntax and no further dot.
func plainExt(g string) (string, bool) {
	ext, ok := strings.CutPrefix(g, "*.")
	if !ok || ext == "" || strings.ContainsAny(ext, `*?[]{}\/.`) {
		return "", false
	}
	return "." + ext, true
}

// ValidGlob reports whether pattern is a usable include/exclude glob:
// "*", "?", "[a-z]", "{mov,mxf}" alternatives and "**" (any number of
// directories); a pattern without "/" is matched against the file name,
// one with "/" against the path below the folder root. Matching is
// case-insensitive.
func ValidGlob(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("pattern %q: empty", pattern)
	}
	if strings.HasPrefix(pattern, "/") {
		return fmt.Errorf("pattern %q: must be relative to the folder (no leading /)", pattern)
	}
	if !doublestar.ValidatePattern(strings.ToLower(pattern)) {
		return fmt.Errorf("pattern %q: %w", pattern, doublestar.ErrBadPattern)
	}
	return nil
}

// globMatch matches a pattern against the base name, or against the whole
// relative path when the pattern names directories ("raw/*.mov",
// "**/proxies/**").
func globMatch(pattern, lowerRel, lowerBase string) bool {
	subject := lowerBase
	if strings.Contains(pattern, "/") {
		subject = lowerRel
	}
	ok, _ := doublestar.Match(pattern, subject) // patterns were validated in newMatcher
	return ok
}

// skipped reports whether abs is one of the Skip directories or inside one.
func (m matcher) skipped(abs string) bool {
	for _, s := range m.skip {
		if under(abs, s) {
			return true
		}
	}
	return false
}

// match reports whether the regular file at rel (slash-separated, cleaned)
// is a candidate. Files below hidden directories never are: the scan does
// not descend into them.
func (m matcher) match(rel string) bool {
	if rel == "" || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || strings.HasPrefix(rel, "/") {
		return false
	}
	dir, base := path.Split(rel)
	for _, c := range strings.Split(strings.TrimSuffix(dir, "/"), "/") {
		if strings.HasPrefix(c, ".") {
			return false
		}
	}
	if m.root != "" && len(m.skip) > 0 && m.skipped(filepath.Join(m.root, filepath.FromSlash(rel))) {
		return false
	}
	return m.matchName(rel, base)
}

// matchName is match for a file whose directory is already known to be
// neither hidden nor skipped (a scan lists only such directories).
func (m matcher) matchName(rel, base string) bool {
	lowerBase := strings.ToLower(base)
	if builtinExcluded(lowerBase) {
		return false
	}
	if m.sidecars && strings.HasSuffix(lowerBase, ".json") {
		// Metadata that travels with its media file, whatever Include
		// says (include = ["*"] must not make every sidecar a job).
		return false
	}
	lowerRel := strings.ToLower(rel)
	for _, p := range m.exclude {
		if globMatch(p, lowerRel, lowerBase) {
			return false
		}
	}
	if m.incExt[path.Ext(lowerBase)] {
		return true
	}
	for _, p := range m.include {
		if globMatch(p, lowerRel, lowerBase) {
			return true
		}
	}
	return false
}

// Match reports whether a regular file at relPath (slash-separated, below
// f.Path) is one the watcher would report: not below a hidden or Skip
// directory, not a built-in or Folder.Exclude temp/metadata name, and matched
// by Folder.Include (DefaultInclude when empty). Invalid patterns match
// nothing; New rejects them.
func Match(f Folder, relPath string) bool {
	m, err := newMatcher(f)
	if err != nil {
		return false
	}
	return m.match(path.Clean(filepath.ToSlash(relPath)))
}

// under reports whether p is dir or inside it (both cleaned, absolute).
func under(p, dir string) bool {
	if p == dir {
		return true
	}
	if dir == string(filepath.Separator) {
		return strings.HasPrefix(p, dir)
	}
	return strings.HasPrefix(p, dir) && len(p) > len(dir) && p[len(dir)] == filepath.Separator
}
