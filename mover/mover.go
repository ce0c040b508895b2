// Package mover moves finished files out of the watched tree into the
// processed or failed directory, keeping their relative path, never
// overwriting, and working across filesystems. Every step is safe to repeat
// after a crash: Plan picks the target (which the caller commits first), and
// Move to an already-planned target finishes what an earlier attempt began.
package mover

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// partialSuffix marks a cross-filesystem copy in progress; the target name
// appears only once the copy is complete and synced.
const partialSuffix = ".watchfolder-partial"

// ErrTargetExists means the planned target was taken meanwhile (another
// job filing a file of the same name): plan again.
var ErrTargetExists = errors.New("target already exists")

// Plan returns a free target path for relPath below destDir: the same
// relative path, or "name (1).ext", "name (2).ext", ... if taken. taken
// reports extra names to avoid (e.g. the sidecar's own target).
func Plan(destDir, relPath string) (string, error) {
	// Cleaned first: "a/../../x" must not slip past the ".." check.
	rel := filepath.Clean(filepath.FromSlash(relPath))
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("plan move of %q: path escapes %s", relPath, destDir)
	}
	base := filepath.Join(destDir, rel)
	dir, name := filepath.Split(base)
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < 10000; i++ {
		cand := base
		if i > 0 {
			cand = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, i, ext))
		}
		if _, err := os.Lstat(cand); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Lstat(partialPath(cand)); errors.Is(err, os.ErrNotExist) {
				return cand, nil
			}
		} else if err != nil {
			return "", fmt.Errorf("plan move to %s: %w", cand, err)
		}
	}
	return "", fmt.Errorf("plan move of %s: no free name in %s after 10000 tries", relPath, dir)
}

// Move moves src to target (planned by Plan and committed by the caller).
// If src is already gone and target exists, the move happened before a
// crash and Move returns nil. Across filesystems it copies to a partial
// file, syncs, renames into place, syncs the directory, then removes src.
func Move(src, target string) error {
	dir, err := MoveUnsynced(src, target)
	if err != nil || dir == "" {
		return err
	}
	return SyncDir(dir)
}

// MoveUnsynced is Move without the final directory sync: the move is
// durable only once the caller has synced dir (when not ""). Moves into one
// directory can then share one sync.
func MoveUnsynced(src, target string) (dir string, err error) {
	dir = filepath.Dir(target)
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		if _, terr := os.Lstat(target); terr == nil {
			// Moved before a crash, maybe not synced: sync again.
			return dir, nil
		}
		return "", fmt.Errorf("move %s: %w", src, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("move %s: create %s: %w", src, dir, err)
	}
	// os.Rename would replace an existing target; the planned target must
	// be free, so check again (another process may have taken the name).
	if _, err := os.Lstat(target); err == nil {
		return "", fmt.Errorf("move %s to %s: %w", src, target, ErrTargetExists)
	}
	err = os.Rename(src, target)
	if err == nil {
		return dir, nil
	}
	if !errors.Is(err, syscall.EXDEV) {
		return "", fmt.Errorf("move %s to %s: %w", src, target, err)
	}
	partial := partialPath(target)
	if err := copyFile(src, partial); err != nil {
		return "", fmt.Errorf("move %s to %s (copy across filesystems): %w", src, target, err)
	}
	if err := os.Rename(partial, target); err != nil {
		return "", fmt.Errorf("move %s to %s: %w", src, target, err)
	}
	// The copy must be durable before the original goes.
	if err := SyncDir(dir); err != nil {
		return "", err
	}
	if err := os.Remove(src); err != nil {
		return "", fmt.Errorf("move %s: remove original after copy: %w", src, err)
	}
	return "", nil
}

// nameMax is the longest file name (bytes) on Linux filesystems.
const nameMax = 255

// partialPath is where a cross-filesystem copy to target is written before
// it is renamed into place: target plus partialSuffix, or, when that name
// would exceed NAME_MAX, a short hidden name derived from target's name.
func partialPath(target string) string {
	dir, name := filepath.Split(target)
	if len(name)+len(partialSuffix) <= nameMax {
		return target + partialSuffix
	}
	h := sha256.Sum256([]byte(name))
	return filepath.Join(dir, "."+hex.EncodeToString(h[:12])+partialSuffix)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return err
	}
	// Keep the editor's mtime: operators sort processed/ by it.
	_ = os.Chtimes(dst, fi.ModTime(), fi.ModTime())
	return nil
}

// SyncDir fsyncs a directory, making renames into it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// PruneEmpty removes dir and its parents while they are empty, stopping at
// (never removing) root. Errors are ignored: a directory that is not empty
// or is in use simply stays.
func PruneEmpty(root, dir string) {
	root = filepath.Clean(root)
	for dir = filepath.Clean(dir); dir != root && strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if err := os.Remove(dir); err != nil {
			return
		}
	}
}

// WriteFileAtomic writes data to path via a temp file, sync and rename, so a
// reader never sees half a reason or receipt file, and the file survives a
// power loss once it returns.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true)
}

// WriteFile is WriteFileAtomic without the syncs: a reader still never sees
// half a file, but a power loss may lose it. For files that can be rebuilt
// from the state database (receipts), where two fsyncs per file would be
// most of the cost of delivering a small one.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, false)
}

func writeFile(path string, data []byte, perm os.FileMode, durable bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The temporary name is derived from path, so a retry after a crash
	// overwrites (not leaks) a leftover, and short: path plus a suffix would
	// not fit NAME_MAX for long names (a 242-byte name's receipt is 255).
	h := sha256.Sum256([]byte(filepath.Base(path)))
	tmp := filepath.Join(filepath.Dir(path), ".watchfolder-"+hex.EncodeToString(h[:12])+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	return SyncDir(filepath.Dir(path))
}
