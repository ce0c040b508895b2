package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Role is what a user may do.
type Role int

const (
	RoleNone     Role = iota
	RoleEditor        // sees everything, changes nothing
	RoleOperator      // also retries jobs and pauses folders
)

func (r Role) String() string {
	switch r {
	case RoleEditor:
		return "editor"
	case RoleOperator:
		return "operator"
	}
	return "none"
}

// user is who made a request.
type user struct {
	Name string
	Role Role
	Via  string // "session", "basic", "proxy", "local"
	hash []byte // the password hash a sign-in checked, for its session
}

type userKey struct{}

func userOf(ctx context.Context) *user {
	u, _ := ctx.Value(userKey{}).(*user)
	return u
}

// account is one users_file entry.
type account struct {
	hash []byte
	role Role
}

// usersFile is the htpasswd file, read again when it changes on disk so
// adding a user needs no restart.
type usersFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	size    int64
	users   map[string]account
}

// usersRecheck is how often the file's mtime is looked at.
const usersRecheck = 2 * time.Second

func loadUsers(path string) (*usersFile, error) {
	u := &usersFile{path: path}
	if err := u.reload(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *usersFile) reload() error {
	fi, err := os.Stat(u.path)
	if err != nil {
		return fmt.Errorf("users_file: %w", err)
	}
	data, err := os.ReadFile(u.path)
	if err != nil {
		return fmt.Errorf("users_file: %w", err)
	}
	users, err := parseUsers(data)
	if err != nil {
		return fmt.Errorf("users_file %s: %w", u.path, err)
	}
	u.users, u.mtime, u.size = users, fi.ModTime(), fi.Size()
	return nil
}

// parseUsers reads "name:bcrypt-hash[:role]" lines; # starts a comment.
// Only bcrypt hashes are accepted: htpasswd's MD5 and SHA1 schemes are too
// cheap to guess against.
func parseUsers(data []byte) (map[string]account, error) {
	out := map[string]account{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
			return nil, fmt.Errorf("line %d: want name:bcrypt-hash[:operator|editor]", n)
		}
		hash := parts[1]
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (%s): not a bcrypt hash (create it with `htpasswd -B`)", n, parts[0])
		}
		role := RoleEditor
		if len(parts) == 3 {
			switch parts[2] {
			case "operator":
				role = RoleOperator
			case "editor", "":
			default:
				return nil, fmt.Errorf("line %d (%s): role %q is not operator or editor", n, parts[0], parts[2])
			}
		}
		out[parts[0]] = account{hash: []byte(hash), role: role}
	}
	return out, sc.Err()
}

// lookup returns the account of name, re-reading the file if it changed.
// A file that became unreadable keeps the last good list (and says so).
func (u *usersFile) lookup(name string) (account, bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var err error
	if time.Since(u.checked) > usersRecheck {
		u.checked = time.Now()
		if fi, serr := os.Stat(u.path); serr != nil || !fi.ModTime().Equal(u.mtime) || fi.Size() != u.size {
			err = u.reload()
		}
	}
	a, ok := u.users[name]
	return a, ok, err
}

// rateLimiter counts failed logins per key (client address, user name);
// a key with too many failures in the window is refused until it ends.
type rateLimiter struct {
	max    int
	window time.Duration

	mu   sync.Mutex
	fail map[string]*failures
}

type failures struct {
	n     int
	until time.Time
}

func newRateLimiter(max int, window time.Duration) *rateLimiter {
	return &rateLimiter{max: max, window: window, fail: map[string]*failures{}}
}

// blocked reports whether key may not try now, and for how long.
func (l *rateLimiter) blocked(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fail[key]
	if f == nil || now.After(f.until) {
		return false, 0
	}
	return f.n >= l.max, f.until.Sub(now)
}

func (l *rateLimiter) failed(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fail) > 10000 {
		for k, f := range l.fail {
			if now.After(f.until) {
				delete(l.fail, k)
			}
		}
	}
	f := l.fail[key]
	if f == nil || now.After(f.until) {
		f = &failures{until: now.Add(l.window)}
		l.fail[key] = f
	}
	f.n++
}

func (l *rateLimiter) succeeded(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fail, key)
}

// Login limits: per client address and per user name.
const (
	loginMaxFailures = 5
	loginWindow      = 5 * time.Minute
)

// errTooMany is returned while a client or a name is locked out.
type errTooMany struct{ wait time.Duration }

func (e errTooMany) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %s", e.wait.Round(time.Second))
}

// checkPassword verifies name and password under the rate limits.
func (s *Server) checkPassword(r *http.Request, name, password string) (*user, error) {
	now := time.Now()
	ipKey, nameKey := "ip:"+clientIP(r).String(), "user:"+name
	for _, k := range []string{ipKey, nameKey} {
		if b, wait := s.limits.blocked(k, now); b {
			return nil, errTooMany{wait}
		}
	}
	acct, ok, err := s.users.lookup(name)
	if err != nil {
		s.log.Warn("web: users_file could not be read again; using the last good copy", "err", err)
	}
	hash := acct.hash
	if !ok {
		// A wrong name costs as long as a wrong password.
		hash = s.dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !ok {
		s.limits.failed(ipKey, now)
		s.limits.failed(nameKey, now)
		s.log.Warn("web: failed login", "user", name, "remote", clientIP(r).String())
		return nil, fmt.Errorf("wrong user name or password")
	}
	s.limits.succeeded(ipKey)
	s.limits.succeeded(nameKey)
	return &user{Name: name, Role: acct.role, hash: acct.hash}, nil
}

// clientIP is the address the connection comes from (not a header: only
// the trusted proxy's user header is believed, nothing else it sends).
func clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

const sessionCookie = "wf_session"

// sessionValue is name.expiry.mac, signed with the server's key over the
// user's password hash too: a new password (or a removed user) ends the
// user's sessions. The key is made at start, so a restart signs everyone
// out.
func (s *Server) sessionValue(name string, hash []byte, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	n := base64.RawURLEncoding.EncodeToString([]byte(name))
	return n + "." + e + "." + s.mac("session", n, e, string(hash))
}

// session returns the user a session cookie names, if it is valid.
func (s *Server) session(v string) (*user, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return nil, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() > exp {
		return nil, false
	}
	name, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, false
	}
	acct, ok, _ := s.users.lookup(string(name))
	if !ok || !hmac.Equal([]byte(parts[2]), []byte(s.mac("session", parts[0], parts[1], string(acct.hash)))) {
		return nil, false
	}
	return &user{Name: string(name), Role: acct.role, Via: "session"}, true
}

// mac is a keyed hash over the parts, each length-prefixed so that no two
// different lists of parts hash alike.
func (s *Server) mac(parts ...string) string {
	h := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// csrfToken is bound to the user: a form from one user's page is no good
// for another, and it needs no server-side storage.
func (s *Server) csrfToken(u *user) string {
	if u == nil {
		return ""
	}
	return s.mac("csrf", u.Via, u.Name)
}

// identify works out who sent r: a trusted proxy's header, a session
// cookie, Basic credentials, or (on a loopback listener without access
// control) the local editor. nil: nobody; err: refused credentials.
func (s *Server) identify(r *http.Request) (*user, error) {
	if s.cfg.TrustedProxyHeader != "" {
		ip := clientIP(r)
		trusted := slices.ContainsFunc(s.cfg.TrustedProxies, func(p netip.Prefix) bool { return p.Contains(ip) })
		if name := strings.TrimSpace(r.Header.Get(s.cfg.TrustedProxyHeader)); trusted && name != "" {
			role := RoleEditor
			if slices.Contains(s.cfg.ProxyOperators, name) {
				role = RoleOperator
			}
			return &user{Name: name, Role: role, Via: "proxy"}, nil
		}
	}
	if s.users != nil {
		if c, err := r.Cookie(sessionCookie); err == nil {
			if u, ok := s.session(c.Value); ok {
				return u, nil
			}
		}
		if name, pw, ok := r.BasicAuth(); ok {
			u, err := s.checkPassword(r, name, pw)
			if err != nil {
				return nil, err
			}
			u.Via = "basic"
			return u, nil
		}
	}
	// The open page answers only requests addressed to a loopback name: a
	// web site the editor visits cannot rebind its own name to 127.0.0.1
	// and read the page from the editor's browser.
	if s.open && loopbackHost(r.Host) {
		return &user{Name: "local", Role: RoleEditor, Via: "local"}, nil
	}
	return nil, nil
}

// loopbackHost reports whether a Host header names this machine's
// loopback interface.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
