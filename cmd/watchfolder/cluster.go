package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state/etcdstore"
)

// renderCluster prints the cluster part of `status`: the live nodes, the
// folders this node scans and which node holds which job.
func renderCluster(w io.Writer, c *daemon.ClusterStatus) {
	fmt.Fprintf(w, "cluster: this node %s; nodes alive: %s\n", c.Node, strings.Join(c.Nodes, ", "))
	folders := make([]string, 0, len(c.Scanners))
	for f := range c.Scanners {
		folders = append(folders, f)
	}
	slices.Sort(folders)
	for _, f := range folders {
		node := c.Scanners[f]
		if node == "" {
			node = "(none elected)"
		}
		fmt.Fprintf(w, "  scanner of %s: %s\n", f, node)
	}
	ids := make([]uint64, 0, len(c.Claims))
	for id := range c.Claims {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(w, "  job %d: %s\n", id, c.Claims[id])
	}
}

// openEtcdOffline reads the cluster's shared state from etcd. The client
// config skips secrets; the etcd password, when set, is resolved here.
func (e *env) openEtcdOffline(cfg *config.Config) (*etcdstore.Store, error) {
	sc := cfg.State
	if sc.Password.IsSet() && sc.Password.Value() == "" {
		full, err := config.Load(cfg.Path)
		if err != nil {
			return nil, err
		}
		sc = full.State
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := daemon.OpenEtcd(ctx, sc)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "(daemon not running: reading the cluster state in etcd, prefix %s)\n", sc.Prefix)
	return st, nil
}
