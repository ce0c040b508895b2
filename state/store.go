package state

import (
	"context"
	"errors"
	"time"
)

// Options for Open.
type Options struct {
	ReadOnly bool
	// Timeout for acquiring the file lock; 0 means fail at once when another
	// process (the running daemon) holds the database.
	Timeout time.Duration
}

// Filter selects jobs for List.
type Filter struct {
	States  []State   // empty: any
	Folder  string    // empty: any
	Since   time.Time // zero: any; compares Updated
	Limit   int       // 0: no limit
	AfterID uint64    // pagination: only ids below this (List returns newest first)
}

// Store is the bbolt-backed job store.
type Store struct{}

// Open opens (creating if needed) the database at path.
func Open(path string, opts Options) (*Store, error) { return nil, errors.New("not implemented") }

// Close closes the database.
func (s *Store) Close() error { return nil }

// Create assigns j an id (NextSequence), sets Created/Updated, records the
// first history entry, and commits j with its indexes.
func (s *Store) Create(ctx context.Context, j *Job) error { return errors.New("not implemented") }

// Get returns the job with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id uint64) (*Job, error) {
	return nil, errors.New("not implemented")
}

// Latest returns the newest job for folder+relpath, or ErrNotFound.
func (s *Store) Latest(ctx context.Context, folder, relpath string) (*Job, error) {
	return nil, errors.New("not implemented")
}

// Update loads job id, calls fn on it, validates a state change (returning
// ErrIllegalTransition), appends history when State changed, updates the
// indexes and commits, all in one transaction. The committed job is returned.
func (s *Store) Update(ctx context.Context, id uint64, fn func(*Job) error) (*Job, error) {
	return nil, errors.New("not implemented")
}

// List returns jobs matching f, newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]*Job, error) {
	return nil, errors.New("not implemented")
}

// Unfinished returns every job whose state is not terminal, oldest first.
func (s *Store) Unfinished(ctx context.Context) ([]*Job, error) {
	return nil, errors.New("not implemented")
}

// Delete removes a job and its index entries (the `forget` command).
func (s *Store) Delete(ctx context.Context, id uint64) error { return errors.New("not implemented") }
