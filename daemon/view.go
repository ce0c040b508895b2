package daemon

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/probe"
	"github.com/watchfolder/watchfolder/state"
)

// JobView is the public shape of a job in `list --json`, `show --json` and
// the control API. It never carries secrets: checkpoint keys starting with
// "secret_" are redacted.
type JobView struct {
	ID           uint64             `json:"id"`
	Folder       string             `json:"folder"`
	Path         string             `json:"path"`
	RelPath      string             `json:"relpath"`
	Size         int64              `json:"size"`
	ModTime      time.Time          `json:"mtime"`
	State        state.State        `json:"state"`
	Error        string             `json:"error"`
	Attempts     int                `json:"attempts"`
	NextAttempt  *time.Time         `json:"next_attempt,omitempty"`
	SHA256       string             `json:"sha256,omitempty"`
	FinalPath    string             `json:"final_path,omitempty"`
	Sidecar      string             `json:"sidecar,omitempty"`
	Media        *probe.Facts       `json:"media,omitempty"` // the media check's facts
	Created      time.Time          `json:"created"`
	Updated      time.Time          `json:"updated"`
	Destinations []DestView         `json:"destinations"`
	History      []state.Transition `json:"history,omitempty"`
}

// DestView is one destination of a job.
type DestView struct {
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	State     state.DestState `json:"state"`
	VendorID  string          `json:"vendor_id"`
	Object    string          `json:"object"`
	BytesDone int64           `json:"bytes_done"`
	Error     string          `json:"error,omitempty"`
	Attempts  int             `json:"attempts"`
	// NextAttempt is set while the destination waits to be tried again
	// after a failed attempt (Error says why).
	NextAttempt *time.Time      `json:"next_attempt,omitempty"`
	Checkpoint  json.RawMessage `json:"checkpoint,omitempty"`
}

// NewJobView builds the view; full adds history and checkpoints (for show).
func NewJobView(j *state.Job, full bool) JobView {
	v := JobView{
		ID: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath, Size: j.Size,
		ModTime: j.ModTime, State: j.State, Error: j.Error, Attempts: j.Attempts,
		SHA256: j.SHA256, FinalPath: j.FinalPath, Sidecar: j.Sidecar, Media: mediaFacts(j),
		Created: j.Created, Updated: j.Updated, Destinations: []DestView{},
	}
	if !j.NextAttempt.IsZero() && !j.State.Terminal() {
		t := j.NextAttempt
		v.NextAttempt = &t
	}
	for _, d := range j.Destinations {
		dv := DestView{Name: d.Name, Type: d.Type, State: d.State, VendorID: d.VendorID,
			Object: d.Object, BytesDone: d.BytesDone, Error: d.Error, Attempts: d.Attempts}
		if !d.NextAttempt.IsZero() && !j.State.Terminal() && d.State != state.DestDone && d.State != state.DestFailed {
			t := d.NextAttempt
			dv.NextAttempt = &t
		}
		if full {
			dv.Checkpoint = redactCheckpoint(d.Checkpoint)
		}
		v.Destinations = append(v.Destinations, dv)
	}
	if full {
		v.History = j.History
	}
	return v
}

// redactCheckpoint blanks per-upload credentials kept for resuming.
func redactCheckpoint(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	if extra, ok := m["extra"].(map[string]any); ok {
		for k := range extra {
			if strings.HasPrefix(k, "secret_") {
				extra[k] = "[redacted]"
			}
		}
	}
	// Part lists of big files are long and of no use to an operator.
	if parts, ok := m["parts"].([]any); ok {
		m["parts"] = len(parts)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return out
}
