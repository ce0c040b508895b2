package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchfolder/watchfolder/config"
)

// FolderLockName is the hidden file in each watched folder's root that the
// running daemon holds an exclusive flock on. Two daemons with different
// state directories watching one folder would otherwise both upload every
// file. Hidden names are never jobs. On Linux, flock on NFS is a whole-file
// NFS lock, so the rule also holds between NFSv4 clients.
const FolderLockName = ".watchfolder.lock"

// ErrFolderLocked means another process holds a watched folder's lock.
var ErrFolderLocked = errors.New("folder is watched by another watchfolder")

// lockFolders takes the lock of every folder, or none: it returns an error
// naming the holder (pid, host, start time, as it wrote them) when one is
// taken. A folder whose root is missing or cannot hold the lock file is
// watched without the lock (logged): there is nothing another daemon could
// upload from it either until it is back. release drops all locks.
func lockFolders(folders []config.Folder, log *slog.Logger) (release func(), err error) {
	var held []*os.File
	release = func() {
		for _, f := range held {
			f.Close() // closing the descriptor drops the flock
		}
	}
	host, _ := os.Hostname()
	for _, f := range folders {
		p := filepath.Join(f.Path, FolderLockName)
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
		if err != nil {
			log.Warn("cannot create the folder lock; another watchfolder on this folder would not be noticed",
				"folder", f.Name, "path", p, "err", err)
			continue
		}
		lf := os.NewFile(uintptr(fd), p)
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder := "unknown holder"
			if errors.Is(err, unix.EWOULDBLOCK) {
				if b, rerr := readLockHolder(fd); rerr == nil && b != "" {
					holder = b
				}
				lf.Close()
				release()
				return nil, fmt.Errorf("folder %q (%s): %w (%s; lock file %s): stop it, or give each daemon its own folders",
					f.Name, f.Path, ErrFolderLocked, holder, p)
			}
			lf.Close()
			log.Warn("cannot lock the folder; another watchfolder on this folder would not be noticed",
				"folder", f.Name, "path", p, "err", err)
			continue
		}
		held = append(held, lf)
		info := fmt.Sprintf("pid %d on %s since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
		if err := lf.Truncate(0); err == nil {
			_, _ = lf.WriteAt([]byte(info), 0)
		}
	}
	return release, nil
}

func readLockHolder(fd int) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(buf[:n]), "?")), nil
}
