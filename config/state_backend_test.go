package config

import (
	"strings"
	"testing"
	"time"
)

func TestStateBackend(t *testing.T) {
	base := `
[[folder]]
name = "news"
path = "/srv/watch/news"
destinations = ["a"]
[destination.a]
type = "s3"
bucket = "bkt"
`
	tests := []struct {
		name, state, err string
	}{
		{"default bbolt", ``, ""},
		{"etcd", `backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
lease_ttl = "5s"
node = "ingest-1"`, ""},
		{"etcd without endpoints", `backend = "etcd"`, "state.endpoints"},
		{"bad backend", `backend = "redis"`, "state.backend"},
		{"lease too short", `lease_ttl = "10ms"`, "state.lease_ttl"},
		{"cert without key", `backend = "etcd"
endpoints = ["https://e:2379"]
cert_file = "/etc/c.pem"`, "state.cert_file"},
		{"unknown key", `endpoint = "x"`, "state.endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(base+"[state]\n"+tt.state+"\n"), "t.toml")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one naming %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "etcd" {
				s := c.State
				if !s.Cluster() || s.LeaseTTL != 5*time.Second || s.Node != "ingest-1" || s.Prefix != "/watchfolder" {
					t.Errorf("State = %+v", s)
				}
			} else if c.State.Cluster() {
				t.Errorf("default backend is %s", c.State.Backend)
			}
		})
	}
}
