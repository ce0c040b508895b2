package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a control connection.
type peer struct {
	uid, gid uint32
	pid      int32
	groups   []uint32 // supplementary groups; nil when they could not be read
	err      error    // credentials could not be read at all
}

type peerKey struct{}

// peerOf reads SO_PEERCRED (and the supplementary groups) of an accepted
// unix connection. The kernel fills them in at connect time, so they cannot
// be forged by the client.
func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: errors.New("not a unix socket connection")}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var p peer
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.uid, p.gid, p.pid = cred.Uid, cred.Gid, cred.Pid
		p.groups, _ = peerGroups(int(fd))
	})
	if cerr != nil {
		return peer{err: cerr}
	}
	if p.err == nil && p.groups == nil {
		// Kernels before 4.13 lack SO_PEERGROUPS: read the client's
		// /proc entry instead (racy only if the pid is reused at once).
		p.groups, _ = procGroups(p.pid)
	}
	return p
}

// peerGroups reads SO_PEERGROUPS: the peer's supplementary groups as an
// array of gid_t. x/sys has no wrapper for it.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]byte, 4*64)
	for {
		n := uint32(len(buf))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno == syscall.ERANGE && int(n) > len(buf) {
			buf = make([]byte, n)
			continue
		}
		if errno != 0 {
			return nil, errno
		}
		out := make([]uint32, 0, n/4)
		for i := 0; i+4 <= int(n); i += 4 {
			out = append(out, binary.NativeEndian.Uint32(buf[i:]))
		}
		return out, nil
	}
}

// procGroups reads the Groups: line of /proc/<pid>/status.
func procGroups(pid int32) ([]uint32, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		out := []uint32{}
		for _, g := range strings.Fields(rest) {
			if v, err := strconv.ParseUint(g, 10, 32); err == nil {
				out = append(out, uint32(v))
			}
		}
		return out, nil
	}
	return nil, errors.New("no Groups line")
}

// allowed is the control socket's access rule: root, the daemon's own
// user, and members (primary or supplementary) of the socket's group.
// The file mode (0660) already says the same to the kernel; checking the
// peer too keeps a chmod or a wrong group on the socket from opening it.
func allowed(p peer, selfUID, sockGID uint32) bool {
	if p.err != nil {
		return false
	}
	return p.uid == 0 || p.uid == selfUID || p.gid == sockGID || slices.Contains(p.groups, sockGID)
}

// peerGate refuses requests from peers that may not use the socket, and
// logs each refused uid once.
type peerGate struct {
	selfUID, sockGID uint32
	log              func(msg string, args ...any)

	mu     sync.Mutex
	warned map[uint32]bool
	capped map[uint32]bool
}

func (g *peerGate) connContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitedConn); ok {
		return context.WithValue(ctx, peerKey{}, lc.peer)
	}
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}

func (g *peerGate) allows(p peer) bool { return allowed(p, g.selfUID, g.sockGID) }

// overCap logs, once per uid, a connection closed because its user holds
// too many.
func (g *peerGate) overCap(p peer) {
	g.mu.Lock()
	first := !g.capped[p.uid]
	if g.capped == nil {
		g.capped = map[uint32]bool{}
	}
	g.capped[p.uid] = true
	g.mu.Unlock()
	if first {
		g.log("control socket: too many connections from one user or in all; closed a new one (logged once per uid)",
			"uid", p.uid, "pid", p.pid)
	}
}

func (g *peerGate) check(ctx context.Context) error {
	p, _ := ctx.Value(peerKey{}).(peer)
	if allowed(p, g.selfUID, g.sockGID) {
		return nil
	}
	g.mu.Lock()
	first := !g.warned[p.uid]
	g.warned[p.uid] = true
	g.mu.Unlock()
	if first {
		g.log("control socket: refused a client not in the socket's group (logged once per uid)",
			"uid", p.uid, "gid", p.gid, "pid", p.pid, "socket_gid", g.sockGID, "err", p.err)
	}
	return fmt.Errorf("permission denied: uid %d is not root, not the daemon's user and not in the control socket's group (gid %d); add the user to that group",
		p.uid, g.sockGID)
}
