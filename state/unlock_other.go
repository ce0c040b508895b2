//go:build !unix

package state

import "os"

// releaseAbandoned closes a file bbolt abandoned by panicking in Open.
func releaseAbandoned(f *os.File) { _ = f.Close() }
