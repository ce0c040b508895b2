package daemon

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

var errSidecarPending = errors.New("sidecar not there yet")

// maxSidecar bounds what is read; ParseMetadata enforces its own limit,
// this only keeps a huge file from being read whole.
const maxSidecar = 1<<20 + 1

func sidecarPath(mediaPath string) string {
	return strings.TrimSuffix(mediaPath, filepath.Ext(mediaPath)) + ".json"
}

// findSidecar returns the path of <stem>.json beside the media per the
// folder's sidecar policy, after checking it parses. errSidecarPending
// means: look again later (required but absent, or still being written).
func (d *Daemon) findSidecar(j *state.Job, f *config.Folder) (string, error) {
	if f.Sidecar == "ignore" {
		return "", nil
	}
	p := sidecarPath(j.Path)
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.Mode().IsRegular():
		if time.Since(fi.ModTime()) < f.StableAfter && time.Since(j.Created) < f.SidecarWait {
			return "", errSidecarPending
		}
		if _, err := readSidecar(f.Path, p, d.sidecarKeys); err != nil {
			return p, uploader.Permanent(err) // p: it moves with the media
		}
		return p, nil
	case err == nil:
		return "", uploader.Permanent(fmt.Errorf("sidecar %s is not a regular file", filepath.Base(p)))
	case errors.Is(err, syscall.ENAMETOOLONG):
		// The media name is so long that no sidecar name can exist.
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("sidecar %s: %w", filepath.Base(p), err)
	}
	if f.Sidecar == "required" {
		if time.Since(j.Created) < f.SidecarWait {
			return "", errSidecarPending
		}
		return "", uploader.Permanent(fmt.Errorf("sidecar %s is required (sidecar = \"required\") but did not appear within %s",
			filepath.Base(p), f.SidecarWait))
	}
	return "", nil
}

// readSidecar reads and parses the sidecar at p, below the folder root.
// It never follows a symlink below the root (one planted in place of the
// sidecar could point at /etc/shadow, read as root), never blocks on a
// FIFO put in its place, and reads only regular files.
func readSidecar(root, p string, platforms []string) (uploader.Metadata, error) {
	data, err := mover.ReadSmall(root, p, maxSidecar)
	if err != nil {
		return uploader.Metadata{}, fmt.Errorf("sidecar %s: %w", filepath.Base(p), err)
	}
	m, err := uploader.ParseMetadata(data, platforms)
	if err != nil {
		return uploader.Metadata{}, fmt.Errorf("sidecar %s is malformed: %w", filepath.Base(p), err)
	}
	return m, nil
}

// loadMetadata reads the job's sidecar, or derives a title from the name.
func (d *Daemon) loadMetadata(j *state.Job) (uploader.Metadata, error) {
	var m uploader.Metadata
	if j.Sidecar != "" {
		root := filepath.Dir(j.Sidecar)
		if f := d.rt.Load().folders[j.Folder]; f != nil {
			root = f.Path
		}
		var err error
		if m, err = readSidecar(root, j.Sidecar, d.sidecarKeys); err != nil {
			return m, uploader.Permanent(err)
		}
	}
	if m.Title == "" {
		name := path.Base(j.RelPath)
		m.Title = strings.TrimSuffix(name, path.Ext(name))
	}
	return m, nil
}
