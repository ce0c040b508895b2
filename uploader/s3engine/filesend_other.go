//go:build !linux

package s3engine

import (
	"errors"
	"os"
)

// reopen is Linux-only (/proc/self/fd); elsewhere bodies go through Read.
func reopen(f *os.File) (*os.File, error) { return nil, errors.ErrUnsupported }
