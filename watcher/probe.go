package watcher

import "errors"

// writerProbe tells whether some process on this host has a file open for
// writing. It is an interface so tests can inject a fake.
type writerProbe interface {
	// HasWriter returns (true, nil) while a writer has path open, (false, nil)
	// when none has. An error wrapping errProbeUnsupported means the question
	// cannot be answered here (filesystem, permissions, platform); any other
	// error concerns the file itself (gone, replaced).
	HasWriter(path string) (bool, error)
}

// errProbeUnsupported marks a probe that cannot run for this file here; the
// watcher then relies on quiet time alone.
var errProbeUnsupported = errors.New("writer probe not supported")
