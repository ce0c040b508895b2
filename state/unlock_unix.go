//go:build unix

package state

import (
	"os"
	"syscall"
)

// releaseAbandoned drops the flock of a file bbolt abandoned by panicking in
// Open. Closing the descriptor is not enough: bbolt's memory map still holds
// a reference to the open file, and the lock lives until the last reference
// goes. The mapping itself cannot be reached and stays (one per damaged
// open, only ever after corruption).
func releaseAbandoned(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	_ = f.Close()
}
