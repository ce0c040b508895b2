package state

import "time"

// MaxHistory is how many history entries a job keeps. A job that retries
// forever must not grow without bound: every write re-encodes the whole job,
// so an unbounded history would make each write slower than the last.
const MaxHistory = 200

// Note appends a history entry that does not change the job's state, e.g. a
// per-destination event ("archive: uploaded s3://..."). dest may be empty.
// The entry is stored with the job's next write.
func (j *Job) Note(dest, note string) {
	j.History = append(j.History, Transition{At: storedTime(time.Now()), To: j.State, Dest: dest, Note: note})
	j.capHistory()
}

// capHistory trims History to MaxHistory entries, keeping the first entry
// (when and how the job was found) and the most recent ones (what is
// happening now). The number of dropped entries is kept in HistoryDropped so
// the status output can say that entries are missing.
func (j *Job) capHistory() {
	n := len(j.History)
	if n <= MaxHistory {
		return
	}
	drop := n - MaxHistory
	// Shift in place: the slice is owned by this job, and copying keeps the
	// backing array from growing on every append.
	copy(j.History[1:], j.History[1+drop:])
	clear(j.History[MaxHistory:])
	j.History = j.History[:MaxHistory]
	j.HistoryDropped += drop
}
