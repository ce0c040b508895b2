package uploader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// OpenSource opens the job's file for reading. It does not follow a
// symlink, does not block on a FIFO (opening one for reading waits for a
// writer, forever if none comes), and requires a regular file: anything
// else now at the path is not the version the job was created for.
func OpenSource(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: %w", ErrSourceChanged, err)
		case errors.Is(err, syscall.ELOOP):
			return nil, fmt.Errorf("%w: %s is now a symbolic link; not followed", ErrSourceChanged, path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", ErrSourceChanged, path, fileKind(fi.Mode()))
	}
	return f, nil
}

// fileKind names a non-regular file type for error messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return "mode " + m.String()
}
