// Package mover moves finished files out of the watched tree into the
// processed or failed directory, keeping their relative path, never
// overwriting, and working across filesystems. Every step is safe to repeat
// after a crash: Plan picks the target (which the caller commits first), and
// Move to an already-planned target finishes what an earlier attempt began.
package mover

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// partialSuffix marks a cross-filesystem copy in progress; the target name
// appears only once the copy is complete and synced.
const partialSuffix = ".watchfolder-partial"

// ErrTargetExists means the planned target was taken meanwhile (another
// job filing a file of the same name): plan again.
var ErrTargetExists = errors.New("target already exists")

// ErrOriginalKept means a move across filesystems made its copy (complete
// and synced at the target) but could not remove the original (a
// read-only directory, say). The copy is the filed file; moving again
// recognises it instead of making another.
var ErrOriginalKept = errors.New("copied, but the original could not be removed")

// Plan returns a free target path for relPath below destDir: the same
// relative path, or "name (1).ext", "name (2).ext", ... if taken.
func Plan(destDir, relPath string) (string, error) {
	return PlanWith(destDir, relPath, nil)
}

// PlanWith is Plan where each candidate's companions (also(candidate): a
// sidecar, a receipt, a reason file) must be free too and fit NAME_MAX, so
// that filing the media never has to overwrite or strand one of them. A
// name that does not fit NAME_MAX with its " (n)" suffix (or companion) is
// shortened at a character boundary.
func PlanWith(destDir, relPath string, also func(target string) []string) (string, error) {
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
		cand, ok := candidate(dir, stem, ext, i, also)
		if !ok {
			continue
		}
		free, err := isFree(cand)
		if err != nil {
			return "", fmt.Errorf("plan move to %s: %w", cand, err)
		}
		if free && also != nil {
			for _, c := range also(cand) {
				if free, err = isFree(c); err != nil {
					return "", fmt.Errorf("plan move to %s: %w", c, err)
				} else if !free {
					break
				}
			}
		}
		if free {
			return cand, nil
		}
	}
	return "", fmt.Errorf("plan move of %s: no free name in %s after 10000 tries", relPath, dir)
}

// candidate is the i-th name tried for stem+ext in dir, shortened until it
// and its companions fit NAME_MAX.
func candidate(dir, stem, ext string, i int, also func(string) []string) (string, bool) {
	suffix := ""
	if i > 0 {
		suffix = fmt.Sprintf(" (%d)", i)
	}
	fits := func(p string) bool {
		if len(filepath.Base(p)) > nameMax {
			return false
		}
		if also != nil {
			for _, c := range also(p) {
				if len(filepath.Base(c)) > nameMax {
					return false
				}
			}
		}
		return true
	}
	for keep := len(stem); keep >= 1; keep-- {
		if keep < len(stem) && !utf8.RuneStart(stem[keep]) {
			continue
		}
		p := filepath.Join(dir, stem[:keep]+suffix+ext)
		if fits(p) {
			return p, true
		}
	}
	if i == 0 {
		// Nothing shorter helps (the extension alone is too long): use
		// the name as it is and let the filesystem judge it.
		return filepath.Join(dir, stem+ext), true
	}
	return "", false
}

// isFree reports whether neither p nor its partial-copy name exists.
func isFree(p string) (bool, error) {
	for _, c := range []string{p, partialPath(p)} {
		_, err := os.Lstat(c)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		default:
			return false, err
		}
	}
	return true, nil
}

// Move moves src to target (planned by Plan and committed by the caller).
// If src is already gone and target exists, the move happened before a
// crash and Move returns nil. Across filesystems it copies to a partial
// file, syncs, renames into place, syncs the directory, then removes src.
// Only the directories of src and target are trusted as named; use
// MoveBelow to confine the whole path below a folder root.
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
	return MoveBelow(filepath.Dir(src), src, filepath.Dir(target), target)
}

// MoveBelow is MoveUnsynced confined to trees: src must lie below srcRoot
// and target below dstRoot, and no symlink below either root is followed
// (ErrSymlink). The roots themselves are opened as named; a missing
// dstRoot and missing directories below it are created.
//
// It never replaces an existing target. If src is already gone and target
// exists, an earlier attempt finished the move. If both exist and target
// holds the same bytes (a copy across filesystems whose original was not
// removed, by a crash or a read-only directory), the copy is kept and only
// the original is removed; when that fails, the error wraps
// ErrOriginalKept, and the copy counts as filed.
func MoveBelow(srcRoot, src, dstRoot, target string) (dir string, err error) {
	sd, err := openDirAt(srcRoot, filepath.Dir(src), false)
	srcName := filepath.Base(src)
	var sst unix.Stat_t
	srcGone := errors.Is(err, unix.ENOENT)
	if err == nil {
		defer sd.close()
		sst, err = sd.lstat(srcName)
		srcGone = errors.Is(err, unix.ENOENT)
		if err != nil && !srcGone {
			return "", fmt.Errorf("move %s: %w", src, err)
		}
	} else if !srcGone {
		return "", fmt.Errorf("move %s: %w", src, err)
	}
	td, err := openDirAt(dstRoot, filepath.Dir(target), !srcGone)
	if srcGone {
		if err == nil {
			defer td.close()
			if _, terr := td.lstat(filepath.Base(target)); terr == nil {
				// Moved before a crash, maybe not synced: sync again.
				return td.path, nil
			}
		}
		return "", fmt.Errorf("move %s: %w", src, os.ErrNotExist)
	}
	if err != nil {
		return "", fmt.Errorf("move %s: target directory: %w", src, err)
	}
	defer td.close()
	tName := filepath.Base(target)
	if sst.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("move %s: %w", src, ErrNotRegular)
	}
	if tst, terr := td.lstat(tName); terr == nil {
		if tst.Dev == sst.Dev && tst.Ino == sst.Ino {
			// One file under both names (a rename's link step survived a
			// crash): drop the old name.
			return td.path, removeOriginal(sd, srcName, sst, src)
		}
		same, cerr := sameBytes(sd, srcName, td, tName)
		if cerr == nil && same {
			if err := td.sync(); err != nil {
				return "", err
			}
			return "", removeOriginal(sd, srcName, sst, src)
		}
		return "", fmt.Errorf("move %s to %s: %w", src, target, ErrTargetExists)
	}
	err = renameNoReplace(sd, srcName, td, tName)
	switch {
	case err == nil:
		return td.path, nil
	case errors.Is(err, unix.EEXIST):
		return "", fmt.Errorf("move %s to %s: %w", src, target, ErrTargetExists)
	case !errors.Is(err, unix.EXDEV):
		return "", fmt.Errorf("move %s to %s: %w", src, target, symlinkErr("rename", src, err))
	}
	partial := filepath.Base(partialPath(target))
	if err := copyAt(sd, srcName, sst, td, partial); err != nil {
		return "", fmt.Errorf("move %s to %s (copy across filesystems): %w", src, target, err)
	}
	if err := renameNoReplace(td, partial, td, tName); err != nil {
		_ = unix.Unlinkat(td.fd, partial, 0)
		if errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("move %s to %s: %w", src, target, ErrTargetExists)
		}
		return "", fmt.Errorf("move %s to %s: %w", src, target, err)
	}
	// The copy must be durable before the original goes.
	if err := td.sync(); err != nil {
		return "", err
	}
	return "", removeOriginal(sd, srcName, sst, src)
}

// removeOriginal removes src after its bytes are safe at the target, but
// only if it is still the file that was copied: a new version renamed over
// it meanwhile is a new file for the watcher, not ours to delete.
func removeOriginal(sd dirAt, name string, was unix.Stat_t, src string) error {
	now, err := sd.lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("move %s: %w: %w", src, ErrOriginalKept, err)
	}
	if now.Dev != was.Dev || now.Ino != was.Ino {
		return nil
	}
	if err := unix.Unlinkat(sd.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("move %s: %w: %w", src, ErrOriginalKept, &os.PathError{Op: "remove", Path: src, Err: err})
	}
	return nil
}

// sameBytes reports whether a and b hold identical bytes (mtimes are not
// compared: some filesystems store them coarser). Only used on the rare
// path where a target and its original both exist.
func sameBytes(ad dirAt, a string, bd dirAt, b string) (bool, error) {
	fa, sa, err := ad.openFile(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, sb, err := bd.openFile(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	if sa.Size != sb.Size {
		return false, nil
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
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

// copyAt copies src (in sd, the version st) to a new file dst in td,
// synced, with src's mtime and permissions. A leftover dst from an earlier
// attempt is replaced; a symlink planted there is removed, not followed.
func copyAt(sd dirAt, src string, st unix.Stat_t, td dirAt, dst string) error {
	in, ist, err := sd.openFile(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if ist.Dev != st.Dev || ist.Ino != st.Ino {
		return fmt.Errorf("%s was replaced while being moved", in.Name())
	}
	if err := unix.Unlinkat(td.fd, dst, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "remove", Path: filepath.Join(td.path, dst), Err: err}
	}
	ofd, err := unix.Openat(td.fd, dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, ist.Mode&0o777)
	if err != nil {
		return symlinkErr("create", filepath.Join(td.path, dst), err)
	}
	out := os.NewFile(uintptr(ofd), filepath.Join(td.path, dst))
	fail := func(err error) error {
		out.Close()
		_ = unix.Unlinkat(td.fd, dst, 0)
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return fail(err)
	}
	// Keep the editor's mtime: operators sort processed/ by it, and a
	// retry recognises its own copy by it.
	ts := []unix.Timespec{ist.Atim, ist.Mtim}
	if err := unix.UtimesNanoAt(td.fd, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(err)
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		_ = unix.Unlinkat(td.fd, dst, 0)
		return err
	}
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

// MkdirAll is os.MkdirAll that makes what it creates durable: the name of
// each directory it makes is synced in its parent, so a power cut cannot
// take away a directory that files were then moved into.
func MkdirAll(path string, perm os.FileMode) error {
	var made []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		made = append(made, p)
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	for _, p := range made {
		if err := SyncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// PruneEmpty removes dir and its parents while they are empty, stopping at
// (never removing) root. Errors are ignored: a directory that is not empty
// or is in use simply stays. No symlink below root is followed.
func PruneEmpty(root, dir string) {
	root = filepath.Clean(root)
	for dir = filepath.Clean(dir); dir != root && strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		pd, err := openDirAt(root, filepath.Dir(dir), false)
		if err != nil {
			return
		}
		err = unix.Unlinkat(pd.fd, filepath.Base(dir), unix.AT_REMOVEDIR)
		pd.close()
		if err != nil {
			return
		}
	}
}

// WriteFileAtomic writes data to path via a temp file, sync and rename, so a
// reader never sees half a reason or receipt file, and the file survives a
// power loss once it returns. It replaces an existing file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(filepath.Dir(path), path, data, perm, true, true, true)
}

// WriteFile is WriteFileAtomic without the syncs: a reader still never sees
// half a file, but a power loss may lose it.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writeFile(filepath.Dir(path), path, data, perm, false, false, true)
}

// WriteNew writes a new file at path below root the way WriteFileAtomic
// does (synced when durable), but never replaces an existing file
// (ErrTargetExists: a user's own file of that name stays as it is) and
// never follows a symlink below root.
func WriteNew(root, path string, data []byte, perm os.FileMode, durable bool) error {
	return writeFile(root, path, data, perm, durable, durable, false)
}

// WriteNewWhole is WriteNew with the data synced but not the directory:
// after a power loss the file is whole or absent, never truncated, and it
// is durable once the caller syncs its directory (one sync for many files).
func WriteNewWhole(root, path string, data []byte, perm os.FileMode) error {
	return writeFile(root, path, data, perm, true, false, false)
}

// ReadSmall reads at most limit bytes of the regular file at path below
// root, without following symlinks or blocking on a FIFO.
func ReadSmall(root, path string, limit int64) ([]byte, error) {
	f, err := OpenRegular(root, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

func writeFile(root, path string, data []byte, perm os.FileMode, syncData, syncDir, replace bool) error {
	d, err := openDirAt(root, filepath.Dir(path), true)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.close()
	name := filepath.Base(path)
	// The temporary name is derived from path, so a retry after a crash
	// overwrites (not leaks) a leftover, and short: path plus a suffix would
	// not fit NAME_MAX for long names (a 242-byte name's receipt is 255).
	h := sha256.Sum256([]byte(name))
	tmp := ".watchfolder-" + hex.EncodeToString(h[:12]) + ".tmp"
	if err := unix.Unlinkat(d.fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fd, err := unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, symlinkErr("create", filepath.Join(d.path, tmp), err))
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, tmp))
	if !replace {
		// Receipts and reason files are for editors: they follow the
		// directory's group and mode, not the daemon's umask (best
		// effort: a mode is no reason to lose the file).
		_ = shareLikeParent(d.fd, fd)
	}
	_, err = f.Write(data)
	if err == nil && syncData {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if replace {
			err = unix.Renameat(d.fd, tmp, d.fd, name)
		} else if err = renameNoReplace(d, tmp, d, name); errors.Is(err, unix.EEXIST) {
			err = ErrTargetExists
		}
	}
	if err != nil {
		_ = unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !syncDir {
		return nil
	}
	return d.sync()
}
