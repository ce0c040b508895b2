// Package etcdenv starts an in-process etcd cluster for the cluster-mode
// tests. It is apart from testenv so that only the tests that need etcd
// link its server.
package etcdenv

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// Etcd is an in-process etcd cluster on loopback, for the cluster-mode
// tests. Members can be stopped and started again to test quorum loss.
type Etcd struct {
	Endpoints []string // client URLs, one per member

	t       testing.TB
	mu      sync.Mutex
	cfgs    []*embed.Config
	members []*embed.Etcd // nil while stopped
}

// StartEtcd starts an n-member cluster and stops it when the test ends.
func Start(t testing.TB, n int) *Etcd {
	t.Helper()
	dir := t.TempDir()
	type ports struct{ peer, client url.URL }
	ps := make([]ports, n)
	var initial []string
	for i := range ps {
		for _, u := range []*url.URL{&ps[i].peer, &ps[i].client} {
			addr, err := testenv.FreeAddr()
			if err != nil {
				t.Fatalf("etcd: %v", err)
			}
			*u = url.URL{Scheme: "http", Host: addr}
		}
		initial = append(initial, fmt.Sprintf("m%d=%s", i, ps[i].peer.String()))
	}
	e := &Etcd{t: t, members: make([]*embed.Etcd, n)}
	for i := range ps {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ListenPeerUrls = []url.URL{ps[i].peer}
		cfg.AdvertisePeerUrls = []url.URL{ps[i].peer}
		cfg.ListenClientUrls = []url.URL{ps[i].client}
		cfg.AdvertiseClientUrls = []url.URL{ps[i].client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "watchfolder-test"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.LogLevel = "error"
		// Short elections: tests stop members and wait for a new leader.
		cfg.TickMs = 50
		cfg.ElectionMs = 500
		e.cfgs = append(e.cfgs, cfg)
		e.Endpoints = append(e.Endpoints, ps[i].client.String())
	}
	// Members of a new cluster wait for each other: start them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range e.cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.start(i)
		}()
	}
	wg.Wait()
	t.Cleanup(e.Close)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcd member %d: %v", i, err)
		}
	}
	return e
}

func (e *Etcd) start(i int) error {
	m, err := embed.StartEtcd(e.cfgs[i])
	if err != nil {
		return err
	}
	select {
	case <-m.Server.ReadyNotify():
	case err := <-m.Err():
		m.Close()
		return err
	case <-time.After(60 * time.Second):
		m.Close()
		return fmt.Errorf("member %s not ready after 60s", e.cfgs[i].Name)
	}
	e.mu.Lock()
	e.members[i] = m
	e.mu.Unlock()
	return nil
}

// Stop stops member i (its data stays for Start).
func (e *Etcd) Stop(i int) {
	e.mu.Lock()
	m := e.members[i]
	e.members[i] = nil
	e.mu.Unlock()
	if m != nil {
		m.Close()
	}
}

// Start starts a stopped member i again. It returns once the member is
// serving, which needs a quorum.
func (e *Etcd) Start(i int) {
	e.t.Helper()
	e.cfgs[i].ClusterState = embed.ClusterStateFlagExisting
	if err := e.start(i); err != nil {
		e.t.Fatalf("restart etcd member %d: %v", i, err)
	}
}

// Close stops every member.
func (e *Etcd) Close() {
	for i := range e.members {
		e.Stop(i)
	}
}
