package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

// ctimeOf is the change time in a stat result. The kernel sets it on every
// write and metadata change and no user call can set it back, which is why
// it catches a rewrite in place that restores size and mtime.
func ctimeOf(st *syscall.Stat_t) time.Time {
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec).UTC()
}

// changeTime is path's change time (without following a symlink).
func changeTime(path string) (time.Time, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return time.Time{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return ctimeOf(&st), nil
}

// hashFile is the hex SHA-256 of the file at path.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkVersion runs before a destination counts as delivered: the file
// must still be the version its bytes were read from. Size, mtime and
// inode are the usual signs; a change time that moved with them unchanged
// means either a metadata change (chmod, chown) or a rewrite in place that
// restored them — told apart by the SHA-256 of what was sent (sha, or the
// job's), when there is one. A change makes the whole job start over with
// the new version (ErrSourceChanged).
func (d *Daemon) checkVersion(ctx context.Context, j *state.Job, sha string) error {
	if j.CTime.IsZero() {
		return nil // a job from before change times were kept
	}
	fi, err := os.Lstat(j.Path)
	if err != nil {
		return fmt.Errorf("check %s before it counts as delivered: %w", j.Path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if fi.Size() != j.Size || !fi.ModTime().Equal(j.ModTime) || st.Ino != j.Inode || uint64(st.Dev) != j.Device {
		return fmt.Errorf("%s changed while it was delivered: %w", j.Path, uploader.ErrSourceChanged)
	}
	ct := ctimeOf(st)
	if ct.Equal(j.CTime) {
		return nil
	}
	if sha == "" {
		sha = j.SHA256
	}
	if sha != "" {
		got, err := hashFile(ctx, j.Path)
		if err == nil && got == sha {
			// Same bytes; only the metadata changed. Record the new change
			// time so the filer's own check agrees.
			if _, err := d.commit(ctx, j.ID, "change time", func(cur *state.Job) error {
				cur.CTime = ct
				return nil
			}); err != nil {
				return err
			}
			return nil
		}
	}
	return fmt.Errorf("%s was rewritten in place while it was delivered (same size and modification time, new change time): %w",
		j.Path, uploader.ErrSourceChanged)
}

// errNothingToSkip ends skipDelivered's commit without writing.
var errNothingToSkip = errors.New("no destination to skip")

// skipDelivered keeps the promise that the exact version already delivered
// is never uploaded again — e.g. a file moved back from processed/ by hand.
// An earlier job of the same path that ended done with the same size and
// mtime delivered these bytes when its recorded SHA-256 matches the file's
// (the inode and device when it recorded none: then it is the same file).
// Destinations it delivered to are marked done with its objects and ids;
// when that covers every destination the job goes straight to moving and
// the file is filed into processed/ like any delivered file. Destinations
// it did not cover are uploaded as usual. done reports that the caller
// must return st.
func (d *Daemon) skipDelivered(ctx context.Context, j *state.Job) (st step, done bool) {
	jobs, err := d.otherJobs(ctx, j)
	if err != nil {
		return stop, false
	}
	var prev *state.Job
	sum := ""
	for _, p := range jobs {
		if p.ID == j.ID || p.State != state.Done || p.Size != j.Size || !p.ModTime.Equal(j.ModTime) {
			continue
		}
		if p.SHA256 != "" {
			if sum == "" {
				if sum, err = hashFile(ctx, j.Path); err != nil {
					return stop, false
				}
			}
			if sum != p.SHA256 {
				continue
			}
		} else if p.Inode != j.Inode || p.Device != j.Device {
			continue
		}
		prev = p
		break
	}
	if prev == nil {
		return stop, false
	}
	mem := j
	var names []string
	updated, err := d.store.Update(ctx, j.ID, func(cur *state.Job) error {
		names = names[:0]
		for i := range cur.Destinations {
			ds := &cur.Destinations[i]
			pd := prev.Dest(ds.Name)
			if ds.State == state.DestDone || pd == nil || pd.State != state.DestDone {
				continue
			}
			ds.State, ds.Error, ds.NextAttempt = state.DestDone, "", time.Time{}
			ds.VendorID, ds.Object, ds.Checkpoint, ds.BytesDone = pd.VendorID, pd.Object, pd.Checkpoint, pd.BytesDone
			names = append(names, ds.Name)
		}
		if len(names) == 0 {
			return errNothingToSkip
		}
		cur.SHA256 = prev.SHA256
		if cur.SHA256 == "" {
			cur.SHA256 = sum
		}
		cur.Sidecar = mem.Sidecar
		if cur.CTime.IsZero() {
			cur.CTime = mem.CTime
		}
		cur.Note("", fmt.Sprintf("these bytes were delivered already by job %d: not sent again to %s",
			prev.ID, strings.Join(names, ", ")))
		all := true
		for _, ds := range cur.Destinations {
			all = all && ds.State == state.DestDone
		}
		if all {
			cur.State, cur.MoveTo, cur.Error, cur.NextAttempt = state.Moving, state.MoveProcessed, "", time.Time{}
		}
		return nil
	})
	if errors.Is(err, errNothingToSkip) {
		return stop, false
	}
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, state.ErrNotFound) {
			d.log.Error("cannot record earlier delivery; will try again", "job", j.ID, "err", err, "retry_in", commitRetry)
			d.sched.pushAt(j.ID, time.Now().Add(commitRetry))
		}
		return stop, true
	}
	d.log.Info("file was delivered already; not sending it again", "job", j.ID, "path", j.Path,
		"earlier_job", prev.ID, "destinations", strings.Join(names, ","))
	if updated.State == state.Moving {
		return d.handToFiler(ctx, fileReq{id: j.ID}), true
	}
	return next, true
}
