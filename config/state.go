package config

import (
	"os"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
)

// State backends.
const (
	BackendBbolt = "bbolt" // state.db in state_dir (default)
	BackendEtcd  = "etcd"  // cluster mode: several daemons share the state
)

// State is the [state] table: where jobs are kept.
type State struct {
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
func (s State) Cluster() bool { return s.Backend == BackendEtcd }

func buildState(t *table.Table) State {
	host, _ := os.Hostname()
	s := State{
		Backend:      t.OneOf("backend", BackendBbolt, BackendBbolt, BackendEtcd),
		Endpoints:    t.Strings("endpoints"),
		Prefix:       strings.TrimRight(t.StrOr("prefix", "/watchfolder"), "/"),
		LeaseTTL:     t.Duration("lease_ttl", 15*time.Second, time.Second),
		Node:         t.StrOr("node", host),
		Username:     t.StrOr("username", ""),
		Password:     t.Secret("password"),
		CACert:       t.StrOr("ca_cert", ""),
		CertFile:     t.StrOr("cert_file", ""),
		KeyFile:      t.StrOr("key_file", ""),
		ScanInterval: t.Duration("scan_interval", 2*time.Second, 100*time.Millisecond),
	}
	if s.Node == "" {
		s.Node = host
	}
	if len(s.Endpoints) == 0 {
		s.Endpoints = nil
	}
	if s.Cluster() {
		if len(s.Endpoints) == 0 {
			t.Errf("endpoints", `required with backend = "etcd" (e.g. ["https://etcd1:2379"])`)
		}
		if s.Prefix == "" || !strings.HasPrefix(s.Prefix, "/") {
			t.Errf("prefix", "%q must start with / and not be just /", s.Prefix)
		}
		if s.Node == "" || strings.ContainsAny(s.Node, "/\x00") {
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
	t.Unknown(nil)
	return s
}

// writeState adds the [state] table to the effective configuration.
func writeState(e *emitter, s State) {
	e.section("[state]")
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
