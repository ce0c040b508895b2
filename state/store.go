package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned by Open (and by any call that meets a damaged file).
var (
	ErrLocked  = errors.New("state database is in use by another process (is the daemon running?)")
	ErrCorrupt = errors.New("state database is corrupt or not a watchfolder database")
)

// defaultLockTimeout applies when Options.Timeout is 0. bbolt itself would
// wait forever; a CLI started while the daemon runs should say so at once.
// bbolt tries the lock once, then gives up because the elapsed time exceeds
// Timeout minus its 50ms retry interval.
const defaultLockTimeout = 50 * time.Millisecond

// schemaVersion is stored in the meta bucket; a file written by a newer
// release is refused rather than misread.
const schemaVersion = "1"

// Options for Open.
type Options struct {
	ReadOnly bool
	// Timeout for acquiring the file lock; 0 means fail almost at once (one
	// attempt) when another process (the running daemon) holds the database.
	Timeout time.Duration
	// Now is the clock for Created, Updated and history; nil means time.Now.
	// Tests set it to get predictable times.
	Now func() time.Time

	// beforeLink, in tests, runs while a new database is complete under
	// its temporary name and not yet linked as path.
	beforeLink func(tmp string)
}

// Filter selects jobs for List.
type Filter struct {
	States  []State   // empty: any
	Folder  string    // empty: any
	Since   time.Time // zero: any; compares Updated
	Limit   int       // 0: no limit
	AfterID uint64    // pagination: only ids below this (List returns newest first)
}

// Stats is a summary for `watchfolder db stats`.
type Stats struct {
	Path     string
	Jobs     int   // from the counts bucket
	FileSize int64 // on disk; bbolt grows the file ahead of use
	DataSize int64 // pages in use (bbolt's high-water mark)
}

// Store is the bbolt-backed job store. It is safe for concurrent use; bbolt
// serialises writers and lets readers run alongside.
type Store struct {
	db       *bolt.DB // nil for a read-only store: each read opens the file
	path     string
	now      func() time.Time
	gc       groupCommit
	readOnly bool
	timeout  time.Duration
	// writeFailures counts failed write transactions (see WriteFailures).
	writeFailures atomic.Uint64
}

// Open opens (creating if needed) the database at path.
//
// bbolt takes an exclusive flock for a writer and a shared flock for a
// reader. A read-only Store holds no lock between calls: each read opens the
// file, reads and closes it again, so a command whose output is paged
// (`watchfolder list | less`) never keeps the daemon from starting. A read
// fails with ErrLocked while the daemon holds the database; status commands
// ask the daemon over its control socket then.
//
// A file that exists but cannot be a database (empty, truncated) is refused
// with ErrCorrupt and a message saying how to recover, never reinitialised.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open state database: empty path")
	}
	if opts.ReadOnly {
		// Without this check bbolt reports a bare ENOENT from open(2).
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("state database %s does not exist (has the daemon run with this state_dir?): %w", path, err)
			}
			return nil, fmt.Errorf("open state database %s: %w", path, err)
		}
	} else if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory for %s: %w", path, err)
	}
	_, statErr := os.Stat(path)
	created := !opts.ReadOnly && errors.Is(statErr, fs.ErrNotExist)
	if created {
		if err := createFile(path, opts.beforeLink); err != nil {
			return nil, err
		}
	}
	if err := checkFile(path); err != nil {
		return nil, err
	}

	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	clock := opts.Now
	if clock == nil {
		clock = time.Now
	}
	s := &Store{path: path, now: func() time.Time { return storedTime(clock()) },
		readOnly: opts.ReadOnly, timeout: timeout}
	db, err := s.openBolt()
	if err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		err = guard(path, func() error { return db.View(checkSchema) })
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	} else {
		s.db = db
		err = s.update(initSchema)
		if err == nil && created {
			// bbolt syncs the file, not the directory entry that names
			// it: without this, a power cut can take the new database away.
			err = syncDir(filepath.Dir(path))
		}
		if err != nil {
			_ = db.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	return s, nil
}

// openBolt opens the file with bbolt, mapping its errors to ErrLocked and
// ErrCorrupt.
func (s *Store) openBolt() (*bolt.DB, error) {
	// The file handle is captured so it can be closed (releasing the flock)
	// when bbolt panics half-way through opening a damaged file.
	var file *os.File
	bopts := &bolt.Options{
		Timeout:  s.timeout,
		ReadOnly: s.readOnly,
		// The hashmap freelist finds free pages in O(1) instead of scanning
		// an array; it matters once a large database is fragmented by
		// deletes and history growth, and it is safe (only the choice among
		// free pages differs).
		FreelistType: bolt.FreelistMapType,
		// NoFreelistSync is deliberately left false. It saves writing the
		// freelist page, but that page goes out in the same fdatasync as the
		// data pages, so it does not reduce the number of syncs per commit
		// (data, then meta). In exchange every read-write open would rebuild
		// the freelist by walking the whole tree (seconds on a large file),
		// and bbolt does that walk in a goroutine where a damaged page
		// crashes the process instead of returning an error.
		// NoGrowSync is left false too: bbolt documents it as unsafe on
		// ext3/ext4, where the file size change must be synced.
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	var db *bolt.DB
	err := guard(s.path, func() error {
		var err error
		db, err = bolt.Open(s.path, 0o600, bopts)
		return err
	})
	if err == nil {
		return db, nil
	}
	if db == nil && file != nil && errors.Is(err, ErrCorrupt) {
		// Only reached after a recovered panic: bbolt closes the file
		// itself when it returns an error.
		releaseAbandoned(file)
	}
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s%s", ErrLocked, s.path, lockHolders(s.path))
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v; %s", ErrCorrupt, s.path, err, recoverHint)
	case errors.Is(err, ErrCorrupt):
		return nil, err
	}
	return nil, fmt.Errorf("open state database %s: %w", s.path, err)
}

// Close closes the database.
func (s *Store) Close() error {
	if s.db == nil {
		return nil // read-only: nothing is held between calls
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state database %s: %w", s.path, err)
	}
	return nil
}

// WriteFailures is how many write transactions have failed since Open
// (a full disk, an I/O error). The daemon watches it to find jobs whose
// failed commit left them unscheduled.
func (s *Store) WriteFailures() uint64 { return s.writeFailures.Load() }

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Create assigns j an id (NextSequence), sets Created/Updated, records the
// first history entry, and commits j with its indexes. A job starts in
// Waiting or Queued; j must not have been created before (ID 0). j is only
// modified when the commit succeeded.
func (s *Store) Create(ctx context.Context, j *Job) error {
	return s.CreateMany(ctx, []*Job{j})
}

// CreateMany is Create for many jobs in one transaction (one fsync): either
// all are committed or none. Use it for bursts of new files.
func (s *Store) CreateMany(ctx context.Context, jobs []*Job) error {
	if len(jobs) == 0 {
		return nil
	}
	now := s.now()
	staged := make([]Job, len(jobs))
	seen := make(map[*Job]bool, len(jobs))
	for i, j := range jobs {
		if j == nil {
			return fmt.Errorf("create job: job %d of %d is nil", i+1, len(jobs))
		}
		if seen[j] {
			// It would be stored twice, under two ids.
			return fmt.Errorf("create job %s/%s: given twice", j.Folder, j.RelPath)
		}
		seen[j] = true
		if j.ID != 0 {
			return fmt.Errorf("create job %s/%s: already created as job %d", j.Folder, j.RelPath, j.ID)
		}
		if !canCreate(j.State) {
			return fmt.Errorf("create job %s/%s in state %q (must be %s or %s): %w",
				j.Folder, j.RelPath, j.State, Waiting, Queued, ErrIllegalTransition)
		}
		if err := validateKeys(j); err != nil {
			return fmt.Errorf("create job: %w", err)
		}
		c := *j
		c.Created, c.Updated = now, now
		// A fresh slice: appending must not write into the caller's array.
		c.History = append(make([]Transition, 0, len(j.History)+1), j.History...)
		c.History = append(c.History, Transition{At: now, To: c.State, Error: c.Error})
		c.capHistory()
		staged[i] = c
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create %d job(s): %w", len(jobs), err)
	}
	write := s.update
	if len(staged) == 1 {
		write = s.batch
	}
	err := write(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		// Ids only grow, so new jobs are always appended at the end of the
		// jobs bucket: fuller pages waste less space than the default 50%.
		b.jobs.FillPercent = 0.9
		for i := range staged {
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			id, err := b.jobs.NextSequence()
			if err != nil {
				return fmt.Errorf("next id: %w", err)
			}
			staged[i].ID = id
			if err := b.put(nil, &staged[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create %d job(s): %w", len(jobs), err)
	}
	for i, j := range jobs {
		*j = staged[i]
	}
	return nil
}

// ForPath returns every job recorded for folder+relpath, newest first.
func (s *Store) ForPath(ctx context.Context, folder, relpath string) ([]*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", folder, relpath, err)
	}
	var out []*Job
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		dc := newDescCursor(b.idxPath.Cursor(), pathPrefix(folder, relpath))
		for ok := dc.start(0); ok; ok = dc.next() {
			j, err := b.get(dc.id)
			if errors.Is(err, ErrNotFound) {
				continue // reported by Check
			}
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", folder, relpath, err)
	}
	return out, nil
}

// Get returns the job with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id uint64) (*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	var j *Job
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		j, err = b.get(id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	return j, nil
}

// Latest returns the job that owns folder+relpath: the newest unfinished
// one if any, else the newest; ErrNotFound when the path has no job.
func (s *Store) Latest(ctx context.Context, folder, relpath string) (*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("latest job for %s/%s: %w", folder, relpath, err)
	}
	var j *Job
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		// Ids are big-endian, so the last key under the prefix is the newest.
		// The prefix ends in 0x00 and neither part may contain 0x00, so no
		// other path shares it.
		dc := newDescCursor(b.idxPath.Cursor(), pathPrefix(folder, relpath))
		for ok := dc.start(0); ok; ok = dc.next() {
			c, err := b.get(dc.id)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("idx_path points to missing job %d: %w", dc.id, ErrCorrupt)
			}
			if err != nil {
				return err
			}
			if j == nil {
				j = c
			}
			// An unfinished job owns the path even when a newer one has
			// finished (an operator retried an old failed job).
			if !c.State.Terminal() {
				j = c
				break
			}
		}
		if j == nil {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("latest job for %s/%s: %w", folder, relpath, err)
	}
	return j, nil
}

// Update loads job id, calls fn on it, validates a state change (returning
// ErrIllegalTransition), appends history when State changed, updates the
// indexes and commits, all in one transaction. The committed job is returned.
//
// fn gets a fresh copy decoded inside the transaction; when it returns an
// error nothing is written and that error is returned as it is. fn may run
// while other writers wait, so it must not block on I/O.
func (s *Store) Update(ctx context.Context, id uint64, fn func(*Job) error) (*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("update job %d: %w", id, err)
	}
	var j *Job
	var fnErr error
	err := s.batch(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		j, fnErr, err = b.apply(id, s.now(), fn)
		if fnErr != nil {
			return fnErr
		}
		return err
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, fmt.Errorf("update job %d: %w", id, err)
	}
	return j, nil
}

// UpdateMany is Update for many jobs in one transaction (one fsync): fn is
// called for each id in order (an id given twice sees its first change), and
// either every change is committed or, on the first error, none. The
// committed jobs are returned in the order of ids. Errors name the job.
func (s *Store) UpdateMany(ctx context.Context, ids []uint64, fn func(*Job) error) ([]*Job, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("update %d job(s): %w", len(ids), err)
	}
	out := make([]*Job, len(ids))
	err := s.update(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		now := s.now()
		for i, id := range ids {
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			j, fnErr, err := b.apply(id, now, fn)
			if fnErr != nil {
				return fmt.Errorf("job %d: %w", id, fnErr)
			}
			if err != nil {
				return err
			}
			out[i] = j
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update %d job(s): %w", len(ids), err)
	}
	return out, nil
}

// List returns jobs matching f, newest first. With States it walks idx_state
// (merging the states by id), otherwise the jobs bucket backwards; Folder and
// Since are checked on each candidate, so a rare folder or a recent Since
// scans further.
func (s *Store) List(ctx context.Context, f Filter) ([]*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	states, err := uniqueStates(f.States)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []*Job
	err = s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		var cursors []*descCursor
		if len(states) == 0 {
			cursors = []*descCursor{newDescCursor(b.jobs.Cursor(), nil)}
		}
		for _, st := range states {
			cursors = append(cursors, newDescCursor(b.idxState.Cursor(), stateSeekPrefix(st)))
		}
		live := cursors[:0]
		for _, c := range cursors {
			if c.start(f.AfterID) {
				live = append(live, c)
			}
		}
		match := folderMatcher(f.Folder)
		for n := 0; len(live) > 0; n++ {
			if n%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			// Take the highest id among the states; each cursor is already
			// in descending order, so this is a k-way merge.
			top := 0
			for i := 1; i < len(live); i++ {
				if live[i].id > live[top].id {
					top = i
				}
			}
			id := live[top].id
			if !live[top].next() {
				live = append(live[:top], live[top+1:]...)
			}

			data := b.jobs.Get(idKey(id))
			// An index entry without its job is skipped here and reported
			// by Check: a listing should not fail over one bad entry.
			if data == nil || !match(data) {
				continue
			}
			j, err := decodeJob(id, data)
			if err != nil {
				return err
			}
			if f.Folder != "" && j.Folder != f.Folder {
				continue
			}
			if !f.Since.IsZero() && j.Updated.Before(f.Since) {
				continue
			}
			out = append(out, j)
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return out, nil
}

// Unfinished returns every job whose state is not terminal, oldest first: the
// daemon resumes them after a restart.
func (s *Store) Unfinished(ctx context.Context) ([]*Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	var out []*Job
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		var cursors []*ascCursor
		for _, st := range AllStates() {
			if st.Terminal() {
				continue
			}
			if c := newAscCursor(b.idxState.Cursor(), stateSeekPrefix(st)); c.ok {
				cursors = append(cursors, c)
			}
		}
		for n := 0; len(cursors) > 0; n++ {
			if n%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			low := 0
			for i := 1; i < len(cursors); i++ {
				if cursors[i].id < cursors[low].id {
					low = i
				}
			}
			id := cursors[low].id
			if !cursors[low].next() {
				cursors = append(cursors[:low], cursors[low+1:]...)
			}
			data := b.jobs.Get(idKey(id))
			if data == nil {
				continue // reported by Check
			}
			j, err := decodeJob(id, data)
			if err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	return out, nil
}

// Counts returns the number of jobs per folder and state, read from the
// counts bucket (no scan of the jobs). States with no jobs are absent.
func (s *Store) Counts(ctx context.Context) (map[string]map[State]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	out := make(map[string]map[State]int)
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		return b.counts.ForEach(func(k, v []byte) error {
			folder, st, ok := splitCountKey(k)
			if !ok || len(v) != 8 {
				return fmt.Errorf("malformed counts entry %q: %w", k, ErrCorrupt)
			}
			m := out[folder]
			if m == nil {
				m = make(map[State]int)
				out[folder] = m
			}
			m[st] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return out, nil
}

// Delete removes a job and its index entries (the `forget` command).
func (s *Store) Delete(ctx context.Context, id uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete job %d: %w", id, err)
	}
	err := s.update(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		j, err := b.get(id)
		if err != nil {
			return err
		}
		return b.remove(j)
	})
	if err != nil {
		return fmt.Errorf("delete job %d: %w", id, err)
	}
	return nil
}

// Stats returns the number of jobs (from the counts bucket) and the file size.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Path: s.path}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("database stats: %w", err)
	}
	err := s.view(func(tx *bolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		st.DataSize = tx.Size()
		return b.counts.ForEach(func(_, v []byte) error {
			if len(v) == 8 {
				st.Jobs += int(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	if err != nil {
		return st, fmt.Errorf("database stats: %w", err)
	}
	info, err := os.Stat(s.path)
	if err != nil {
		return st, fmt.Errorf("database stats: %w", err)
	}
	st.FileSize = info.Size()
	return st, nil
}

// storedTime is how times are kept: in UTC and without the monotonic clock
// reading, so a job read back compares equal to the one that was written
// (JSON would turn a local zone into a fixed offset and drop the reading).
// Display code converts to local time.
func storedTime(t time.Time) time.Time { return t.UTC().Round(0) }

// view and update run a bbolt transaction under guard, so that a damaged
// page becomes an error instead of killing the daemon or the CLI. bbolt
// rolls the transaction back itself while the panic unwinds.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	if s.db == nil {
		db, err := s.openBolt()
		if err != nil {
			return err
		}
		err = guard(s.path, func() error { return db.View(fn) })
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close state database %s: %w", s.path, cerr)
		}
		return err
	}
	return guard(s.path, func() error { return s.db.View(fn) })
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	if s.db == nil {
		return fmt.Errorf("state database %s is open read-only: %w", s.path, berrors.ErrDatabaseReadOnly)
	}
	fnOK := false
	err := guard(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			err := fn(tx)
			fnOK = err == nil
			return err
		})
	})
	if err != nil && fnOK {
		// The change was refused by the disk, not by the caller's checks.
		s.writeFailures.Add(1)
	}
	return err
}

// userPanic marks a panic raised by the caller's own function, which guard
// must pass on rather than blame on the database.
type userPanic struct{ v any }

// callUser runs a caller-supplied function inside a transaction.
func callUser(fn func(*Job) error, j *Job) error {
	defer func() {
		if r := recover(); r != nil {
			panic(userPanic{r})
		}
	}()
	return fn(j)
}

// guard turns a panic inside fn into an error wrapping ErrCorrupt. bbolt
// reads pages straight from the memory map and trusts them: a damaged page
// makes it panic (failed assertions) or fault (a page id beyond the map).
// SetPanicOnFault makes the latter a recoverable panic too; it applies to
// this goroutine only and is restored on return.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if up, ok := r.(userPanic); ok {
			panic(up.v)
		}
		err = fmt.Errorf("%w: %s: bbolt: %v (run `watchfolder db check`)", ErrCorrupt, path, r)
	}()
	return fn()
}

// syncDir fsyncs directory dir, making the entries created in it durable.
// createFile makes a new, empty database at path that is whole or absent:
// it is written and synced under a temporary name, then linked in (link(2)
// never replaces, so a concurrent creator's file is kept). A power cut
// during a first start used to leave a 0-byte state.db, which the next
// start refuses as truncated.
func createFile(path string, beforeLink func(string)) error {
	dir, base := filepath.Dir(path), filepath.Base(path)
	pattern := "." + base + ".new-*"
	if stale, _ := filepath.Glob(filepath.Join(dir, pattern)); len(stale) > 0 {
		// Left by a first start that was cut off: never linked, never used.
		for _, p := range stale {
			_ = os.Remove(p)
		}
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("create state database %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, only the second name goes
	if err := f.Close(); err != nil {
		return fmt.Errorf("create state database %s: %w", path, err)
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("create state database %s: %w", path, err)
	}
	err = db.Update(initSchema) // bbolt syncs the file at commit
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create state database %s: %w", path, err)
	}
	if beforeLink != nil {
		beforeLink(tmp)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create state database %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
