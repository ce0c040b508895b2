package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config"
)

// parseAge reads a duration that may be given in days ("7d", "1d12h").
func parseAge(s string) (time.Duration, error) { return config.ParseAge(s) }

// checkFolder reports an unknown folder name the same way for every
// command: exit 2 with the names that exist.
func (e *env) checkFolder(name string, cfg *config.Config, folder string) bool {
	if folder == "" || cfg.Folder(folder) != nil {
		return true
	}
	names := make([]string, 0, len(cfg.Folders))
	for _, f := range cfg.Folders {
		names = append(names, f.Name)
	}
	fmt.Fprintf(e.stderr, "watchfolder %s: no folder %q in %s (folders: %s)\n", name, folder, cfg.Path, strings.Join(names, ", "))
	return false
}

// resolveRef turns a job reference into what the daemon looks up: ids
// stay as they are; a path is made absolute from the caller's directory
// (the daemon's own directory means nothing to the operator), and a path
// where a job was filed (processed/ or failed/) becomes the path the file
// was found at.
func resolveRef(cfg *config.Config, ref string) string {
	if _, err := strconv.ParseUint(ref, 10, 64); err == nil {
		return ref
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return ref
	}
	for _, f := range cfg.Folders {
		for _, dir := range []string{f.ProcessedDir, f.FailedDir} {
			if dir == "" {
				continue
			}
			rel, err := filepath.Rel(dir, abs)
			if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
				continue
			}
			return filepath.Join(f.Path, rel)
		}
	}
	return abs
}
