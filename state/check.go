package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Check is `watchfolder db check`: it verifies the file's page structure
// (bbolt's own check), that every job decodes and has a known state, that
// every job has exactly its idx_state and idx_path entries and no entry
// points elsewhere, that the counts bucket matches a recount, and that no
// finished job still has a destination marked uploading. It returns one
// human-readable line per problem; none means healthy. err is for failures
// to run the check (including a file too damaged to read at all).
func (s *Store) Check(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("check state database: %w", err)
	}
	var problems []string
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		problems, err = check(ctx, tx)
		return err
	})
	if err != nil {
		return problems, fmt.Errorf("check state database %s: %w", s.path, err)
	}
	return problems, nil
}

func check(ctx context.Context, tx *bolt.Tx) ([]string, error) {
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// bbolt checks in its own goroutine and recovers its own panics; the
	// channel must be drained for that goroutine to end.
	for err := range tx.Check() {
		report("bbolt: %v", err)
	}
	if len(problems) > 0 {
		// Walking a structurally broken tree could fault; what bbolt found
		// is the report.
		return problems, nil
	}
	for _, name := range bucketNames() {
		if tx.Bucket([]byte(name)) == nil {
			report("bucket %s missing", name)
		}
	}
	if len(problems) > 0 {
		return problems, nil
	}
	if v := tx.Bucket([]byte(bucketMeta)).Get([]byte(keySchema)); string(v) != schemaVersion {
		report("meta: schema version %q, expected %q", v, schemaVersion)
	}
	b, err := openBuckets(tx)
	if err != nil {
		return problems, err
	}

	tick := ticker(ctx)
	recount := make(map[string]uint64)
	stateOK, pathOK := 0, 0
	c := b.jobs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := tick(); err != nil {
			return problems, err
		}
		if v == nil {
			report("jobs: unexpected nested bucket %q", k)
			continue
		}
		if len(k) != 8 {
			report("jobs: malformed key %x", k)
			continue
		}
		id := binary.BigEndian.Uint64(k)
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			report("job %d: cannot decode: %v", id, err)
			continue
		}
		if j.ID != id {
			report("job %d: stored under id %d", j.ID, id)
		}
		if !j.State.Known() {
			report("job %d: unknown state %q", id, j.State)
		}
		if has(b.idxState, stateKey(j.State, id)) {
			stateOK++
		} else {
			report("job %d: idx_state entry for state %s missing", id, j.State)
		}
		if has(b.idxPath, pathKey(j.Folder, j.RelPath, id)) {
			pathOK++
		} else {
			report("job %d: idx_path entry for %s/%s missing", id, j.Folder, j.RelPath)
		}
		recount[string(countKey(j.Folder, j.State))]++
		if j.State.Terminal() {
			for _, d := range j.Destinations {
				if d.State == DestUploading {
					report("job %d: %s but destination %s is still %s", id, j.State, d.Name, d.State)
				}
			}
		}
	}

	// Every job found its own entries above, and ids are unique, so the
	// indexes are exact when they hold no more entries than were found.
	// Only then is a per-entry pass (one job lookup each) needed to name the
	// stray ones; on a healthy million-job file it is skipped.
	n, err := countKeys(b.idxState, tick)
	if err != nil {
		return problems, err
	}
	if n != stateOK {
		if err := checkIndex(b, b.idxState, "idx_state", tick, report, func(k []byte, j *indexedJob) string {
			st, id, ok := splitStateKey(k)
			switch {
			case !ok:
				return fmt.Sprintf("idx_state: malformed key %q", k)
			case j == nil:
				return fmt.Sprintf("idx_state: %s/%d points to missing job %d", st, id, id)
			case j.State != st:
				return fmt.Sprintf("idx_state: %s/%d but job %d is %s", st, id, id, j.State)
			}
			return ""
		}); err != nil {
			return problems, err
		}
	}
	n, err = countKeys(b.idxPath, tick)
	if err != nil {
		return problems, err
	}
	if n != pathOK {
		if err := checkIndex(b, b.idxPath, "idx_path", tick, report, func(k []byte, j *indexedJob) string {
			folder, rel, id, ok := splitPathKey(k)
			switch {
			case !ok:
				return fmt.Sprintf("idx_path: malformed key %q", k)
			case j == nil:
				return fmt.Sprintf("idx_path: %s/%s/%d points to missing job %d", folder, rel, id, id)
			case j.Folder != folder || j.RelPath != rel:
				return fmt.Sprintf("idx_path: %s/%s/%d but job %d is %s/%s", folder, rel, id, id, j.Folder, j.RelPath)
			}
			return ""
		}); err != nil {
			return problems, err
		}
	}

	stored := make(map[string]bool)
	err = b.counts.ForEach(func(k, v []byte) error {
		folder, st, ok := splitCountKey(k)
		if !ok || len(v) != 8 {
			report("counts: malformed entry %q = %x", k, v)
			return nil
		}
		stored[string(k)] = true
		if got, want := binary.BigEndian.Uint64(v), recount[string(k)]; got != want {
			report("counts: folder %s state %s: stored %d, actual %d", folder, st, got, want)
		}
		return nil
	})
	if err != nil {
		return problems, err
	}
	var missing []string
	for k, n := range recount {
		if !stored[k] && n > 0 {
			folder, st, _ := splitCountKey([]byte(k))
			missing = append(missing, fmt.Sprintf("counts: folder %s state %s: stored 0, actual %d", folder, st, n))
		}
	}
	sort.Strings(missing) // map order would make the report differ run to run
	problems = append(problems, missing...)
	return problems, nil
}

// indexedJob is the part of a job that index entries refer to; decoding only
// these fields still parses the JSON but allocates far less.
type indexedJob struct {
	Folder  string `json:"folder"`
	RelPath string `json:"relpath"`
	State   State  `json:"state"`
}

// checkIndex reports every entry of idx for which verify returns a problem.
// verify gets the job the entry's id names, or nil if there is none.
func checkIndex(b buckets, idx *bolt.Bucket, name string, tick func() error,
	report func(string, ...any), verify func(k []byte, j *indexedJob) string) error {
	c := idx.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if err := tick(); err != nil {
			return err
		}
		var j *indexedJob
		if len(k) >= 8 {
			if data := b.jobs.Get(k[len(k)-8:]); data != nil {
				j = new(indexedJob)
				if err := json.Unmarshal(data, j); err != nil {
					continue // the jobs pass reported it
				}
			}
		}
		if p := verify(k, j); p != "" {
			report("%s", p)
		}
	}
	return nil
}

func countKeys(bk *bolt.Bucket, tick func() error) (int, error) {
	n := 0
	c := bk.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if err := tick(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// has reports whether key exists. Index values are empty, and bbolt's Get
// does not promise a non-nil slice for an empty value, so a cursor decides.
func has(bk *bolt.Bucket, key []byte) bool {
	k, _ := bk.Cursor().Seek(key)
	return bytes.Equal(k, key)
}

// ticker returns a function to call once per item of a long loop: it looks
// at ctx every 1024 calls, so cancelling a check of a large file takes
// effect quickly without paying for ctx.Err on every key.
func ticker(ctx context.Context) func() error {
	n := 0
	return func() error {
		n++
		if n%1024 != 0 {
			return nil
		}
		return ctx.Err()
	}
}
