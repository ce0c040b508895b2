// Package state is the durable job store (bbolt) and the job state machine:
// the states, which transitions are legal, and the history of each job. It
// knows nothing of how files are found or delivered.
package state

import (
	"encoding/json"
	"errors"
	"time"
)

// State is a job's place in the pipeline.
type State string

const (
	Waiting     State = "waiting"     // seen, not yet stable
	Queued      State = "queued"      // stable, waiting for a worker
	Probing     State = "probing"     // media structure checked before upload
	Uploading   State = "uploading"   // bytes going to the destinations
	Registering State = "registering" // platform calls that yield the media id
	Retry       State = "retry"       // an attempt failed; waits for NextAttempt
	Moving      State = "moving"      // into processed (or failed, see MoveTo)
	Done        State = "done"        // terminal
	Failed      State = "failed"      // terminal; file is in failed_dir with a reason file
	Gone        State = "gone"        // terminal; file vanished before it was delivered
)

// Terminal reports whether no further work happens for a job in s.
func (s State) Terminal() bool { return s == Done || s == Failed || s == Gone }

// DestState is a destination's sub-state within a job.
type DestState string

const (
	DestPending     DestState = "pending"
	DestUploading   DestState = "uploading"
	DestRegistering DestState = "registering"
	DestDone        DestState = "done"
	DestFailed      DestState = "failed"
)

// MoveTo values for a job in Moving.
const (
	MoveProcessed = "processed"
	MoveFailed    = "failed"
)

// Job is one version of one file (path + size + mtime + inode).
type Job struct {
	ID      uint64    `json:"id"`
	Folder  string    `json:"folder"`
	Path    string    `json:"path"`    // absolute path where the file was found
	RelPath string    `json:"relpath"` // slash-separated, below the folder root
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Inode   uint64    `json:"inode"`
	Device  uint64    `json:"device"`
	// CTime is the file's change time when the version was recorded. A
	// rewrite in place that restores size and mtime (rsync --inplace,
	// touch -d) still moves it, so it is checked again before the job
	// counts as delivered. Zero for jobs recorded before it was kept.
	CTime time.Time `json:"ctime,omitzero"`

	State       State     `json:"state"`
	Error       string    `json:"error,omitempty"` // last error, plain words
	Attempts    int       `json:"attempts"`        // failed attempts so far
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	MoveTo      string    `json:"move_to,omitempty"`    // MoveProcessed | MoveFailed while Moving
	FinalPath   string    `json:"final_path,omitempty"` // where the file ended up
	SHA256      string    `json:"sha256,omitempty"`
	Sidecar     string    `json:"sidecar,omitempty"` // absolute path of <stem>.json, if any
	// Media is the media check's facts (container, duration, codecs) as
	// the probe package writes them; the store keeps it opaque.
	Media json.RawMessage `json:"media,omitempty"`

	Destinations []Dest       `json:"destinations"`
	History      []Transition `json:"history,omitempty"`
	// HistoryDropped counts entries removed from History to keep it at
	// MaxHistory (the first entry and the newest ones are kept).
	HistoryDropped int       `json:"history_dropped,omitempty"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
}

// Dest is one destination's part of a job.
type Dest struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	State     DestState `json:"state"`
	VendorID  string    `json:"vendor_id,omitempty"`
	Object    string    `json:"object,omitempty"` // e.g. s3://bucket/key
	BytesDone int64     `json:"bytes_done"`
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts"`
	// NextAttempt is set while this destination waits to be tried again
	// after a failed attempt (its State says which step failed); Error
	// holds why. Cleared when the destination moves on.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Checkpoint is owned by the uploader; the store keeps it opaque.
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
}

// Transition is one entry of a job's history.
type Transition struct {
	At    time.Time `json:"at"`
	From  State     `json:"from,omitempty"`
	To    State     `json:"to"`
	Dest  string    `json:"dest,omitempty"`
	Error string    `json:"error,omitempty"`
	Note  string    `json:"note,omitempty"`
}

// Dest returns the destination named name, or nil.
func (j *Job) Dest(name string) *Dest {
	for i := range j.Destinations {
		if j.Destinations[i].Name == name {
			return &j.Destinations[i]
		}
	}
	return nil
}

// Errors returned by the store.
var (
	ErrNotFound          = errors.New("job not found")
	ErrIllegalTransition = errors.New("illegal state transition")
)
