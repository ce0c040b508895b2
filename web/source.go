// Package web serves the status page: server-rendered HTML for editors
// ("where is my file?"), live through Server-Sent Events, with retry and
// pause buttons for operators. It reads everything through Source, which
// the daemon implements; it knows nothing of bbolt, S3 or the platforms.
package web

import (
	"context"
	"errors"
	"time"
)

// Source is what the pages need from the daemon.
type Source interface {
	// Summary is the per-folder overview: counts, pause, transfers.
	Summary(ctx context.Context) (*Summary, error)
	// StatusJSON is the value `status --json` prints, for /api/v1/status.
	StatusJSON(ctx context.Context) (any, error)
	// Jobs lists jobs matching q, newest first, one page at a time.
	Jobs(ctx context.Context, q Query) (*Page, error)
	// Job is one job with its history, destinations, reason and receipt.
	// ErrNotFound when there is no such job.
	Job(ctx context.Context, id uint64) (*Job, error)
	// Changes delivers a value after something visible changed (at most a
	// few per second), until ctx ends; then the channel is closed.
	Changes(ctx context.Context) <-chan struct{}
	// Retry takes a failed job back into the pipeline (ErrConflict when
	// it is not failed).
	Retry(ctx context.Context, id uint64) error
	// SetPaused pauses or resumes one folder (ErrNotFound: no such folder).
	SetPaused(ctx context.Context, folder string, paused bool) error
}

// Errors a Source wraps so the pages can answer with the right status.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("not possible now")
)

// Summary is the overview of every folder.
type Summary struct {
	Version    string
	Uptime     time.Duration
	QueueDepth int
	Folders    []Folder
	// States are the job states in pipeline order; empty: the usual ones.
	States []string
}

// states is s.States or the usual list.
func (s *Summary) states() []string {
	if len(s.States) > 0 {
		return s.States
	}
	return allStates()
}

// Folder is one watched folder's state.
type Folder struct {
	Name     string
	Paused   bool
	Counts   map[string]int // state -> jobs
	InFlight []Transfer
}

// Transfer is one destination transfer under way.
type Transfer struct {
	ID          uint64
	Name        string // path below the folder
	Destination string
	State       string
	Size        int64
	Done        int64
	Rate        float64 // bytes per second, 0: unknown
	ETA         time.Duration
}

// Query selects jobs. Name matches anywhere in the path below the folder,
// ignoring case. Before is the paging cursor: only jobs with a lower id.
type Query struct {
	Folder string
	States []string
	Name   string
	Since  time.Time // updated at or after
	Before uint64
	Limit  int
}

// Page is one page of jobs.
type Page struct {
	Jobs []Job
	// Next is the cursor for the following (older) page; 0: no more.
	Next uint64
	// Partial is set when the source stopped looking before it filled the
	// page (to stay fast on a large history); Next continues the search.
	Partial bool
	Scanned int
}

// Job is one file's delivery. Paths are below the folder; no absolute
// paths and no secrets.
type Job struct {
	ID           uint64
	Folder       string
	Name         string
	State        string
	Size         int64
	ModTime      time.Time
	Created      time.Time
	Updated      time.Time
	Error        string // in the words of the .error.txt
	Attempts     int
	NextAttempt  time.Time
	SHA256       string
	FiledAs      string // e.g. "processed/clip.mp4"
	Sidecar      string
	Destinations []Dest
	// Only from Source.Job:
	History []Event
	Reason  string // the text of the .error.txt for a failed job
	Receipt string // the receipt JSON for a delivered job
	Media   []Fact // media facts, when the file was probed
}

// Dest is one destination of a job.
type Dest struct {
	Name     string
	Type     string
	State    string
	VendorID string
	Object   string
	URL      string // the platform's own page for the media, if any
	Done     int64
	Error    string
	Attempts int
}

// Event is one entry of a job's history.
type Event struct {
	At    time.Time
	From  string
	To    string
	Dest  string
	Error string
	Note  string
}

// Fact is one media fact ("duration", "1m02s").
type Fact struct {
	Name  string
	Value string
}

// allStates are the job states in pipeline order, for a Source that does
// not name them.
func allStates() []string {
	return []string{"waiting", "queued", "probing", "uploading", "registering", "retry", "moving", "done", "failed", "gone"}
}
