package config

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
)

// State backends.
const (
	BackendBbolt = "bbolt" // state.db in state_dir (default)
	BackendEtcd  = "etcd"  // cluster mode: several daemons share the state
)

// StateSettings is the [state] table: how long finished jobs are kept, and
// where jobs are kept.
type StateSettings struct {
	// KeepDone, when positive, is how long done and gone jobs stay in the
	// database before the daemon prunes them; 0 keeps them all.
	KeepDone time.Duration

	Backend   string        // bbolt | etcd
	Endpoints []string      // etcd client URLs
	Prefix    string        // key prefix; several clusters may share one etcd
	LeaseTTL  time.Duration // how long a silent node keeps its claims
	Node      string        // this node's name; default the host name
	Username  string
	Password  Secret
	CACert    string // TLS: CA bundle (PEM)
	CertFile  string // TLS client certificate (PEM)
	KeyFile   string // its key (PEM)
	// ScanInterval is how often the elected node rescans each folder: on a
	// shared (network) folder inotify sees no writes of other machines.
	ScanInterval time.Duration
}

// Cluster reports whether the state is shared with other nodes.
func (s StateSettings) Cluster() bool { return s.Backend == BackendEtcd }

func buildState(t *table.Table) StateSettings {
	var s StateSettings
	if v, ok := t.Str("keep_done"); ok && v != "" {
		d, err := ParseAge(v)
		if err != nil || d <= 0 {
			t.Errf("keep_done", `invalid age %q: want a positive duration such as "90d", "36h" or "1d12h"`, v)
		} else {
			s.KeepDone = d
		}
	}
	buildBackend(t, &s)
	t.Unknown(nil)
	return s
}

func buildBackend(t *table.Table, s *StateSettings) {
	host, _ := os.Hostname()
	s.Backend = t.OneOf("backend", BackendBbolt, BackendBbolt, BackendEtcd)
	s.Endpoints = t.Strings("endpoints")
	s.Prefix = strings.TrimRight(t.StrOr("prefix", "/watchfolder"), "/")
	s.LeaseTTL = t.Duration("lease_ttl", 15*time.Second, time.Second)
	s.Node = t.StrOr("node", host)
	s.Username = t.StrOr("username", "")
	s.Password = t.Secret("password")
	s.CACert = t.StrOr("ca_cert", "")
	s.CertFile = t.StrOr("cert_file", "")
	s.KeyFile = t.StrOr("key_file", "")
	s.ScanInterval = t.Duration("scan_interval", 2*time.Second, 100*time.Millisecond)
	if s.Node == "" {
		s.Node = host
	}
	if len(s.Endpoints) == 0 {
		s.Endpoints = nil
	}
	if !s.Cluster() {
		return
	}
	if len(s.Endpoints) == 0 {
		t.Errf("endpoints", `required with backend = "etcd" (e.g. ["https://etcd1:2379"])`)
	}
	if s.Prefix == "" || !strings.HasPrefix(s.Prefix, "/") {
		t.Errf("prefix", "%q must start with / and not be just /", s.Prefix)
	}
	if strings.ContainsAny(s.Node, "/\x00") {
		t.Errf("node", "%q: set a node name without / (the host name is the default)", s.Node)
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		t.Errf("cert_file", "cert_file and key_file go together")
	}
	if s.Password.IsSet() && s.Username == "" {
		t.Errf("username", "required when password is set")
	}
	t.Warn("backend", "cluster mode: the open-for-writing probe sees only writers on the node that scans a folder; "+
		"writes from other hosts are judged by stable_after alone, so set it above the slowest writer's pauses")
}

// writeStateBackend adds the backend keys to the effective [state] table.
func writeStateBackend(e *emitter, s StateSettings) {
	e.str("backend", s.Backend)
	e.list("endpoints", s.Endpoints)
	e.str("prefix", s.Prefix)
	e.str("node", s.Node)
	e.dur("lease_ttl", s.LeaseTTL)
	e.dur("scan_interval", s.ScanInterval)
	e.str("username", s.Username)
	if s.Password.IsSet() {
		e.secret("password", s.Password)
	}
	e.str("ca_cert", s.CACert)
	e.str("cert_file", s.CertFile)
	e.str("key_file", s.KeyFile)
}

// ParseAge reads a duration that may start with a number of days ("90d",
// "1d12h", "0.5d"), as retention is thought of in days; the rest is Go
// duration syntax.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || n < 0 || i == 0 {
			return 0, &ageError{s}
		}
		days = time.Duration(n * float64(24*time.Hour))
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &ageError{s}
	}
	return days + d, nil
}

type ageError struct{ s string }

func (e *ageError) Error() string {
	return strconv.Quote(e.s) + " is not a duration (e.g. 90m, 24h, 7d)"
}
