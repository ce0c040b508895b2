package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/watchfolder/watchfolder/daemon"
)

// renderCluster prints the cluster part of `status`: the live nodes, the
// folders this node scans and which node holds which job.
func renderCluster(w io.Writer, c *daemon.ClusterStatus) {
	fmt.Fprintf(w, "cluster: this node %s; nodes alive: %s\n", c.Node, strings.Join(c.Nodes, ", "))
	if len(c.Scanning) > 0 {
		fmt.Fprintf(w, "  scanning (elected): %s\n", strings.Join(c.Scanning, ", "))
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
