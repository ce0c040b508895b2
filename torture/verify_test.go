package torture

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

// fileSig is what "untouched" means for an entry left in the inbox.
type fileSig struct {
	mode   fs.FileMode // type bits and permissions
	size   int64
	mtime  time.Time
	sha    string // regular files
	target string // symlinks
}

func sigOf(path string) (fileSig, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileSig{}, err
	}
	sg := fileSig{mode: fi.Mode(), mtime: fi.ModTime()}
	switch {
	case fi.Mode().IsRegular():
		sg.size = fi.Size()
		sg.sha, _, err = fileSum(path)
	case fi.Mode()&fs.ModeSymlink != 0:
		sg.target, err = os.Readlink(path)
	}
	return sg, err
}

// expect is what a finished run must show.
type expect struct {
	delivered map[string]string  // relpath -> sha256: in every bucket, in processed/, one done job
	failed    map[string]string  // relpath -> text the reason must contain: in failed/, never uploaded
	gone      map[string]bool    // relpath -> ended gone (or, if marked in either, delivered whole)
	either    map[string]string  // relpath -> sha256: gone with nothing uploaded, or delivered whole
	untouched map[string]fileSig // relpath -> signature: still in the inbox, unchanged
	sidecars  map[string]bool    // relpaths of sidecars that travel along (not counted as duplicates)
}

func newExpect() *expect {
	return &expect{delivered: map[string]string{}, failed: map[string]string{}, gone: map[string]bool{},
		either: map[string]string{}, untouched: map[string]fileSig{}, sidecars: map[string]bool{}}
}

// keep records the current signature of inbox entry rel as one that must
// stay untouched.
func (e *expect) keep(s *site, rel string) {
	s.t.Helper()
	sg, err := sigOf(filepath.Join(s.inbox, filepath.FromSlash(rel)))
	if err != nil {
		s.t.Fatal(err)
	}
	e.untouched[rel] = sg
}

// figures summarise a verified run.
type figures struct {
	files, bytes, duplicates, lost, failed, gone int64
	orphans                                      int64 // open multipart uploads left (each is an error)
}

func (f figures) String() string {
	return fmt.Sprintf("files %d, bytes %d, duplicates %d, lost %d, failed %d, gone %d, orphan uploads %d",
		f.files, f.bytes, f.duplicates, f.lost, f.failed, f.gone, f.orphans)
}

// verify checks a stopped site against e: buckets, open uploads, processed/,
// failed/, the inbox, and the state database (Check, every job terminal,
// legal histories, exactly one done job per delivered file). Every problem is
// reported with t.Errorf; the figures are returned.
func (s *site) verify(e *expect) figures {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var fig figures
	lost := map[string]bool{}
	s.checkRaces()
	prefix := folder + "/"

	// 1. Every destination bucket: exactly the delivered keys, same bytes.
	for _, d := range s.cfg.dests {
		if !s.destUsed(d.name) {
			continue
		}
		keys, err := listKeys(ctx, d.bucket)
		if err != nil {
			t.Fatalf("list %s: %v", d.bucket, err)
		}
		for rel, want := range e.delivered {
			key := prefix + rel
			if !keys[key] {
				t.Errorf("%s: s3://%s/%s missing", rel, d.bucket, key)
				lost[rel] = true
				continue
			}
			got, err := objectSum(ctx, d.bucket, key)
			if err != nil || got != want {
				t.Errorf("%s: s3://%s/%s sha256 %s (%v), want %s", rel, d.bucket, key, got, err, want)
				lost[rel] = true
			}
			delete(keys, key)
		}
		for rel, want := range e.either {
			key := prefix + rel
			if keys[key] {
				if got, err := objectSum(ctx, d.bucket, key); err != nil || got != want {
					t.Errorf("%s: s3://%s/%s is a corrupt object: sha256 %s (%v), want %s", rel, d.bucket, key, got, err, want)
				}
				delete(keys, key)
			}
		}
		for key := range keys {
			t.Errorf("unexpected object s3://%s/%s (duplicate, stray or not allowed)", d.bucket, key)
			fig.duplicates++
		}
		if open, err := openUploads(ctx, d.bucket); err != nil {
			t.Errorf("list multipart uploads %s: %v", d.bucket, err)
		} else if len(open) > 0 {
			fig.orphans += int64(len(open))
			t.Errorf("%d multipart uploads left open in %s: %v", len(open), d.bucket, open)
		}
	}

	// 2. processed/ and failed/.
	processed := filepath.Join(s.inbox, "processed")
	failedDir := filepath.Join(s.inbox, "failed")
	inProcessed := walkFiles(t, processed)
	for rel, want := range e.delivered {
		if !inProcessed[rel] {
			t.Errorf("%s: not in processed/", rel)
			lost[rel] = true
			continue
		}
		got, n, err := fileSum(filepath.Join(processed, filepath.FromSlash(rel)))
		if err != nil || got != want {
			t.Errorf("%s: processed copy sha256 %s (%v), want %s", rel, got, err, want)
			lost[rel] = true
		}
		fig.bytes += n
		if !inProcessed[receiptOf(rel)] {
			t.Errorf("%s: no receipt in processed/", rel)
		}
		delete(inProcessed, rel)
		delete(inProcessed, receiptOf(rel))
	}
	for rel := range e.either {
		delete(inProcessed, rel)
		delete(inProcessed, receiptOf(rel))
	}
	for rel := range inProcessed {
		if e.sidecars[rel] {
			continue
		}
		t.Errorf("unexpected file in processed/: %s", rel)
		fig.duplicates++
	}
	inFailed := walkFiles(t, failedDir)
	for rel, reason := range e.failed {
		if !inFailed[rel] {
			t.Errorf("%s: not in failed/", rel)
			continue
		}
		b, err := os.ReadFile(daemon.CompanionPath(filepath.Join(failedDir, filepath.FromSlash(rel)), daemon.ReasonSuffix))
		if err != nil {
			t.Errorf("%s: reason file: %v", rel, err)
		} else if !strings.Contains(strings.ToLower(string(b)), strings.ToLower(reason)) {
			t.Errorf("%s: reason file does not say %q:\n%s", rel, reason, b)
		}
		delete(inFailed, rel)
		delete(inFailed, daemon.CompanionPath(rel, daemon.ReasonSuffix))
	}
	for rel := range inFailed {
		if !e.sidecars[rel] {
			t.Errorf("unexpected file in failed/: %s", rel)
		}
	}

	// 3. The inbox: only the untouched entries are left, unchanged.
	left := map[string]bool{}
	filepath.WalkDir(s.inbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == processed || p == failedDir {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(s.inbox, p)
		rel = filepath.ToSlash(rel)
		if _, keep := e.untouched[rel]; !keep && d.IsDir() {
			return nil
		}
		left[rel] = true
		if d.IsDir() && rel != "." {
			return filepath.SkipDir // an untouched directory (e.g. a symlinked tree) is not entered
		}
		return nil
	})
	for rel, want := range e.untouched {
		got, err := sigOf(filepath.Join(s.inbox, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("untouched %s: %v", rel, err)
		} else if got != want {
			t.Errorf("untouched %s changed: %+v, was %+v", rel, got, want)
		}
		delete(left, rel)
	}
	delete(left, ".")
	delete(left, daemon.FolderLockName) // held by the daemon, by design
	for rel := range left {
		t.Errorf("left in the inbox: %s", rel)
		if _, ok := e.delivered[rel]; ok {
			lost[rel] = true
		}
	}

	// 4. The database.
	st, err := state.Open(filepath.Join(s.stateDir, "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open state read-only: %v", err)
	}
	defer st.Close()
	problems, err := st.Check(ctx)
	if err != nil || len(problems) > 0 {
		t.Errorf("state Check: %v %v", err, problems)
	}
	jobs, err := st.List(ctx, state.Filter{})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	done := map[string]int{}
	ended := map[string]state.State{}
	for _, j := range jobs {
		if msg := impossible(j); msg != "" {
			t.Errorf("job %d (%s): %s", j.ID, j.RelPath, msg)
		}
		if j.State == state.Done {
			done[j.RelPath]++
		}
		if _, seen := ended[j.RelPath]; !seen { // newest first
			ended[j.RelPath] = j.State
		}
	}
	for rel := range e.delivered {
		switch n := done[rel]; {
		case n == 0:
			t.Errorf("%s: no done job", rel)
			lost[rel] = true
		case n > 1:
			t.Errorf("%s: %d done jobs, want exactly 1", rel, n)
			fig.duplicates += int64(n - 1)
		}
	}
	for rel := range e.failed {
		if ended[rel] != state.Failed || done[rel] > 0 {
			t.Errorf("%s: ended %s (done jobs %d), want failed", rel, ended[rel], done[rel])
		}
	}
	for rel := range e.gone {
		if ended[rel] != state.Gone || done[rel] > 0 {
			t.Errorf("%s: ended %s (done jobs %d), want gone", rel, ended[rel], done[rel])
		}
	}
	for rel := range e.either {
		if st := ended[rel]; st != state.Gone && !(st == state.Done && done[rel] == 1) {
			t.Errorf("%s: ended %s (done jobs %d), want gone or done once", rel, st, done[rel])
		}
	}
	for rel := range e.untouched {
		if _, ok := ended[rel]; ok {
			t.Errorf("%s: must be ignored but has a job (%s)", rel, ended[rel])
		}
	}
	fig.files = int64(len(e.delivered))
	fig.lost = int64(len(lost))
	fig.failed = int64(len(e.failed))
	fig.gone = int64(len(e.gone))
	return fig
}

func (s *site) destUsed(name string) bool {
	if s.cfg.folderDests == nil {
		return true
	}
	for _, n := range s.cfg.folderDests {
		if n == name {
			return true
		}
	}
	return false
}

// impossible names a state a finished run must never leave a job in.
func impossible(j *state.Job) string {
	if !j.State.Terminal() {
		return fmt.Sprintf("still %s after the run (%s)", j.State, j.Error)
	}
	// Notes (From empty) keep the state; transitions must be legal and
	// continue from the previous transition.
	var prev state.State
	for i, h := range j.History {
		if i == 0 {
			prev = h.To
			continue
		}
		if h.From == "" {
			continue
		}
		if !state.CanTransition(h.From, h.To) {
			return fmt.Sprintf("history has illegal transition %s -> %s", h.From, h.To)
		}
		if j.HistoryDropped == 0 && h.From != prev {
			return fmt.Sprintf("history breaks: entry %d leaves %s but the job was %s", i, h.From, prev)
		}
		prev = h.To
	}
	if j.HistoryDropped == 0 && len(j.History) > 0 && prev != j.State {
		return fmt.Sprintf("history ends in %s but the job is %s", prev, j.State)
	}
	switch j.State {
	case state.Done:
		for _, d := range j.Destinations {
			if d.State != state.DestDone || d.Object == "" {
				return fmt.Sprintf("done but destination %s is %s (object %q)", d.Name, d.State, d.Object)
			}
		}
		if j.FinalPath == "" || j.SHA256 == "" {
			return fmt.Sprintf("done without final path (%q) or sha256 (%q)", j.FinalPath, j.SHA256)
		}
		if _, err := os.Lstat(j.FinalPath); err != nil && !hasNote(j, "removed") {
			return fmt.Sprintf("done but final path: %v", err)
		}
	case state.Failed:
		if j.Error == "" || j.FinalPath == "" {
			return "failed without an error or a final path"
		}
	}
	return ""
}

func hasNote(j *state.Job, word string) bool {
	for _, h := range j.History {
		if strings.Contains(h.Note, word) {
			return true
		}
	}
	return false
}

// walkFiles lists every non-directory below root as slash relpaths.
func walkFiles(t interface{ Errorf(string, ...any) }, root string) map[string]bool {
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("walk %s: %v", root, err)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// receiptOf is the slash-separated relative path of rel's receipt, named as
// the daemon names it (shortened for very long names).
func receiptOf(rel string) string {
	return daemon.CompanionPath(rel, daemon.ReceiptSuffix)
}
