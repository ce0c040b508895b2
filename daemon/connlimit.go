package daemon

import (
	"net"
	"sync"
)

// Caps on control socket connections. A peer that may not use the socket
// gets its 403 and the connection is closed; these caps bound what it can
// hold open meanwhile (or by connecting without sending a request), so
// idle connections cannot exhaust the daemon's file descriptors.
const (
	ctlMaxConns        = 256 // everyone together
	ctlMaxPerUID       = 64  // one allowed user (scripts, status --watch)
	ctlMaxRefused      = 16  // peers that are not allowed, together
	ctlMaxRefusedPerID = 4   // one such user
)

// limitListener accepts at most the caps above and closes any connection
// beyond them at once.
type limitListener struct {
	net.Listener
	allowed func(peer) bool
	refused func(peer) // logs an over-cap peer (once per uid)

	mu      sync.Mutex
	total   int
	denied  int
	perUser map[uint32]int
}

func newLimitListener(ln net.Listener, allowed func(peer) bool, refused func(peer)) *limitListener {
	return &limitListener{Listener: ln, allowed: allowed, refused: refused, perUser: map[uint32]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p := peerOf(c)
		ok := l.allowed(p)
		if !l.take(p.uid, ok) {
			c.Close()
			if l.refused != nil {
				l.refused(p)
			}
			continue
		}
		return &limitedConn{Conn: c, peer: p, release: sync.OnceFunc(func() { l.give(p.uid, ok) })}, nil
	}
}

func (l *limitListener) take(uid uint32, ok bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	capUser := ctlMaxPerUID
	if !ok {
		capUser = ctlMaxRefusedPerID
		if l.denied >= ctlMaxRefused {
			return false
		}
	}
	if l.total >= ctlMaxConns || l.perUser[uid] >= capUser {
		return false
	}
	l.total++
	l.perUser[uid]++
	if !ok {
		l.denied++
	}
	return true
}

func (l *limitListener) give(uid uint32, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perUser[uid]--; l.perUser[uid] <= 0 {
		delete(l.perUser, uid)
	}
	if !ok {
		l.denied--
	}
}

// limitedConn frees its slot when closed, and carries the peer's
// credentials, read once at accept.
type limitedConn struct {
	net.Conn
	peer    peer
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
