package state

// The transition table lives in a switch rather than a package-level map so
// that nothing outside this function can change the rules at run time.

// CanTransition reports whether a job may move from one state to another.
// Staying in the same state is always allowed (progress, checkpoints, notes),
// even for a terminal job. An unknown state never transitions.
func CanTransition(from, to State) bool {
	if !from.Known() || !to.Known() {
		return false
	}
	if from == to {
		return true
	}
	switch from {
	case Waiting:
		return to == Queued || to == Gone || to == Moving
	case Queued:
		// Retry: an attempt can fail before any upload starts (the file or
		// its sidecar cannot be read yet).
		return to == Probing || to == Uploading || to == Waiting || to == Gone || to == Moving || to == Retry
	case Probing:
		// The media check passed (uploading), failed (moving to failed_dir),
		// could not read the file (retry), or the file changed or vanished.
		return to == Uploading || to == Moving || to == Retry || to == Waiting || to == Gone
	case Uploading:
		return to == Registering || to == Moving || to == Retry || to == Waiting || to == Gone
	case Registering:
		// Waiting, Gone: the file changed or vanished after its bytes were
		// sent, before the job counted as delivered.
		return to == Moving || to == Retry || to == Waiting || to == Gone
	case Retry:
		return to == Queued || to == Probing || to == Uploading || to == Moving || to == Gone || to == Waiting
	case Moving:
		return to == Done || to == Failed
	case Failed:
		// An operator's retry: the file is put back and processed again.
		return to == Queued
	default: // Done, Gone
		return false
	}
}

// canCreate reports whether a new job may start in s: a job is born either
// still being written (waiting) or already stable (queued).
func canCreate(s State) bool { return s == Waiting || s == Queued }

// AllStates returns every state in pipeline order. The slice is fresh: the
// caller may keep or modify it.
func AllStates() []State {
	return []State{Waiting, Queued, Probing, Uploading, Registering, Retry, Moving, Done, Failed, Gone}
}

// Known reports whether s is one of the states in AllStates.
func (s State) Known() bool {
	switch s {
	case Waiting, Queued, Probing, Uploading, Registering, Retry, Moving, Done, Failed, Gone:
		return true
	}
	return false
}
