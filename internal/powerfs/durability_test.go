package powerfs

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
)

const bboltChildEnv = "POWERFS_BBOLT_CHILD"

func TestMain(m *testing.M) {
	ServeIfChild()
	if path := os.Getenv(bboltChildEnv); path != "" {
		if err := bboltWriter(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var bucket = []byte("b")

// Transaction i puts key i and, for every third i from 50 on, deletes key
// i-50: after commits 0..n, key k is present unless k+50 <= n and
// (k+50)%3 == 0.
func bboltValue(i uint64) []byte {
	r := rand.New(rand.NewPCG(i, 99))
	b := make([]byte, 100+int(i*7919%20000))
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return b
}

func bboltKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

func bboltOpen(path string) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
}

// bboltWriter runs in a child process: it commits transactions after the
// last one in the database and prints each number once committed, until
// it is killed.
func bboltWriter(path string) error {
	db, err := bboltOpen(path)
	if err != nil {
		return err
	}
	next := uint64(0)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if k, _ := b.Cursor().Last(); k != nil {
			next = binary.BigEndian.Uint64(k) + 1
		}
		return nil
	})
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	for i := next; ; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			if err := b.Put(bboltKey(i), bboltValue(i)); err != nil {
				return err
			}
			if i >= 50 && i%3 == 0 {
				return b.Delete(bboltKey(i - 50))
			}
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, i)
		out.Flush()
	}
}

// bbolt (fdatasync, mmap reads, flock) on the file system survives cuts at
// random moments of a stream of commits: the database opens, checks clean,
// and holds every commit that was reported, plus at most the one in flight.
func TestBboltSurvivesCuts(t *testing.T) {
	m := mountChild(t)
	if err := os.Mkdir(m.p("state"), 0o700); err != nil {
		t.Fatal(err)
	}
	m.syncDir(".")
	path := m.p("state/state.db")
	// bbolt syncs its file but not the directory it creates the file in:
	// the application must, or a cut can take the whole database away.
	db, err := bboltOpen(path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	m.syncDir("state")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	reported := int64(-1)
	for round := 0; round < 8; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), bboltChildEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan int64, 1<<16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				n, _ := strconv.ParseInt(sc.Text(), 10, 64)
				lines <- n
			}
			close(lines)
		}()
		// Let it commit a while, then cut at a random moment.
		deadline := time.After(time.Duration(100+r.IntN(400)) * time.Millisecond)
	run:
		for {
			select {
			case n, ok := <-lines:
				if !ok {
					t.Fatalf("writer exited early: %v\n%s", cmd.Wait(), stderr.String())
				}
				reported = n
			case <-deadline:
				break run
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for n := range lines {
			reported = n
		}
		cmd.Wait()
		keep := 0.0
		if round%2 == 1 {
			keep = 0.5
		}
		rep := m.cut(CutOptions{Keep: keep, Rand: r})
		t.Logf("round %d: %d commits reported; cut: %s", round, reported+1, rep)

		db, err := bboltOpen(path)
		if err != nil {
			t.Fatalf("round %d: open after cut: %v", round, err)
		}
		err = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return fmt.Errorf("check: %w", err)
			}
			b := tx.Bucket(bucket)
			if b == nil {
				if reported >= 0 {
					return fmt.Errorf("bucket missing after %d reported commits", reported+1)
				}
				return nil
			}
			k, _ := b.Cursor().Last()
			last := int64(-1)
			if k != nil {
				last = int64(binary.BigEndian.Uint64(k))
			}
			if last != reported && last != reported+1 {
				return fmt.Errorf("last commit %d, reported %d", last, reported)
			}
			for i := int64(0); i <= last; i++ {
				gone := i+50 <= last && (i+50)%3 == 0
				v := b.Get(bboltKey(uint64(i)))
				switch {
				case gone && v != nil:
					return fmt.Errorf("key %d: deleted by commit %d, still present", i, i+50)
				case !gone && string(v) != string(bboltValue(uint64(i))):
					return fmt.Errorf("key %d: committed value lost (%d bytes)", i, len(v))
				}
			}
			reported = last
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if reported < 100 {
		t.Errorf("only %d commits in all rounds: the test did not exercise the database", reported+1)
	}
	if s, err := m.srv.Stats(); err != nil || s.FileSyncs == 0 {
		t.Errorf("no fsync seen: %+v %v", s, err)
	}
}

// Random subsets of directory changes, applied in order with their
// dependencies, never show a file in two places or a directory change
// without the ones before it in the same directory.
func TestRandomSubsetKeepsOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for trial := 0; trial < 200; trial++ {
		// Live model: files 100.. moving among directories 1..4.
		live := map[uint64]uint64{} // file -> dir
		var log []op
		next := uint64(100)
		for i := 0; i < 30; i++ {
			switch r.IntN(3) {
			case 0:
				d := uint64(1 + r.IntN(4))
				log = append(log, op{kind: opAdd, p1: d, n1: strconv.FormatUint(next, 10), child: next})
				live[next] = d
				next++
			default:
				if len(live) == 0 {
					continue
				}
				var f uint64
				for f = range live {
					break
				}
				d := uint64(1 + r.IntN(4))
				if d == live[f] {
					continue
				}
				name := strconv.FormatUint(f, 10)
				log = append(log, op{kind: opRename, p1: live[f], n1: name, p2: d, n2: name, child: f})
				live[f] = d
			}
		}
		ns := namespace{}
		for _, i := range randomSubset(log, 0.5, r) {
			ns.apply(&log[i])
		}
		seen := map[uint64]uint64{}
		for d, ents := range ns {
			for _, id := range ents {
				if prev, dup := seen[id]; dup {
					t.Fatalf("trial %d: file %d in directories %d and %d", trial, id, prev, d)
				}
				seen[id] = d
			}
		}
		// The closure of a directory sync has the same property.
		ns = namespace{}
		for _, i := range closure(log, uint64(1+r.IntN(4))) {
			ns.apply(&log[i])
		}
		seen = map[uint64]uint64{}
		for d, ents := range ns {
			for _, id := range ents {
				if prev, dup := seen[id]; dup {
					t.Fatalf("trial %d: closure puts file %d in %d and %d", trial, id, prev, d)
				}
				seen[id] = d
			}
		}
	}
}

func TestWorkDirMustBeEmpty(t *testing.T) {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(d); err == nil {
		t.Error("New on a non-empty directory succeeded")
	}
}

// The daemon's state database must survive a cut right after it was
// created: bbolt syncs the file, the store must sync the directory.
func TestStateDatabaseSurvivesCutAfterCreate(t *testing.T) {
	m := mountChild(t)
	if err := os.Mkdir(m.p("state"), 0o700); err != nil {
		t.Fatal(err)
	}
	m.syncDir(".")
	path := m.p("state/state.db")
	st, err := state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	m.cut(CutOptions{})
	st, err = state.Open(path, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("state database lost by a cut after it was created: %v", err)
	}
	st.Close()
}

// A move into directories the mover creates, followed by the filer's sync
// of the target directory, must survive a cut: the new directories' names
// must be durable in their parents too.
func TestMoveIntoNewDirectoriesSurvivesCut(t *testing.T) {
	m := mountNew(t)
	m.mkdir("inbox")
	m.syncDir(".")
	m.write("inbox/a.mp4", []byte("media"), true)
	m.syncDir("inbox")
	dir, err := mover.MoveUnsynced(m.p("inbox/a.mp4"), m.p("inbox/processed/x/y/a.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mover.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	m.cut(CutOptions{})
	m.want("inbox/processed/x/y/a.mp4", []byte("media"))
	m.want("inbox/a.mp4", nil)
}

// A receipt's name becomes durable with the filer's sync of its directory
// (for the next file filed there); its data must be durable by then, or a
// cut leaves an empty receipt.
func TestCompanionWholeOrAbsentAfterCut(t *testing.T) {
	m := mountNew(t)
	m.mkdir("processed")
	m.syncDir(".")
	data := []byte(`{"job": 1, "path": "a.mp4"}` + "\n")
	if err := mover.WriteNew(m.mnt, m.p("processed/unsynced.json"), data, 0o644, false); err != nil {
		t.Fatal(err)
	}
	if err := mover.WriteNewWhole(m.mnt, m.p("processed/whole.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m.syncDir("processed") // the next file filed into processed/
	m.cut(CutOptions{})
	m.want("processed/whole.json", data)
	// What the receipts were before: the name survives, the data not.
	m.want("processed/unsynced.json", []byte{})
}
