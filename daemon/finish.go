package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/watcher"
)

// moveRetry is how long a job waits in moving after a failed move (an
// unwritable processed dir, a full disk). It is never uploaded again.
const moveRetry = 30 * time.Second

// fileBatchMax caps how many jobs one filing pass takes: one commit for
// all of them, so a pass must stay short enough not to hold others up.
const fileBatchMax = 256

// fileReq hands a job to the filer. commit, when set, is a change the
// worker left for the filer to commit before filing (a quickStart job's
// upload results, which move it to moving).
type fileReq struct {
	id     uint64
	commit func(*state.Job) error
}

// filer files jobs that reached moving, apart from the upload workers: a
// worker is free for the next upload while its last file is filed, and
// jobs that arrive together share their commits and directory syncs.
//
// Each pass makes one commit: the upload results the workers left (see
// quickStart) together with done for the jobs the previous pass filed.
// Those are already moved and their directories synced; a crash before
// their done is committed finds them in moving with the file at its
// target, and finishes them the same way. When no new work is waiting,
// done is committed at once.
//
// It ends when in is closed; every job it takes is handed back to the
// scheduler once its pass is committed.
func (d *Daemon) filer(ctx context.Context, in <-chan fileReq) {
	var held []*filing // filed, done not yet committed
	open := true
	for open || len(held) > 0 {
		var batch []fileReq
		if len(held) == 0 {
			r, ok := <-in
			if !ok {
				return
			}
			batch = append(batch, r)
		}
	more:
		for open && len(batch) < fileBatchMax {
			select {
			case r, ok := <-in:
				if !ok {
					open = false
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		d.commitPass(ctx, batch, held)
		for _, f := range held {
			d.sched.done(f.j.ID)
		}
		held = d.fileBatch(ctx, batch)
		filed := make(map[uint64]bool, len(held))
		for _, f := range held {
			filed[f.j.ID] = true
		}
		for _, r := range batch {
			if !filed[r.id] {
				d.sched.done(r.id)
			}
		}
	}
}

// filing is a job whose file is in place, waiting for its final commit.
type filing struct {
	j      *state.Job
	failed bool
	note   string
	kept   string // filed as a copy; why the original is still in the folder
	dir    string // to sync before the commit, or ""
}

// finalize is the final commit's change for f's job.
func (f *filing) finalize(j *state.Job) error {
	if f.failed {
		j.State = state.Failed
	} else {
		j.State = state.Done
		j.Error = ""
	}
	j.NextAttempt = time.Time{}
	if f.note != "" {
		j.Note("", f.note)
	}
	return nil
}

// fileBatch moves the files of jobs in moving into processed_dir or
// failed_dir, writes receipts and reason files and syncs the directories
// the files went into. It returns the jobs ready for their final commit.
// The target is committed before the move, so a crash mid-way finishes the
// same move instead of planning a second copy; done is committed only after
// the move is durable, so a power loss cannot bring back a file whose job
// is done.
func (d *Daemon) fileBatch(ctx context.Context, reqs []fileReq) []*filing {
	var ready []*filing
	// Cluster mode: the jobs and their claims in one read for the batch
	// (one etcd round trip instead of two per file).
	var batch *filingRead
	if d.cl != nil && len(reqs) > 0 {
		ids := make([]uint64, len(reqs))
		for i, r := range reqs {
			ids[i] = r.id
		}
		batch = d.cl.loadForFiling(ctx, ids)
	}
	for _, r := range reqs {
		if j := d.jobToFile(ctx, r.id, batch); j != nil {
			if f := d.file(ctx, j); f != nil {
				ready = append(ready, f)
			}
		}
	}
	synced := map[string]error{}
	kept := ready[:0]
	for _, f := range ready {
		if f.dir != "" {
			err, ok := synced[f.dir]
			if !ok {
				err = mover.SyncDir(f.dir)
				synced[f.dir] = err
			}
			if err != nil {
				d.moveLater(ctx, f.j, err)
				continue
			}
		}
		kept = append(kept, f)
	}
	return kept
}

// jobToFile returns job id if it is to be filed now: in moving and, in
// cluster mode, still this node's. batch is the filer's read of the jobs
// and claims (nil: read the job on its own).
func (d *Daemon) jobToFile(ctx context.Context, id uint64, batch *filingRead) *state.Job {
	if batch == nil {
		j, err := d.store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, state.ErrNotFound) && ctx.Err() == nil {
				d.log.Error("load job", "job", id, "err", err)
			}
			return nil
		}
		if j.State != state.Moving || !d.cl.owns(ctx, j.ID) {
			return nil
		}
		return j
	}
	j := batch.jobs[id]
	switch {
	case j == nil || j.State != state.Moving:
		return nil
	case !batch.held[id]:
		d.cl.lost(id)
		return nil
	case time.Since(batch.at) > ownsFresh && !d.cl.owns(ctx, id):
		return nil // filing the others took a while: asked again
	}
	return j
}

// commitPass commits, in one transaction when it can, the changes workers
// left in reqs and done or failed for filed jobs. One job's error (e.g.
// forgotten meanwhile) does not hold the others back. A job whose upload
// result cannot be committed stays as it was: its upload is repeated when
// it runs again.
func (d *Daemon) commitPass(ctx context.Context, reqs []fileReq, filed []*filing) {
	var ids []uint64
	fns := map[uint64]func(*state.Job) error{}
	isFiled := map[uint64]bool{}
	for _, r := range reqs {
		if r.commit != nil {
			ids = append(ids, r.id)
			fns[r.id] = r.commit
		}
	}
	for _, f := range filed {
		ids = append(ids, f.j.ID)
		fns[f.j.ID] = f.finalize
		isFiled[f.j.ID] = true
	}
	if len(ids) == 0 {
		return
	}
	apply := func(j *state.Job) error { return fns[j.ID](j) }
	committed, err := d.store.UpdateMany(ctx, ids, apply)
	if err != nil {
		committed = committed[:0]
		for _, id := range ids {
			j, err := d.store.Update(ctx, id, apply)
			if err == nil {
				committed = append(committed, j)
				continue
			}
			if ctx.Err() != nil || errors.Is(err, state.ErrNotFound) {
				continue
			}
			if isFiled[id] {
				// Moved and synced: the next pass finds the file at its
				// target and commits again.
				d.log.Error("commit final state; will try again", "job", id, "err", err, "retry_in", moveRetry)
				d.sched.pushAt(id, time.Now().Add(moveRetry))
			} else {
				d.log.Error("cannot record the upload; the file will be sent again", "job", id, "err", err, "retry_in", moveRetry)
				d.sched.pushAt(id, time.Now().Add(moveRetry))
			}
		}
	}
	for _, j := range committed {
		if !isFiled[j.ID] {
			continue
		}
		if j.State == state.Failed {
			d.log.Error("file moved to failed", "job", j.ID, "path", j.FinalPath, "reason", j.Error)
		} else {
			d.log.Info("file delivered", "job", j.ID, "path", j.FinalPath, "size", j.Size)
		}
		d.jobFinished(j)
	}
}

// file does the file-system part of finishing j. It returns nil when the
// job is not ready for its final commit (moved on otherwise, or to be tried
// again later).
func (d *Daemon) file(ctx context.Context, j *state.Job) *filing {
	f := d.rt.Load().folders[j.Folder]
	if f == nil {
		return nil // folder removed by a reload: the job stays as it is
	}
	failed := j.MoveTo == state.MoveFailed
	destDir := f.ProcessedDir
	if failed {
		destDir = f.FailedDir
	}
	// The file at the path must still be the version that was delivered.
	// If it was replaced (a re-export renamed over it), the job is finished
	// for the bytes it read; the new file is a new job and must not be
	// filed as delivered.
	if changed, _, err := d.sourceChanged(j); err == nil && changed {
		d.finishReplaced(ctx, j, failed)
		return nil
	}
	out := &filing{failed: failed}
	root := filingRoot(f.Path, destDir)
	also := companions(failed, f.Receipts, j.Sidecar != "")
	if j.FinalPath != "" && !companionsFree(j.FinalPath, also) {
		// Planned before the upload without its companions in mind: a
		// user's own "<name>.receipt.json", or a sidecar name taken. If
		// the media is not at its target yet, plan a name whose companions
		// are free instead of overwriting or stranding one of them.
		if _, err := os.Lstat(j.FinalPath); errors.Is(err, os.ErrNotExist) {
			j.FinalPath = ""
		}
	}
	for try := 1; ; try++ {
		if j.FinalPath == "" {
			target, err := mover.PlanWith(destDir, j.RelPath, also)
			if err != nil {
				d.moveLater(ctx, j, err)
				return nil
			}
			if j, err = d.store.Update(ctx, j.ID, func(j *state.Job) error {
				j.FinalPath = target
				return nil
			}); err != nil {
				d.log.Error("commit move target", "job", j.ID, "err", err)
				return nil
			}
		}
		dir, err := mover.MoveBelow(f.Path, j.Path, root, j.FinalPath)
		if err == nil {
			out.dir = dir
			break
		}
		if errors.Is(err, mover.ErrOriginalKept) {
			// The copy in place is the filed file; saying so once (the job
			// ends here) beats copying it again at every retry.
			out.kept = "the file was copied to " + j.FinalPath + " but the original could not be removed from the folder" +
				" (remove it by hand; that exact version is not uploaded again): " + err.Error()
			d.log.Warn("filed as a copy; the original stays in the folder", "job", j.ID, "path", j.Path, "target", j.FinalPath, "err", err)
			break
		}
		if errors.Is(err, mover.ErrTargetExists) && try < 5 {
			// Another job filed a file of the same name between our plan
			// and the move: plan again.
			j.FinalPath = ""
			continue
		}
		if _, srcErr := os.Lstat(j.Path); !errors.Is(srcErr, os.ErrNotExist) {
			d.moveLater(ctx, j, err)
			return nil
		}
		// Delivered, but someone removed the file before it was filed.
		out.note = "file was removed from the folder before it could be moved"
		d.log.Warn(out.note, "job", j.ID, "path", j.Path)
		break
	}
	out.j = j
	if j.Sidecar != "" {
		dir, err := d.fileSidecar(j, f.Path, root)
		if err != nil {
			d.moveLater(ctx, j, fmt.Errorf("move sidecar: %w", err))
			return nil
		}
		if dir != "" {
			out.dir = dir // the media file's directory too
		}
	}
	if out.note == "" {
		var err error
		if failed {
			err = writeCompanion(root, j, ReasonSuffix, []byte(reasonText(j, time.Now())), true)
		} else if f.Receipts {
			// Its data is synced, its name is not: the batch's sync of the
			// directory covers it. A power cut leaves it whole or absent
			// (it can be rebuilt from state.db), never truncated.
			err = writeCompanion(root, j, ReceiptSuffix, receipt(j, time.Now()), false)
		}
		if err != nil {
			d.moveLater(ctx, j, err)
			return nil
		}
	}
	if out.kept != "" {
		out.note = out.kept
		return out // the original is still there: nothing to prune
	}
	mover.PruneEmpty(f.Path, filepath.Dir(j.Path))
	return out
}

// filingRoot is the tree that filing into destDir is confined to: the
// folder root when destDir lies inside the folder (an editor can replace
// an empty processed/ or failed/ with a symlink), else destDir itself, as
// the operator named it. Nothing below the root is reached through a
// symlink.
func filingRoot(folder, destDir string) string {
	folder, destDir = filepath.Clean(folder), filepath.Clean(destDir)
	if strings.HasPrefix(destDir, folder+string(filepath.Separator)) {
		return folder
	}
	return destDir
}

// companions returns the names filed beside a media target: its sidecar,
// and its reason file or receipt.
func companions(failed, receipts, sidecar bool) func(string) []string {
	return func(target string) []string {
		var out []string
		if sidecar {
			out = append(out, sidecarPath(target))
		}
		if failed {
			out = append(out, CompanionPath(target, ReasonSuffix))
		} else if receipts {
			out = append(out, CompanionPath(target, ReceiptSuffix))
		}
		return out
	}
}

func companionsFree(target string, also func(string) []string) bool {
	for _, c := range also(target) {
		if len(filepath.Base(c)) > 255 {
			return false
		}
		if _, err := os.Lstat(c); !errors.Is(err, os.ErrNotExist) {
			return false
		}
	}
	return true
}

// fileSidecar moves j's sidecar beside its filed media, as <stem>.json, or,
// when a file of that name is there already (not put there by an earlier
// attempt of this job), under a free suffixed name: it never overwrites and
// never leaves the job waiting for a name that stays taken.
func (d *Daemon) fileSidecar(j *state.Job, folder, root string) (string, error) {
	target := sidecarPath(j.FinalPath)
	for try := 0; try < 5; try++ {
		dir, err := mover.MoveBelow(folder, j.Sidecar, root, target)
		switch {
		case err == nil:
			return dir, nil
		case errors.Is(err, os.ErrNotExist):
			return "", nil // gone (or filed before a crash)
		case errors.Is(err, mover.ErrOriginalKept):
			d.log.Warn("sidecar filed as a copy; the original stays in the folder", "job", j.ID, "sidecar", j.Sidecar, "err", err)
			return "", nil
		case !errors.Is(err, mover.ErrTargetExists):
			return "", err
		}
		alt, perr := mover.Plan(filepath.Dir(target), filepath.Base(target))
		if perr != nil {
			return "", perr
		}
		d.log.Warn("sidecar name taken in the destination; filing it under another name", "job", j.ID, "taken", target, "as", alt)
		target = alt
	}
	return "", fmt.Errorf("sidecar %s: no free name", j.Sidecar)
}

// writeCompanion writes j's receipt or reason file beside its filed media,
// never over a file it did not write: a user's own file of that name keeps
// it, and the companion goes under a suffixed name instead. durable: the
// directory is synced too; else only the data (see mover.WriteNewWhole).
func writeCompanion(root string, j *state.Job, suffix string, data []byte, durable bool) error {
	p := CompanionPath(j.FinalPath, suffix)
	for try := 0; try < 5; try++ {
		var err error
		if durable {
			err = mover.WriteNew(root, p, data, 0o644, true)
		} else {
			err = mover.WriteNewWhole(root, p, data, 0o644)
		}
		if !errors.Is(err, mover.ErrTargetExists) {
			return err
		}
		if ours(root, p, j) {
			return nil // written by an attempt that did not get to commit
		}
		if p, err = mover.Plan(filepath.Dir(p), filepath.Base(p)); err != nil {
			return err
		}
	}
	return fmt.Errorf("write %s: no free name", CompanionPath(j.FinalPath, suffix))
}

// ours reports whether the companion at p was written for job j.
func ours(root, p string, j *state.Job) bool {
	data, err := mover.ReadSmall(root, p, 1<<20)
	if err != nil {
		return false
	}
	if strings.HasSuffix(p, ReasonSuffix) {
		return strings.HasPrefix(string(data), reasonHeader) &&
			strings.Contains(string(data), fmt.Sprintf("\nJob id:      %d\n", j.ID))
	}
	var r struct {
		Job    uint64 `json:"job"`
		Folder string `json:"folder"`
		Path   string `json:"path"`
	}
	return json.Unmarshal(data, &r) == nil && r.Job == j.ID && r.Folder == j.Folder && r.Path == j.RelPath
}

const reasonHeader = "watchfolder could not deliver this file.\n"

// finishReplaced ends a job whose file was replaced after it was read: the
// delivered (or failed) version is no longer in the folder, so nothing is
// moved, and the watcher is told to report the new file afresh.
func (d *Daemon) finishReplaced(ctx context.Context, j *state.Job, failed bool) {
	const note = "the file was replaced by a new version after it was read; that version is a new job"
	_, err := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		if failed {
			j.State = state.Failed
		} else {
			j.State = state.Done
			j.Error = ""
		}
		j.NextAttempt = time.Time{}
		// The planned target was never used: the file there (if any)
		// belongs to the new version's job, which files it itself.
		j.FinalPath = ""
		j.Note("", note)
		return nil
	})
	if err != nil {
		d.log.Error("commit final state", "job", j.ID, "err", err)
		return
	}
	d.log.Warn(note, "job", j.ID, "path", j.Path)
	d.watcher.Load().Forget(j.Path)
}

// Companion files written beside a filed media file.
const (
	ReceiptSuffix = ".receipt.json"
	ReasonSuffix  = ".error.txt"
)

// CompanionPath is media+suffix, shortened when that name would not fit in
// NAME_MAX (255 bytes): the media name is cut at a character boundary and
// a hash of it keeps the result unique and stable.
func CompanionPath(media, suffix string) string {
	const nameMax = 255
	dir, base := filepath.Split(media)
	if len(base)+len(suffix) <= nameMax {
		return media + suffix
	}
	sum := sha256.Sum256([]byte(base))
	tag := "~" + hex.EncodeToString(sum[:4])
	keep := nameMax - len(suffix) - len(tag)
	for keep > 0 && !utf8.RuneStart(base[keep]) {
		keep--
	}
	return dir + base[:keep] + tag + suffix
}

func (d *Daemon) moveLater(ctx context.Context, j *state.Job, err error) bool {
	d.log.Error("cannot move file; will try again (it is not uploaded again)", "job", j.ID,
		"path", j.Path, "target", j.FinalPath, "err", err, "retry_in", moveRetry)
	_, uerr := d.store.Update(ctx, j.ID, func(j *state.Job) error {
		j.Note("", "move failed: "+err.Error())
		j.NextAttempt = time.Now().Add(moveRetry)
		return nil
	})
	if uerr != nil && ctx.Err() == nil {
		d.log.Error("record move failure", "job", j.ID, "err", uerr)
	}
	d.sched.pushAt(j.ID, time.Now().Add(moveRetry))
	return false
}

// reasonText is the plain-words <name>.error.txt written beside a failed file.
func reasonText(j *state.Job, now time.Time) string {
	var b strings.Builder
	b.WriteString(reasonHeader + "\n")
	fmt.Fprintf(&b, "File:        %s (folder %q)\n", j.RelPath, j.Folder)
	fmt.Fprintf(&b, "Size:        %d bytes\n", j.Size)
	fmt.Fprintf(&b, "Found:       %s\n", j.Created.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Failed:      %s\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Attempts:    %d\n", j.Attempts)
	fmt.Fprintf(&b, "Last error:  %s\n", j.Error)
	fmt.Fprintf(&b, "Job id:      %d\n\n", j.ID)
	if len(j.Destinations) > 0 {
		fmt.Fprintf(&b, "Destinations:\n")
		for _, ds := range j.Destinations {
			line := fmt.Sprintf("  %s (%s): %s", ds.Name, ds.Type, ds.State)
			if ds.VendorID != "" {
				line += ", id " + ds.VendorID
			}
			if ds.Object != "" {
				line += ", " + ds.Object
			}
			if ds.Error != "" {
				line += " -- " + ds.Error
			}
			b.WriteString(line + "\n")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "History:\n")
	for _, h := range j.History {
		line := fmt.Sprintf("  %s  %s -> %s", h.At.UTC().Format(time.RFC3339), orDash(string(h.From)), h.To)
		if h.Dest != "" {
			line += " [" + h.Dest + "]"
		}
		if h.Note != "" {
			line += "  " + h.Note
		}
		if h.Error != "" {
			line += "  error: " + h.Error
		}
		b.WriteString(line + "\n")
	}
	fmt.Fprintf(&b, "\nTo try again: fix the cause, then run `watchfolder retry %d`\n(or move the file back into the watched folder).\n", j.ID)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type receiptDest struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	VendorID string `json:"vendor_id,omitempty"`
	Object   string `json:"object,omitempty"`
}

// receipt is the <name>.receipt.json written beside a processed file.
func receipt(j *state.Job, now time.Time) []byte {
	r := struct {
		Job          uint64          `json:"job"`
		Folder       string          `json:"folder"`
		Path         string          `json:"path"`
		Size         int64           `json:"size"`
		SHA256       string          `json:"sha256,omitempty"`
		Found        time.Time       `json:"found"`
		Finished     time.Time       `json:"finished"`
		Destinations []receiptDest   `json:"destinations"`
		Media        json.RawMessage `json:"media,omitempty"`
	}{Job: j.ID, Folder: j.Folder, Path: j.RelPath, Size: j.Size, SHA256: j.SHA256,
		Found: j.Created.UTC(), Finished: now.UTC(), Media: j.Media}
	for _, ds := range j.Destinations {
		r.Destinations = append(r.Destinations, receiptDest{ds.Name, ds.Type, ds.VendorID, ds.Object})
	}
	out, _ := json.MarshalIndent(r, "", "  ")
	return append(out, '\n')
}

// badNameReason is written beside a file whose name cannot become a job.
const badNameReason = `watchfolder could not deliver this file.

File:        %s (folder %q)
Size:        %d bytes
Failed:      %s
Reason:      the file name is not valid UTF-8. Object keys, platform titles
             and the job database all need UTF-8 names, and no name can be
             made from this one without guessing its encoding.

To try again: rename the file to a UTF-8 name (for example with
convmv -f latin1 -t utf8 --notest), then move it back into the watched folder.
`

// rejectBadName files a ready file whose name is not valid UTF-8 straight
// into failed_dir with a reason file: it can never be a job (jobs, keys
// and titles are UTF-8), and left in the folder it would sit there
// unexplained. There is no job, so the move is the record; it is synced.
// It reports whether ev was such a file (handled or still waiting).
func (d *Daemon) rejectBadName(ev watcher.Event) bool {
	if utf8.ValidString(ev.RelPath) {
		return false
	}
	if ev.Kind != watcher.Ready {
		return true // not finished yet; it is filed once it is
	}
	f := d.rt.Load().folders[ev.Folder]
	if f == nil {
		return true
	}
	root := filingRoot(f.Path, f.FailedDir)
	also := companions(true, false, false)
	err := func() error {
		target, err := mover.PlanWith(f.FailedDir, ev.RelPath, also)
		if err != nil {
			return err
		}
		rel := strings.ToValidUTF8(ev.RelPath, "\uFFFD")
		reason := fmt.Sprintf(badNameReason, rel, f.Name, ev.Info.Size, time.Now().UTC().Format(time.RFC3339))
		// The reason first: a crash then leaves the file in the folder
		// (and it is filed again), never in failed/ without a reason.
		if err := mover.WriteNew(root, CompanionPath(target, ReasonSuffix), []byte(reason), 0o644, true); err != nil {
			return err
		}
		dir, err := mover.MoveBelow(f.Path, ev.Path, root, target)
		if err != nil {
			return err
		}
		if dir != "" {
			if err := mover.SyncDir(dir); err != nil {
				return err
			}
		}
		mover.PruneEmpty(f.Path, filepath.Dir(ev.Path))
		d.log.Error("file name is not valid UTF-8; moved to failed (rename it and move it back)",
			"folder", f.Name, "path", strings.ToValidUTF8(ev.Path, "\uFFFD"), "to", strings.ToValidUTF8(target, "\uFFFD"))
		return nil
	}()
	if err != nil {
		d.log.Error("file name is not valid UTF-8 and it could not be moved to failed; rename it",
			"folder", f.Name, "path", strings.ToValidUTF8(ev.Path, "\uFFFD"), "err", err)
	}
	return true
}
