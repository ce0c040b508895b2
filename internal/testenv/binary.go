package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildWatchfolder builds the watchfolder binary (with the race detector
// when race is true) into dir and returns its path. Call it once per test
// binary, e.g. from TestMain.
func BuildWatchfolder(dir string, race bool) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "watchfolder")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/watchfolder")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build watchfolder: %w", err)
	}
	return out, nil
}
