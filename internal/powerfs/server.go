package powerfs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A process must not serve a FUSE mount and fault in pages of a file
// mapped from it (bbolt reads its database through mmap): a page fault is
// not a point where the Go runtime can stop a thread, so a garbage
// collection that starts meanwhile waits for the fault, which waits for the
// server goroutines, which wait for the collection. Tests that map files
// from the mount therefore run the file system in a child process: a
// program calls ServeIfChild first thing (in TestMain or init), and the
// test starts it with StartServer.

// ServeEnv names the environment variable that makes ServeIfChild serve
// (the work directory); MountEnv names the mountpoint's.
const (
	ServeEnv = "POWERFS_SERVE"
	MountEnv = "POWERFS_MOUNT"
)

// ServeIfChild serves a file system and exits, if this process was started
// by StartServer; otherwise it returns at once.
func ServeIfChild() {
	work, mnt := os.Getenv(ServeEnv), os.Getenv(MountEnv)
	if work == "" || mnt == "" {
		return
	}
	if err := serve(work, mnt, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "powerfs:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve runs commands read line by line from ctl, answering each with one
// line: "ok <json>" or "err <text>". It returns on "quit" or at the end of
// ctl (both unmount after syncing everything, like a clean shutdown).
func serve(work, mnt string, ctl io.Reader, out io.Writer) error {
	f, err := New(work)
	if err != nil {
		return err
	}
	if err := f.Mount(mnt); err != nil {
		return err
	}
	reply := func(v any, err error) {
		if err != nil {
			fmt.Fprintf(out, "err %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
			return
		}
		b, _ := json.Marshal(v)
		fmt.Fprintf(out, "ok %s\n", b)
	}
	sc := bufio.NewScanner(ctl)
	for sc.Scan() {
		args := strings.Fields(sc.Text())
		if len(args) == 0 {
			continue
		}
		switch args[0] {
		case "cut": // cut KEEP SEED
			var o CutOptions
			if len(args) == 3 {
				o.Keep, _ = strconv.ParseFloat(args[1], 64)
				seed, _ := strconv.ParseUint(args[2], 10, 64)
				o.Rand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
			}
			reply(f.Cut(o))
		case "mount":
			reply(struct{}{}, f.Mount(mnt))
		case "sync":
			reply(struct{}{}, f.SyncAll())
		case "stats":
			reply(f.Stats(), nil)
		case "quit":
			err := f.Unmount()
			reply(struct{}{}, err)
			return err
		default:
			reply(nil, fmt.Errorf("unknown command %q", args[0]))
		}
	}
	return f.Unmount()
}

// Server is a power-cut file system served by a child process.
type Server struct {
	Mountpoint string

	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	exited chan struct{}
}

// StartServer starts cmd (a program that calls ServeIfChild) to serve a
// new file system kept in workDir (empty or absent), mounted at mnt (an
// existing empty directory), and waits until it is mounted. cmd's Stderr
// is left as the caller set it.
func StartServer(cmd *exec.Cmd, workDir, mnt string) (*Server, error) {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, ServeEnv+"="+workDir, MountEnv+"="+mnt)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("powerfs: start server: %w", err)
	}
	s := &Server{Mountpoint: mnt, cmd: cmd, in: in, out: bufio.NewReader(out), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	// The first command is answered once the mount is up.
	if _, err := s.Stats(); err != nil {
		s.Close()
		return nil, fmt.Errorf("powerfs: server did not come up: %w", err)
	}
	return s, nil
}

func (s *Server) call(v any, args ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("powerfs: server closed")
	}
	if _, err := fmt.Fprintln(s.in, strings.Join(args, " ")); err != nil {
		return fmt.Errorf("powerfs: %s: %w", args[0], err)
	}
	line, err := s.out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("powerfs: %s: server gone: %w", args[0], err)
	}
	line = strings.TrimSuffix(line, "\n")
	if rest, ok := strings.CutPrefix(line, "ok "); ok {
		if v == nil {
			return nil
		}
		return json.Unmarshal([]byte(rest), v)
	}
	return fmt.Errorf("powerfs: %s: %s", args[0], strings.TrimPrefix(line, "err "))
}

// Cut cuts the power (see FS.Cut); keep and seed shape the random part
// that survives. Mount shows the durable state again.
func (s *Server) Cut(keep float64, seed uint64) (CutReport, error) {
	var r CutReport
	err := s.call(&r, "cut", strconv.FormatFloat(keep, 'g', -1, 64), strconv.FormatUint(seed, 10))
	return r, err
}

// Mount mounts the file system again after a cut.
func (s *Server) Mount() error { return s.call(nil, "mount") }

// SyncAll makes everything durable.
func (s *Server) SyncAll() error { return s.call(nil, "sync") }

// Stats returns the file system's counters.
func (s *Server) Stats() (Stats, error) {
	var st Stats
	err := s.call(&st, "stats")
	return st, err
}

// Close syncs everything, unmounts and stops the server. A server that
// died leaves its mount detached, not stuck.
func (s *Server) Close() error {
	err := s.call(nil, "quit")
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	s.in.Close()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-s.exited
	}
	if err != nil {
		syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH)
	}
	return err
}
