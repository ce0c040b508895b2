//go:build !linux

package mover

import "errors"

var (
	errNoOpenat2         = errors.New("openat2 not available")
	errNoRenameNoReplace = errors.New("RENAME_NOREPLACE not available")
)

func openBeneath(int, string, int, uint32) (int, error) { return -1, errNoOpenat2 }

func renameat2NoReplace(int, string, int, string) error { return errNoRenameNoReplace }
