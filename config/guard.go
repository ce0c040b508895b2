package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// Bounds checked before the TOML parser runs: a small file of deeply
// nested inline tables or arrays drives the parser to gigabytes of memory.
const (
	maxConfigSize  = 1 << 20
	maxConfigDepth = 32
)

// checkShape refuses a document larger than maxConfigSize or nesting
// brackets/braces deeper than maxConfigDepth. It skips strings and
// comments; it does not validate TOML (the parser does, afterwards).
func checkShape(data []byte) error {
	if len(data) > maxConfigSize {
		return fmt.Errorf("file is larger than %d bytes", maxConfigSize)
	}
	depth, line := 0, 1
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\n':
			line++
		case '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
			i-- // let the loop see the newline
		case '"', '\'':
			end := skipString(data, i)
			for _, b := range data[i:end] {
				if b == '\n' {
					line++
				}
			}
			i = end - 1
		case '[', '{':
			depth++
			if depth > maxConfigDepth {
				return fmt.Errorf("line %d: tables and arrays nested deeper than %d levels", line, maxConfigDepth)
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}

// skipString returns the index just past the string starting at data[i]
// (basic, literal, or their multi-line forms); the end of data when it is
// not closed (the parser reports that).
func skipString(data []byte, i int) int {
	q := data[i]
	if i+2 < len(data) && data[i+1] == q && data[i+2] == q {
		for j := i + 3; j+2 < len(data); j++ {
			if q == '"' && data[j] == '\\' {
				j++
				continue
			}
			if data[j] == q && data[j+1] == q && data[j+2] == q {
				return j + 3
			}
		}
		return len(data)
	}
	for j := i + 1; j < len(data); j++ {
		switch {
		case q == '"' && data[j] == '\\':
			j++
		case data[j] == q:
			return j + 1
		case data[j] == '\n':
			return j
		}
	}
	return len(data)
}

// resolve returns p with every symlink in its existing part resolved; the
// part that does not exist yet is appended as written.
func resolve(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		if _, err := os.Lstat(cur); err == nil {
			// Exists but cannot be resolved (a loop): keep it as is.
			return p
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// checkFiledDir refuses a processed_dir or failed_dir that would feed the
// folder's files back into it or never leave it: one that is a parent of
// the folder, and one that symlinks lead into the folder by another way
// than its own name (the watcher would see what is filed there).
func checkFiledDir(folder, dir string) error {
	if folder == "" || dir == "" {
		return nil
	}
	if dir != folder && within(folder, dir) {
		return fmt.Errorf("%s is a parent of the folder %s: files filed there would never leave it", dir, folder)
	}
	rf, rd := resolve(folder), resolve(dir)
	if rd == rf {
		return fmt.Errorf("%s resolves to the folder itself (%s)", dir, rf)
	}
	if within(rf, rd) {
		return fmt.Errorf("%s resolves to %s, a parent of the folder (%s)", dir, rd, rf)
	}
	if within(rd, rf) {
		relReal, _ := filepath.Rel(rf, rd)
		relSaid, err := filepath.Rel(folder, dir)
		if err != nil || !within(dir, folder) || relReal != relSaid {
			return fmt.Errorf("%s resolves through a symlink to %s inside the folder (%s): the folder would upload what is filed there again", dir, rd, rf)
		}
	}
	return nil
}
