package torture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/internal/powerfs"
	"github.com/watchfolder/watchfolder/state"
)

// The power-cut file system runs in a child process: this test binary,
// started again with the powerfs environment (see powerfs.ServeIfChild).
// init runs before TestMain, so the child never builds or starts anything.
func init() { powerfs.ServeIfChild() }

type pcParams struct {
	cuts     int
	files    int // media files
	large    int // of which over the multipart threshold
	slow     int // of which written in place over seconds
	sidecars int // of which with a valid sidecar
	bad      int // of which with a malformed sidecar: they end in failed/
	settle   time.Duration
}

// pcFile is one media file the editor delivers into the folder.
type pcFile struct {
	rel      string
	size     int
	seed     uint64
	sha      string
	slow     bool
	sidecar  string // relpath of its sidecar, "" if none
	sideData []byte
	bad      bool // malformed sidecar

	arrived bool // known to be durably in the folder (or already filed)
}

func (f *pcFile) data() []byte { return content(newRand(f.seed), f.size) }

// pcRig is the power-cut test rig: the file system (served by a child),
// the site whose state, folder, processed/ and failed/ live on it, and the
// editor writing files into the folder.
type pcRig struct {
	t     *testing.T
	srv   *powerfs.Server
	s     *site
	mnt   string
	stage string
	dev   uint64
	files []*pcFile
	bySHA map[string]*pcFile
	shas  map[string]string // "path size mtime ino" -> sha256, so each file is hashed once

	dbSeen       bool            // state.db existed after a cut: it must from then on
	storeChecked map[uint64]bool // done jobs whose objects were checked

	// The editor: writes run until stopped; a cut stops them first.
	mu      sync.Mutex
	pending []*pcFile // not yet (known to be) durably in the folder
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    []error

	tally pcTally
}

type pcTally struct {
	cuts, lost, duplicated, dbProblems, tornReceipts, tornReasons         int
	receiptsMissing, leftoverTemps, opsLost, pagesLost, filesWithLostData int
}

// TestPowerCut runs a mixed workload on the power-cut file system and cuts
// the power at random moments (SIGKILL of the daemon, then everything not
// made durable is discarded), remounts and restarts. After every cut and at
// the end: every file the editor made durable is in exactly one place (the
// folder, processed/ or failed/) and whole, the database opens and checks
// clean, receipts and reason files are whole or absent; at the end
// everything is delivered and filed exactly once, no upload is left open.
func TestPowerCut(t *testing.T) {
	t.Parallel()
	sd := seed(t)
	r := rand.New(rand.NewPCG(sd, 11))
	rig := newPCRig(t, sd)
	s := rig.s

	s.start()
	rig.startEditor()
	for rig.tally.cuts < PC.cuts {
		var after time.Duration
		if r.IntN(4) == 0 { // during recovery and the start-up scan
			after = time.Duration(50+r.IntN(400)) * time.Millisecond
		} else {
			after = time.Duration(300+r.IntN(1700)) * time.Millisecond
		}
		time.Sleep(after) // a random moment, by design
		keep := 0.0
		if rig.tally.cuts%2 == 1 {
			keep = 0.2 + 0.6*r.Float64()
		}
		rig.cut(keep, r.Uint64())
		rig.checkAfterCut()
		if t.Failed() {
			t.FailNow()
		}
		s.start()
		rig.startEditor()
	}
	rig.finishEditor()
	start := time.Now()
	s.waitFor("every file filed", PC.settle, func() (bool, string) {
		n := rig.unfiled()
		return n == 0, fmt.Sprintf("%d of %d not filed yet", n, len(rig.files))
	})
	s.waitIdle(PC.settle)
	t.Logf("settled %s after the last cut", time.Since(start).Round(time.Millisecond))
	s.stop()
	rig.verifyEnd()
	st, err := rig.srv.Stats()
	if err != nil || st.Anomalies != 0 {
		t.Errorf("power-cut file system: %d anomalies (entries it did not know) %v", st.Anomalies, err)
	}
	tl := rig.tally
	t.Logf("power cut: files %d, cuts %d, lost %d, duplicated %d, db problems %d; torn receipts %d, torn reason files %d, "+
		"receipts missing %d, leftover temp files %d; discarded by the cuts: %d directory changes, %d pages in %d files; "+
		"fsyncs %d files, %d directories",
		len(rig.files), tl.cuts, tl.lost, tl.duplicated, tl.dbProblems, tl.tornReceipts, tl.tornReasons,
		tl.receiptsMissing, tl.leftoverTemps, tl.opsLost, tl.pagesLost, tl.filesWithLostData, st.FileSyncs, st.DirSyncs)
	// The writer probe (a read lease) on FUSE: the kernel handles leases
	// locally, so it works; where it does not, the daemon logs the fallback
	// to stable_after once, which is expected.
	if b, err := os.ReadFile(s.logPath); err == nil {
		probe := "writer probe works on the FUSE mount (no fallback to stable_after logged)"
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "cannot check for local writers") {
				probe = "writer probe fell back to stable_after: " + line
				break
			}
		}
		t.Logf("power cut: %s", probe)
	}
}

func newPCRig(t *testing.T, sd uint64) *pcRig {
	base := t.TempDir()
	mnt := filepath.Join(base, "fs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	logf, err := os.Create(filepath.Join(base, "powerfs.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	srv, err := powerfs.StartServer(cmd, filepath.Join(base, "work"), mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("power-cut file system: %v", err)
		}
		logf.Close()
		if b, _ := os.ReadFile(logf.Name()); len(b) > 0 && t.Failed() {
			t.Logf("powerfs log:\n%s", b)
		}
	})
	rig := &pcRig{t: t, srv: srv, mnt: mnt, stage: filepath.Join(mnt, "stage"), bySHA: map[string]*pcFile{}, shas: map[string]string{},
		storeChecked: map[uint64]bool{}}

	// Installed before the first start, and durable: the folder with its
	// subdirectories, the state directory, the editor's staging area.
	inbox := filepath.Join(mnt, "inbox")
	subdirs := []string{"", "d0", "d1", "d1/e0", "d1/e1", "d2"}
	for _, d := range append([]string{"state", "stage"}, prefixAll("inbox/", subdirs)...) {
		if err := os.MkdirAll(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.SyncAll(); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	rig.dev = st.Dev

	s := newSite(t, siteConfig{stateDir: filepath.Join(mnt, "state"), dests: []destSpec{
		{name: "archive", bucket: newBucket(t, "a")},
		{name: "mirror", bucket: newBucket(t, "m")},
	}})
	// The folder is the one on the power-cut file system.
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := "path = " + strconv.Quote(s.inbox)
	if !strings.Contains(string(cfg), old) {
		t.Fatalf("config has no %s", old)
	}
	cfg = []byte(strings.Replace(string(cfg), old, "path = "+strconv.Quote(inbox), 1))
	if err := os.WriteFile(s.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	s.inbox, s.stage = inbox, rig.stage
	rig.s = s

	// The files: most small, some multipart, some written slowly in place,
	// some with a sidecar (valid or malformed).
	r := rand.New(rand.NewPCG(sd, 12))
	exts := []string{"mp4", "mov", "mxf", "wav"}
	for i := 0; i < PC.files; i++ {
		f := &pcFile{seed: r.Uint64()}
		switch {
		case i < PC.large:
			f.size = partSize + 1 + r.IntN(8*mib)
		case r.IntN(5) == 0:
			f.size = 512<<10 + r.IntN(3*mib)
		default:
			f.size = 1 + r.IntN(256<<10)
		}
		dir := subdirs[1+r.IntN(len(subdirs)-1)]
		if r.IntN(5) == 0 {
			dir = ""
		}
		f.rel = pathJoin(dir, fmt.Sprintf("clip-%03d.%s", i, exts[r.IntN(len(exts))]))
		n := i - PC.large
		switch {
		case n >= 0 && n < PC.slow:
			f.slow = true
		case n >= PC.slow && n < PC.slow+PC.sidecars:
			f.sidecar = strings.TrimSuffix(f.rel, filepath.Ext(f.rel)) + ".json"
			f.sideData = []byte(fmt.Sprintf(`{"title": "clip %d", "tags": ["power", "cut"]}`, i))
		case n >= PC.slow+PC.sidecars && n < PC.slow+PC.sidecars+PC.bad:
			f.sidecar = strings.TrimSuffix(f.rel, filepath.Ext(f.rel)) + ".json"
			f.sideData = []byte(`{"title": "unterminated`)
			f.bad = true
		}
		f.sha = sum(f.data())
		rig.files = append(rig.files, f)
		rig.bySHA[f.sha] = f
	}
	r.Shuffle(len(rig.files), func(i, j int) { rig.files[i], rig.files[j] = rig.files[j], rig.files[i] })
	rig.pending = append([]*pcFile(nil), rig.files...)
	return rig
}

func prefixAll(p string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strings.TrimSuffix(p+x, "/")
	}
	return out
}

func pathJoin(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// startEditor starts delivering the pending files, spread over the run.
func (rig *pcRig) startEditor() {
	ctx, cancel := context.WithCancel(context.Background())
	rig.mu.Lock()
	rig.cancel = cancel
	todo := append([]*pcFile(nil), rig.pending...)
	rig.mu.Unlock()
	gap := time.Duration(PC.cuts) * 1200 * time.Millisecond / time.Duration(len(rig.files))
	rig.wg.Go(func() {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
		for _, f := range todo {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(r.Int64N(int64(2*gap) + 1))):
			}
			ws := r.Uint64()
			deliver := func() {
				if err := rig.deliver(ctx, f, ws); err != nil && ctx.Err() == nil {
					rig.mu.Lock()
					rig.errs = append(rig.errs, fmt.Errorf("%s: %w", f.rel, err))
					rig.mu.Unlock()
				}
			}
			if f.slow {
				rig.wg.Go(deliver)
			} else {
				deliver()
			}
		}
	})
}

// stopEditor stops the editor at its next step (between two system calls)
// and waits for it.
func (rig *pcRig) stopEditor() {
	rig.mu.Lock()
	cancel := rig.cancel
	rig.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	rig.wg.Wait()
}

// finishEditor lets the editor deliver everything still pending.
func (rig *pcRig) finishEditor() {
	rig.wg.Wait()
	for {
		rig.mu.Lock()
		n := len(rig.pending)
		errs := rig.errs
		rig.mu.Unlock()
		for _, err := range errs {
			rig.t.Errorf("editor: %v", err)
		}
		if n == 0 || len(errs) > 0 {
			return
		}
		rig.startEditor()
		rig.wg.Wait()
	}
}

// deliver writes f (and first its sidecar) into the folder the way a
// careful editor does, so that it is durable when deliver returns: written
// elsewhere, fsynced, renamed in, directory fsynced; or, for slow files,
// written in place over seconds (held open: the writer probe holds it
// back), then fsynced, then its directory.
func (rig *pcRig) deliver(ctx context.Context, f *pcFile, seed uint64) error {
	if f.sidecar != "" {
		if err := rig.writeDurable(ctx, f.sidecar, f.sideData); err != nil {
			return err
		}
	}
	if f.slow {
		if err := rig.writeSlow(ctx, f, seed); err != nil {
			return err
		}
	} else if err := rig.writeDurable(ctx, f.rel, f.data()); err != nil {
		return err
	}
	rig.mu.Lock()
	defer rig.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err() // the cut came first: reconcile decides
	}
	f.arrived = true
	rig.dropPending(f)
	return nil
}

func (rig *pcRig) dropPending(f *pcFile) {
	for i, p := range rig.pending {
		if p == f {
			rig.pending = append(rig.pending[:i], rig.pending[i+1:]...)
			return
		}
	}
}

func (rig *pcRig) writeDurable(ctx context.Context, rel string, data []byte) error {
	tmp := filepath.Join(rig.stage, fmt.Sprintf("f%d", stageSeq.Add(1)))
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = fh.Write(data)
	if err == nil && ctx.Err() == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil || ctx.Err() != nil {
		return errors.Join(err, ctx.Err())
	}
	dst := filepath.Join(rig.s.inbox, filepath.FromSlash(rel))
	if err := rig.inDir(filepath.Dir(dst), func() error { return os.Rename(tmp, dst) }); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return syncDir(filepath.Dir(dst))
}

// inDir runs op (which puts an entry into dir), first making dir and
// syncing each new directory's name in its parent: the daemon removes
// directories that filing left empty, so they come and go.
func (rig *pcRig) inDir(dir string, op func() error) error {
	for try := 0; ; try++ {
		err := rig.mkdirDurable(dir)
		if err == nil {
			err = op()
		}
		if !errors.Is(err, fs.ErrNotExist) || try == 10 {
			return err
		}
	}
}

func (rig *pcRig) mkdirDurable(dir string) error {
	if d := filepath.Clean(dir); d == filepath.Clean(rig.s.inbox) || filepath.Dir(d) == d {
		return nil
	}
	if err := rig.mkdirDurable(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// Synced even when it existed: another delivery may have made it a
	// moment ago and not synced its name yet, and a file renamed into a
	// directory whose name a cut takes away is lost with it.
	return syncDir(filepath.Dir(dir))
}

func (rig *pcRig) writeSlow(ctx context.Context, f *pcFile, seed uint64) error {
	r := newRand(seed)
	dst := filepath.Join(rig.s.inbox, filepath.FromSlash(f.rel))
	var fh *os.File
	err := rig.inDir(filepath.Dir(dst), func() error {
		var err error
		fh, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		return err
	})
	if err != nil {
		return err
	}
	defer fh.Close()
	data := f.data()
	chunks := 3 + r.IntN(5)
	step := (len(data) + chunks - 1) / chunks
	for off := 0; off < len(data); off += step {
		if _, err := fh.Write(data[off:min(off+step, len(data))]); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(100+r.IntN(300)) * time.Millisecond):
		}
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return syncDir(filepath.Dir(dst))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// cut is the power cut: the daemon dies, the editor stops where it is,
// what is not durable is discarded, and the file system is mounted again.
func (rig *pcRig) cut(keep float64, seed uint64) {
	t := rig.t
	t.Helper()
	rig.s.kill()
	rig.stopEditor()
	rep, err := rig.srv.Cut(keep, seed)
	if err != nil {
		t.Fatalf("cut %d: %v", rig.tally.cuts+1, err)
	}
	if err := rig.srv.Mount(); err != nil {
		t.Fatalf("mount after cut %d: %v", rig.tally.cuts+1, err)
	}
	rig.tally.cuts++
	rig.tally.opsLost += rep.Ops - rep.OpsKept
	rig.tally.pagesLost += rep.Pages - rep.PagesKept
	rig.tally.filesWithLostData += rep.Files
	var st syscall.Stat_t
	if err := syscall.Stat(rig.mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Dev != rig.dev {
		// Every file would look replaced to the daemon (its identity
		// includes the device): the run would test something else.
		t.Fatalf("cut %d: the remount got device %d, was %d (another FUSE mount took the number meanwhile)", rig.tally.cuts, st.Dev, rig.dev)
	}
	if lf, err := os.OpenFile(rig.s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintf(lf, "=== torture: power cut %d (keep %.2f): %s\n", rig.tally.cuts, keep, rep)
		lf.Close()
	}
	rig.reconcile()
}

// reconcile looks, after a cut, at the files the editor had not finished:
// one that is whole in the folder or already filed made it; a partial one
// (a slow write cut short) is removed, as an editor would before exporting
// again; the rest are delivered again. Leftovers in the staging area go.
func (rig *pcRig) reconcile() {
	t := rig.t
	rig.mu.Lock()
	defer rig.mu.Unlock()
	filed := rig.filedIndex(false)
	var still []*pcFile
	for _, f := range rig.pending {
		if len(filed[f]) > 0 {
			f.arrived = true
			continue
		}
		for _, rel := range []string{f.rel, f.sidecar} {
			if rel == "" {
				continue
			}
			p := filepath.Join(rig.s.inbox, filepath.FromSlash(rel))
			if _, err := os.Lstat(p); err != nil {
				continue
			}
			if rel == f.rel && rig.sha(p) == f.sha {
				f.arrived = true
				continue
			}
			if rel == f.sidecar {
				if b, err := os.ReadFile(p); err == nil && string(b) == string(f.sideData) {
					continue
				}
			}
			if err := os.Remove(p); err != nil {
				t.Fatalf("remove partial %s: %v", rel, err)
			}
			if err := syncDir(filepath.Dir(p)); err != nil {
				t.Fatal(err)
			}
		}
		if !f.arrived {
			still = append(still, f)
		}
	}
	rig.pending = still
	ents, _ := os.ReadDir(rig.stage)
	for _, e := range ents {
		os.Remove(filepath.Join(rig.stage, e.Name()))
	}
	if err := syncDir(rig.stage); err != nil {
		t.Fatal(err)
	}
}

// sha returns the sha256 of the file at p, hashing each version once.
func (rig *pcRig) sha(p string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return ""
	}
	k := fmt.Sprintf("%s %d %d.%d %d", p, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ino)
	if v, ok := rig.shas[k]; ok {
		return v
	}
	v, _, err := fileSum(p)
	if err != nil {
		return ""
	}
	rig.shas[k] = v
	return v
}

// filedIndex maps each planned file to where its content is in processed/
// and failed/, and reports (as test errors and tallies) what must never be
// there: a media file that is no planned file's content (truncated or
// torn), a torn receipt or reason file.
func (rig *pcRig) filedIndex(report bool) map[*pcFile][]string {
	t := rig.t
	errorf := func(format string, args ...any) {
		if report {
			t.Errorf(format, args...)
		}
	}
	out := map[*pcFile][]string{}
	for _, sub := range []string{"processed", "failed"} {
		root := filepath.Join(rig.s.inbox, sub)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			name := d.Name()
			switch {
			case strings.HasSuffix(name, daemon.ReceiptSuffix):
				b, err := os.ReadFile(p)
				var v struct {
					Job  uint64 `json:"job"`
					Path string `json:"path"`
				}
				if err != nil || json.Unmarshal(b, &v) != nil || v.Job == 0 {
					errorf("torn receipt %s (%d bytes): %v", p, len(b), err)
					if report {
						rig.tally.tornReceipts++
					}
				}
			case strings.HasSuffix(name, daemon.ReasonSuffix):
				b, err := os.ReadFile(p)
				if err != nil || !strings.Contains(string(b), "move the file back into the watched folder") {
					errorf("torn reason file %s (%d bytes): %v", p, len(b), err)
					if report {
						rig.tally.tornReasons++
					}
				}
			case strings.HasPrefix(name, ".watchfolder-") && strings.HasSuffix(name, ".tmp"):
				// A companion file's temp name whose rename was lost.
			case strings.HasSuffix(name, ".json"):
				// A sidecar.
			default:
				f := rig.bySHA[rig.sha(p)]
				if f == nil {
					errorf("filed file %s is no planned file's content (truncated or torn)", p)
					if report {
						rig.tally.lost++
					}
					return nil
				}
				out[f] = append(out[f], p)
			}
			return nil
		})
	}
	return out
}

// checkAfterCut checks the invariants that hold after every cut (the
// daemon is stopped, the file system shows the durable state).
func (rig *pcRig) checkAfterCut() {
	t := rig.t
	n := rig.tally.cuts
	if _, err := os.Stat(filepath.Join(rig.s.stateDir, "state.db")); err == nil {
		rig.dbSeen = true
	} else if !rig.dbSeen {
		// The daemon was cut before it created its database: nothing was
		// recorded, so nothing can have been filed.
		rig.mu.Lock()
		filed := rig.filedIndex(true)
		rig.mu.Unlock()
		if len(filed) > 0 {
			t.Errorf("cut %d: files filed %v but no state database", n, filed)
		}
		return
	}
	if out, errOut, code := rig.s.cli("db", "check"); code != 0 {
		t.Errorf("cut %d: watchfolder db check: exit %d\n%s%s", n, code, out, errOut)
		rig.tally.dbProblems++
	}
	rig.mu.Lock()
	filed := rig.filedIndex(true)
	rig.mu.Unlock()
	for _, f := range rig.files {
		if !f.arrived {
			continue
		}
		places := append([]string(nil), filed[f]...)
		inFolder := filepath.Join(rig.s.inbox, filepath.FromSlash(f.rel))
		if _, err := os.Lstat(inFolder); err == nil {
			if got := rig.sha(inFolder); got != f.sha {
				t.Errorf("cut %d: %s in the folder has other content (sha256 %s)", n, f.rel, got)
			}
			places = append(places, inFolder)
		}
		switch {
		case len(places) == 0:
			t.Errorf("cut %d: LOST %s: durably in the folder before, now neither there nor in processed/ or failed/", n, f.rel)
			rig.tally.lost++
		case len(places) > 1:
			t.Errorf("cut %d: DUPLICATED %s: %v", n, f.rel, places)
			rig.tally.duplicated++
		}
	}
	// Nothing the daemon recorded as done or failed is missing.
	jobs, err := rig.jobs()
	if err != nil {
		t.Errorf("cut %d: %v", n, err)
		rig.tally.dbProblems++
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	filedBy := map[string][]uint64{}
	for _, j := range jobs {
		if j.State == state.Done && j.FinalPath != "" {
			filedBy[j.RelPath] = append(filedBy[j.RelPath], j.ID)
		}
	}
	for rel, ids := range filedBy {
		if len(ids) > 1 { // counted at the end
			t.Errorf("cut %d: %s filed by %d done jobs %v (the file never changes)", n, rel, len(ids), ids)
		}
	}
	for _, j := range jobs {
		if j.State == state.Done && !rig.storeChecked[j.ID] {
			// Done means delivered: the bytes are in every store.
			rig.storeChecked[j.ID] = true
			for _, d := range rig.s.cfg.dests {
				if got, err := objectSum(ctx, d.bucket, folder+"/"+j.RelPath); err != nil || got != j.SHA256 {
					t.Errorf("cut %d: job %d (%s) is done but s3://%s/%s/%s is %s (%v), want %s",
						n, j.ID, j.RelPath, d.bucket, folder, j.RelPath, got, err, j.SHA256)
					rig.tally.lost++
				}
			}
		}
		if j.State != state.Done && j.State != state.Failed {
			continue
		}
		if j.FinalPath == "" || hasNote(j, "removed") || hasNote(j, "replaced") {
			continue // done without a move, by the rules
		}
		if _, err := os.Lstat(j.FinalPath); err != nil {
			t.Errorf("cut %d: job %d (%s) is %s but its file %s is gone: %v", n, j.ID, j.RelPath, j.State, j.FinalPath, err)
			rig.tally.lost++
		}
	}
}

// jobs reads every job from the state database (directly: the file
// system serving it is another process, so mapping it is safe).
func (rig *pcRig) jobs() ([]*state.Job, error) {
	st, err := state.Open(filepath.Join(rig.s.stateDir, "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open state database: %w", err)
	}
	defer st.Close()
	return st.List(context.Background(), state.Filter{})
}

func (rig *pcRig) unfiled() int {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	filed := rig.filedIndex(false)
	n := 0
	for _, f := range rig.files {
		if len(filed[f]) == 0 {
			n++
		}
	}
	return n
}

// verifyEnd checks the end state: the stores, processed/ and failed/, the
// folder, the database.
func (rig *pcRig) verifyEnd() {
	t := rig.t
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := rig.s
	s.checkRaces()

	// Every good file in both stores with its bytes, nothing else; no
	// upload left open.
	for _, d := range s.cfg.dests {
		keys, err := listKeys(ctx, d.bucket)
		if err != nil {
			t.Fatalf("list %s: %v", d.bucket, err)
		}
		for _, f := range rig.files {
			key := folder + "/" + f.rel
			if f.bad {
				if keys[key] {
					t.Errorf("%s: failed file uploaded to %s", f.rel, d.bucket)
				}
				continue
			}
			if !keys[key] {
				t.Errorf("LOST %s: s3://%s/%s missing", f.rel, d.bucket, key)
				rig.tally.lost++
				continue
			}
			if got, err := objectSum(ctx, d.bucket, key); err != nil || got != f.sha {
				t.Errorf("LOST %s: s3://%s/%s sha256 %s (%v), want %s", f.rel, d.bucket, key, got, err, f.sha)
				rig.tally.lost++
			}
			delete(keys, key)
		}
		for key := range keys {
			t.Errorf("DUPLICATED: unexpected object s3://%s/%s", d.bucket, key)
			rig.tally.duplicated++
		}
		if open, err := openUploads(ctx, d.bucket); err != nil || len(open) > 0 {
			t.Errorf("multipart uploads left open in %s: %v %v", d.bucket, open, err)
		}
	}

	// Filed exactly once, whole, in the right place, with its companions.
	rig.mu.Lock()
	filed := rig.filedIndex(true)
	rig.mu.Unlock()
	for _, f := range rig.files {
		places := filed[f]
		if len(places) != 1 {
			t.Errorf("%s filed %d times: %v", f.rel, len(places), places)
			if len(places) == 0 {
				rig.tally.lost++
			} else {
				rig.tally.duplicated += len(places) - 1
			}
			continue
		}
		want := "processed"
		if f.bad {
			want = "failed"
		}
		p := places[0]
		if !strings.HasPrefix(p, filepath.Join(s.inbox, want)+"/") {
			t.Errorf("%s filed in %s, want %s/", f.rel, p, want)
		}
		if f.bad {
			b, err := os.ReadFile(daemon.CompanionPath(p, daemon.ReasonSuffix))
			if err != nil || !strings.Contains(string(b), filepath.Base(f.sidecar)) {
				t.Errorf("%s: reason file missing or not naming the sidecar: %v", f.rel, err)
			}
		} else if _, err := os.Lstat(daemon.CompanionPath(p, daemon.ReceiptSuffix)); err != nil {
			rig.tally.receiptsMissing++ // allowed: receipts are rebuilt from state.db, not synced
		}
		if f.sidecar != "" {
			side := strings.TrimSuffix(p, filepath.Ext(p)) + ".json"
			if b, err := os.ReadFile(side); err != nil || string(b) != string(f.sideData) {
				t.Errorf("%s: sidecar not filed with it (%v)", f.rel, err)
			}
		}
	}
	// The folder holds nothing but (maybe) its empty subdirectories.
	filepath.WalkDir(s.inbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (p == filepath.Join(s.inbox, "processed") || p == filepath.Join(s.inbox, "failed")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && p != filepath.Join(s.inbox, daemon.FolderLockName) {
			t.Errorf("left in the folder: %s", p)
		}
		return nil
	})
	for _, sub := range []string{"processed", "failed"} {
		filepath.WalkDir(filepath.Join(s.inbox, sub), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".watchfolder-") {
				rig.tally.leftoverTemps++
			}
			return nil
		})
	}

	// The database: checks clean, every job finished legally, exactly one
	// done job per good file, the bad ones failed.
	if out, errOut, code := s.cli("db", "check"); code != 0 {
		t.Errorf("watchfolder db check: exit %d\n%s%s", code, out, errOut)
		rig.tally.dbProblems++
	}
	jobs, err := rig.jobs()
	if err != nil {
		t.Fatal(err)
	}
	done := map[string]int{}
	newest := map[string]state.State{}
	for _, j := range jobs {
		if msg := impossible(j); msg != "" {
			t.Errorf("job %d (%s): %s", j.ID, j.RelPath, msg)
			rig.tally.dbProblems++
		}
		if j.State == state.Done && j.FinalPath != "" {
			done[j.RelPath]++
		}
		if _, ok := newest[j.RelPath]; !ok {
			newest[j.RelPath] = j.State
		}
	}
	for _, f := range rig.files {
		switch {
		case f.bad && newest[f.rel] != state.Failed:
			t.Errorf("%s: ended %s, want failed", f.rel, newest[f.rel])
		case !f.bad && done[f.rel] != 1:
			t.Errorf("%s: %d done jobs that filed it, want 1", f.rel, done[f.rel])
			if done[f.rel] > 1 {
				rig.tally.duplicated += done[f.rel] - 1
			}
		}
	}
	var rels []string
	for rel, n := range done {
		if n > 1 {
			rels = append(rels, rel)
		}
	}
	sort.Strings(rels)
	if len(rels) > 0 {
		t.Errorf("filed more than once: %v", rels)
	}
}
