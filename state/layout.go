package state

// On-disk layout (schema 1):
//
//	jobs       8-byte big-endian id                      -> JSON Job
//	idx_state  state 0x00 id                             -> empty
//	idx_path   folder 0x00 relpath 0x00 id               -> empty
//	counts     folder 0x00 state                         -> 8-byte big-endian count
//	meta       "schema"                                  -> "1"
//	outbox     8-byte big-endian sequence                -> JSON OutboxEntry (see outbox.go)
//
// Big-endian ids sort numerically, so cursors give ids in order within any
// prefix. Folder names, relpaths and states may not contain 0x00, which makes
// every prefix unambiguous. Indexes and counts change only in the
// transaction that writes the job.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

const (
	bucketJobs     = "jobs"
	bucketIdxState = "idx_state"
	bucketIdxPath  = "idx_path"
	bucketCounts   = "counts"
	bucketMeta     = "meta"
	keySchema      = "schema"
)

func bucketNames() []string {
	return []string{bucketJobs, bucketIdxState, bucketIdxPath, bucketCounts, bucketMeta}
}

func initSchema(tx *bolt.Tx) error {
	for _, name := range bucketNames() {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if _, err := tx.CreateBucketIfNotExists([]byte(bucketOutbox)); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketOutbox, err)
	}
	meta := tx.Bucket([]byte(bucketMeta))
	if meta.Get([]byte(keySchema)) == nil {
		if err := meta.Put([]byte(keySchema), []byte(schemaVersion)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	}
	return checkSchema(tx)
}

func checkSchema(tx *bolt.Tx) error {
	if _, err := openBuckets(tx); err != nil {
		return err
	}
	v := tx.Bucket([]byte(bucketMeta)).Get([]byte(keySchema))
	if string(v) != schemaVersion {
		return fmt.Errorf("schema version %q, this build reads %q: %w", v, schemaVersion, ErrCorrupt)
	}
	return nil
}

func idKey(id uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), id) }

// stateSeekPrefix is the idx_state prefix of every job in st.
func stateSeekPrefix(st State) []byte {
	return append([]byte(st), 0)
}

func stateKey(st State, id uint64) []byte {
	return binary.BigEndian.AppendUint64(stateSeekPrefix(st), id)
}

// pathPrefix is the idx_path prefix of every job for folder+relpath.
func pathPrefix(folder, relpath string) []byte {
	k := make([]byte, 0, len(folder)+len(relpath)+2+8)
	k = append(k, folder...)
	k = append(k, 0)
	k = append(k, relpath...)
	return append(k, 0)
}

func pathKey(folder, relpath string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(pathPrefix(folder, relpath), id)
}

func countKey(folder string, st State) []byte {
	k := make([]byte, 0, len(folder)+1+len(st))
	k = append(k, folder...)
	k = append(k, 0)
	return append(k, st...)
}

func splitCountKey(k []byte) (folder string, st State, ok bool) {
	f, s, ok := bytes.Cut(k, []byte{0})
	return string(f), State(s), ok
}

// splitStateKey parses an idx_state key.
func splitStateKey(k []byte) (State, uint64, bool) {
	if len(k) < 10 || k[len(k)-9] != 0 {
		return "", 0, false
	}
	return State(k[:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// splitPathKey parses an idx_path key.
func splitPathKey(k []byte) (folder, relpath string, id uint64, ok bool) {
	if len(k) < 11 || k[len(k)-9] != 0 {
		return "", "", 0, false
	}
	f, r, ok := bytes.Cut(k[:len(k)-9], []byte{0})
	if !ok {
		return "", "", 0, false
	}
	return string(f), string(r), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// validateKeys rejects jobs whose index keys would be ambiguous.
func validateKeys(j *Job) error {
	switch {
	case j.Folder == "":
		return fmt.Errorf("job %s: empty folder name", j.RelPath)
	case j.RelPath == "":
		return fmt.Errorf("job in folder %s: empty relpath", j.Folder)
	case strings.IndexByte(j.Folder, 0) >= 0, strings.IndexByte(j.RelPath, 0) >= 0:
		return fmt.Errorf("job %q/%q: NUL byte in folder or relpath", j.Folder, j.RelPath)
	case !utf8.ValidString(j.Folder), !utf8.ValidString(j.RelPath), !utf8.ValidString(j.Path):
		// Jobs are stored as JSON, which replaces invalid UTF-8 with U+FFFD:
		// the stored job would name another file than its idx_path key.
		return fmt.Errorf("job %q/%q: file name is not valid UTF-8 (rename the file)", j.Folder, j.RelPath)
	}
	return nil
}

func uniqueStates(in []State) ([]State, error) {
	var out []State
	for _, st := range in {
		if !st.Known() {
			return nil, fmt.Errorf("unknown state %q", st)
		}
		if !slices.Contains(out, st) {
			out = append(out, st)
		}
	}
	return out, nil
}

// buckets holds one transaction's bucket handles.
type buckets struct {
	jobs, idxState, idxPath, counts *bolt.Bucket
}

func openBuckets(tx *bolt.Tx) (buckets, error) {
	var b buckets
	for _, p := range []struct {
		name string
		dst  **bolt.Bucket
	}{
		{bucketJobs, &b.jobs}, {bucketIdxState, &b.idxState}, {bucketIdxPath, &b.idxPath},
		{bucketCounts, &b.counts}, {bucketMeta, new(*bolt.Bucket)},
	} {
		*p.dst = tx.Bucket([]byte(p.name))
		if *p.dst == nil {
			return b, fmt.Errorf("bucket %s missing: %w", p.name, ErrCorrupt)
		}
	}
	return b, nil
}

func decodeJob(id uint64, data []byte) (*Job, error) {
	j := new(Job)
	if err := json.Unmarshal(data, j); err != nil {
		return nil, fmt.Errorf("decode job %d: %v: %w", id, err, ErrCorrupt)
	}
	return j, nil
}

func (b buckets) get(id uint64) (*Job, error) {
	data := b.jobs.Get(idKey(id))
	if data == nil {
		return nil, ErrNotFound
	}
	return decodeJob(id, data)
}

// put writes j and moves its index entries and counts from old (nil for a
// new job) to j.
func (b buckets) put(old, j *Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %d: %w", j.ID, err)
	}
	if err := b.jobs.Put(idKey(j.ID), data); err != nil {
		return fmt.Errorf("write job %d: %w", j.ID, err)
	}
	if old == nil || old.State != j.State {
		if old != nil {
			if err := b.idxState.Delete(stateKey(old.State, j.ID)); err != nil {
				return fmt.Errorf("job %d: idx_state: %w", j.ID, err)
			}
		}
		if err := b.idxState.Put(stateKey(j.State, j.ID), nil); err != nil {
			return fmt.Errorf("job %d: idx_state: %w", j.ID, err)
		}
	}
	if old == nil || old.Folder != j.Folder || old.RelPath != j.RelPath {
		if old != nil {
			if err := b.idxPath.Delete(pathKey(old.Folder, old.RelPath, j.ID)); err != nil {
				return fmt.Errorf("job %d: idx_path: %w", j.ID, err)
			}
		}
		if err := b.idxPath.Put(pathKey(j.Folder, j.RelPath, j.ID), nil); err != nil {
			return fmt.Errorf("job %d: idx_path: %w", j.ID, err)
		}
	}
	if old == nil || old.Folder != j.Folder || old.State != j.State {
		if old != nil {
			if err := b.addCount(old.Folder, old.State, -1); err != nil {
				return fmt.Errorf("job %d: %w", j.ID, err)
			}
		}
		if err := b.addCount(j.Folder, j.State, 1); err != nil {
			return fmt.Errorf("job %d: %w", j.ID, err)
		}
	}
	return nil
}

// remove deletes j with its index entries and count.
func (b buckets) remove(j *Job) error {
	if err := b.jobs.Delete(idKey(j.ID)); err != nil {
		return fmt.Errorf("delete job %d: %w", j.ID, err)
	}
	if err := b.idxState.Delete(stateKey(j.State, j.ID)); err != nil {
		return fmt.Errorf("job %d: idx_state: %w", j.ID, err)
	}
	if err := b.idxPath.Delete(pathKey(j.Folder, j.RelPath, j.ID)); err != nil {
		return fmt.Errorf("job %d: idx_path: %w", j.ID, err)
	}
	if err := b.addCount(j.Folder, j.State, -1); err != nil {
		return fmt.Errorf("job %d: %w", j.ID, err)
	}
	return nil
}

// addCount adjusts one counter. A counter that would go below zero stays at
// zero: counts are derived data, and refusing a job write over a drifted
// counter would stall the pipeline; Check reports the drift.
func (b buckets) addCount(folder string, st State, delta int) error {
	k := countKey(folder, st)
	var n uint64
	if v := b.counts.Get(k); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	switch {
	case delta < 0 && n < uint64(-delta):
		n = 0
	case delta < 0:
		n -= uint64(-delta)
	default:
		n += uint64(delta)
	}
	var err error
	if n == 0 {
		// Absent means zero; deleting keeps Counts free of empty states.
		err = b.counts.Delete(k)
	} else {
		err = b.counts.Put(k, binary.BigEndian.AppendUint64(nil, n))
	}
	if err != nil {
		return fmt.Errorf("counts %s/%s: %w", folder, st, err)
	}
	return nil
}

// apply is the body of Update: load, let fn change, validate, write. An error
// from fn comes back as fnErr, untouched, so Update can return it as is.
func (b buckets) apply(id uint64, now time.Time, fn func(*Job) error) (j *Job, fnErr, err error) {
	j, err = b.get(id)
	if err != nil {
		return nil, nil, err
	}
	// Only what the indexes need is kept from before fn: j itself is the
	// fresh copy fn may change.
	old := Job{ID: j.ID, Folder: j.Folder, RelPath: j.RelPath, State: j.State}
	if err := callUser(fn, j); err != nil {
		return nil, err, nil
	}
	if j.ID != id {
		return nil, nil, fmt.Errorf("job %d: update changed the id to %d", id, j.ID)
	}
	if err := validateKeys(j); err != nil {
		return nil, nil, err
	}
	if j.State != old.State {
		if !CanTransition(old.State, j.State) {
			return nil, nil, fmt.Errorf("job %d: %s -> %s: %w", id, old.State, j.State, ErrIllegalTransition)
		}
		j.History = append(j.History, Transition{At: now, From: old.State, To: j.State, Error: j.Error})
	}
	j.capHistory()
	j.Updated = now
	if err := b.put(&old, j); err != nil {
		return nil, nil, err
	}
	return j, nil, nil
}

// descCursor walks the keys "prefix + 8-byte id" from the highest id down.
// With an empty prefix it walks a bucket keyed by bare ids (jobs).
type descCursor struct {
	c      *bolt.Cursor
	prefix []byte
	id     uint64
}

func newDescCursor(c *bolt.Cursor, prefix []byte) *descCursor {
	return &descCursor{c: c, prefix: prefix}
}

// start positions the cursor on the highest id below after (0: no bound).
func (d *descCursor) start(after uint64) bool {
	var k []byte
	switch {
	case after != 0:
		k, _ = d.c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(d.prefix), after))
	case len(d.prefix) == 0:
		k, _ = d.c.Last()
		return d.settle(k)
	default:
		// The smallest key after every "prefix + id": the prefix ends in
		// 0x00, so raising that byte to 0x01 bounds the range.
		upper := bytes.Clone(d.prefix)
		upper[len(upper)-1] = 1
		k, _ = d.c.Seek(upper)
	}
	if k == nil {
		k, _ = d.c.Last()
	} else {
		k, _ = d.c.Prev()
	}
	return d.settle(k)
}

func (d *descCursor) next() bool {
	k, _ := d.c.Prev()
	return d.settle(k)
}

// settle accepts k if it is in range, stepping over malformed keys (which
// Check reports) rather than ending the walk early.
func (d *descCursor) settle(k []byte) bool {
	for ; k != nil && bytes.HasPrefix(k, d.prefix); k, _ = d.c.Prev() {
		if len(k) == len(d.prefix)+8 {
			d.id = binary.BigEndian.Uint64(k[len(d.prefix):])
			return true
		}
	}
	return false
}

// ascCursor walks "prefix + 8-byte id" keys from the lowest id up.
type ascCursor struct {
	c      *bolt.Cursor
	prefix []byte
	id     uint64
	ok     bool
}

func newAscCursor(c *bolt.Cursor, prefix []byte) *ascCursor {
	a := &ascCursor{c: c, prefix: prefix}
	k, _ := c.Seek(prefix)
	a.ok = a.settle(k)
	return a
}

func (a *ascCursor) next() bool {
	k, _ := a.c.Next()
	a.ok = a.settle(k)
	return a.ok
}

func (a *ascCursor) settle(k []byte) bool {
	for ; k != nil && bytes.HasPrefix(k, a.prefix); k, _ = a.c.Next() {
		if len(k) == len(a.prefix)+8 {
			a.id = binary.BigEndian.Uint64(k[len(a.prefix):])
			return true
		}
	}
	return false
}

// folderMatcher returns a cheap pre-filter on a job's encoded JSON: the store
// is the only writer and encoding/json writes the folder as "folder":<json
// string>, so a job of that folder always contains those bytes. A match is
// confirmed on the decoded job; a miss saves decoding it, which is most of
// the cost of scanning for a rare folder.
func folderMatcher(folder string) func([]byte) bool {
	if folder == "" {
		return func([]byte) bool { return true }
	}
	enc, err := json.Marshal(folder)
	if err != nil {
		return func([]byte) bool { return true }
	}
	needle := append([]byte(`"folder":`), enc...)
	return func(data []byte) bool { return bytes.Contains(data, needle) }
}
