package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
)

// JobReader reads jobs: *state.Store or the etcd store.
type JobReader interface {
	Get(ctx context.Context, id uint64) (*state.Job, error)
	Latest(ctx context.Context, folder, relpath string) (*state.Job, error)
}

// FindJob resolves a job reference: a numeric id, or a file path (absolute,
// or relative to the working directory) inside a watched folder — the
// newest job for that path.
func FindJob(ctx context.Context, st JobReader, folders []config.Folder, ref string) (*state.Job, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, fmt.Errorf("no job id or path given")
	}
	if id, err := strconv.ParseUint(ref, 10, 64); err == nil {
		j, err := st.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", id, err)
		}
		return j, nil
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	for _, f := range folders {
		rel, err := filepath.Rel(f.Path, abs)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		j, err := st.Latest(ctx, f.Name, filepath.ToSlash(rel))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		return j, nil
	}
	return nil, fmt.Errorf("%s is not inside a watched folder: %w", ref, state.ErrNotFound)
}
