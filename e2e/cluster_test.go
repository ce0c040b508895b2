package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
)

// clusterNode is one daemon of a cluster: its own state dir, control
// socket and log, the shared folder, and its own counting proxy to MinIO so
// the test can tell which node wrote what.
type clusterNode struct {
	*site
	px      *testenv.Proxy
	metrics string // host:port of /metrics
}

// clusterLeaseTTL is short so a dead node's jobs move on quickly.
const clusterLeaseTTL = 3 * time.Second

func newClusterNodes(t *testing.T, n int, endpoints []string, bucket string) ([]*clusterNode, string) {
	t.Helper()
	shared, err := os.MkdirTemp("", "wfcl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	inbox := filepath.Join(shared, "in")
	if err := os.MkdirAll(inbox, 0o755); err != nil {
		t.Fatal(err)
	}
	prefix := "/" + uniqueBucket("wf")
	var eps []string
	for _, e := range endpoints {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	var nodes []*clusterNode
	for i := range n {
		dir := filepath.Join(shared, fmt.Sprintf("n%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		px := testenv.NewProxy(t, minio.Endpoint)
		maddr, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		s := &site{t: t, dir: dir, inbox: inbox, cfg: filepath.Join(dir, "c.toml"), log: filepath.Join(dir, "d.log")}
		toml := fmt.Sprintf(`state_dir = %q
control_socket = %q
shutdown_timeout = "2s"
[log]
level = "debug"
[metrics]
listen = %q
[state]
backend = "etcd"
endpoints = [%s]
prefix = %q
node = "node%d"
lease_ttl = %q
scan_interval = "300ms"
[retry]
max_attempts = 6
initial_backoff = "100ms"
max_backoff = "500ms"
[upload]
part_size = "5MiB"
max_files = 2
max_bandwidth = "16MiB/s"
[[folder]]
name = "news"
path = %q
destinations = ["archive"]
stable_after = "150ms"
rescan_interval = "1s"
probe = "off"
[destination.archive]
type = "s3"
key = "{relpath}"
%s`, filepath.Join(dir, "state"), filepath.Join(dir, "ctl.sock"), maddr, strings.Join(eps, ", "), prefix, i,
			clusterLeaseTTL.String(), inbox, s3Table(bucket, px.URL))
		if err := os.WriteFile(s.cfg, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.kill)
		nodes = append(nodes, &clusterNode{site: s, px: px, metrics: maddr})
	}
	return nodes, inbox
}

// writes sums object writes begun for bucket/key over every node.
func clusterWrites(nodes []*clusterNode, key string) (writes, parts int) {
	for _, n := range nodes {
		writes += n.px.Writes(key)
		parts += n.px.Parts(key)
	}
	return writes, parts
}

// Issue 17: three daemons share one folder through a 3-member etcd
// cluster: every file is delivered once and filed once, the work is spread
// over the nodes, and a node SIGKILLed mid-multipart has its job finished
// by another node from the committed parts.
func TestClusterThreeNodes(t *testing.T) {
	etcd := etcdenv.Start(t, 3)
	bucket := uniqueBucket("cluster")
	minio.MakeBucket(t, bucket)
	nodes, inbox := newClusterNodes(t, 3, etcd.Endpoints, bucket)
	for _, n := range nodes {
		n.start()
	}

	// make torture runs the 300 files (WF_CLUSTER_FILES=300).
	nFiles := 60
	if v, err := strconv.Atoi(os.Getenv("WF_CLUSTER_FILES")); err == nil && v > 0 {
		nFiles = v
	}
	want := map[string][]byte{}
	for i := range nFiles {
		size := 64<<10 + i*4<<10
		if i%15 == 7 {
			size = 11 << 20 // multipart: 3 parts of 5 MiB
		}
		name := fmt.Sprintf("clip%02d.mp4", i)
		want[name] = media(name, size)
	}
	stage := nodes[0].site
	for name, data := range want {
		stage.drop(name, data)
	}
	waitAllDone(t, nodes, nFiles, 60*time.Second+time.Duration(nFiles)*time.Second/2)

	for name, data := range want {
		key := bucket + "/" + name
		if w, _ := clusterWrites(nodes, key); w != 1 {
			t.Errorf("%s: %d object writes over the cluster, want 1", name, w)
		}
		got, err := os.ReadFile(filepath.Join(inbox, "processed", name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("processed/%s: %v (%d bytes)", name, err, len(got))
		}
	}
	if got := minio.GetObject(t, bucket, "clip07.mp4"); !bytes.Equal(got, want["clip07.mp4"]) {
		t.Errorf("multipart object differs from the file")
	}
	for i, n := range nodes {
		total := 0
		for _, c := range n.px.AllWrites() {
			total += c
		}
		t.Logf("node%d wrote %d objects", i, total)
		if total == 0 {
			t.Errorf("node%d did no work: work is not spread", i)
		}
	}
	out, _, code := nodes[1].cli("status")
	if code != 0 || !strings.Contains(out, "cluster: this node node1") || !strings.Contains(out, "node0") ||
		!strings.Contains(out, "scanner of news: node") {
		t.Errorf("status (exit %d) does not show the cluster:\n%s", code, out)
	}

	scanning := 0
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "watchfolder_cluster_scanning_folders 1") {
			scanning++
		}
	}
	if scanning != 1 {
		t.Errorf("%d nodes report scanning the folder in their metrics, want 1", scanning)
	}

	// SIGKILL the node uploading a multipart file, after some parts.
	const big = "big.mp4"
	bigData := media(big, 30<<20) // 6 parts
	stage.drop(big, bigData)
	key := bucket + "/" + big
	var victim *clusterNode
	waitFor(t, 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if n.px.Parts(key) >= 2 {
				victim = n
				return true, ""
			}
		}
		return false, "no node has sent 2 parts of " + big
	}, nil)
	victim.kill()
	killedAt := time.Now()
	sentBefore := victim.px.Parts(key)
	var alive *clusterNode
	for _, n := range nodes {
		if n != victim {
			alive = n
		}
	}
	j := alive.waitState(big, clusterLeaseTTL+30*time.Second, "done", "failed")
	if j.State != "done" {
		t.Fatalf("%s ended %s: %s", big, j.State, j.Error)
	}
	t.Logf("taken over and finished %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	writes, parts := clusterWrites(nodes, key)
	if writes != 1 {
		t.Errorf("%s: %d multipart uploads begun, want 1 (the survivor resumes the dead node's upload)", big, writes)
	}
	// At most the parts in flight at the kill (concurrency 4) go twice.
	if parts > 6+4 {
		t.Errorf("%s: %d parts sent in all (%d by the killed node), want at most 10", big, parts, sentBefore)
	}
	if got := minio.GetObject(t, bucket, big); !bytes.Equal(got, bigData) {
		t.Errorf("s3://%s/%s differs from the file", bucket, big)
	}
	if _, err := os.Stat(filepath.Join(inbox, "processed", big)); err != nil {
		t.Errorf("%s not filed: %v", big, err)
	}

	// SIGSTOP the node uploading the next multipart file past its lease;
	// the other node takes the job over and finishes it. Woken up, the
	// stopped node commits nothing for the job and leaves the file alone.
	var live []*clusterNode
	for _, n := range nodes {
		if n != victim {
			live = append(live, n)
		}
	}
	const big2 = "big2.mp4"
	big2Data := media(big2, 30<<20)
	stage.drop(big2, big2Data)
	key2 := bucket + "/" + big2
	var sleeper, other *clusterNode
	waitFor(t, 30*time.Second, func() (bool, string) {
		for i, n := range live {
			if n.px.Parts(key2) >= 2 {
				sleeper, other = n, live[1-i]
				return true, ""
			}
		}
		return false, "no node has sent 2 parts of " + big2
	}, nil)
	sleeper.signal(syscall.SIGSTOP)
	j2 := other.waitState(big2, clusterLeaseTTL+30*time.Second, "done", "failed")
	if j2.State != "done" {
		t.Fatalf("%s ended %s: %s", big2, j2.State, j2.Error)
	}
	before, _ := other.list()
	sleeper.signal(syscall.SIGCONT)
	waitFor(t, 15*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(sleeper.log)
		return bytes.Contains(b, []byte("claim on the job was lost")), "woken node did not log the lost claim"
	}, sleeper.tail)
	after, _ := other.list()
	if !sameJobs(before, after) {
		t.Errorf("jobs changed after the stopped node woke up:\nbefore %+v\nafter  %+v", before, after)
	}
	if got := minio.GetObject(t, bucket, big2); !bytes.Equal(got, big2Data) {
		t.Errorf("s3://%s/%s differs from the file", bucket, big2)
	}
	if got, err := os.ReadFile(filepath.Join(inbox, "processed", big2)); err != nil || !bytes.Equal(got, big2Data) {
		t.Errorf("processed/%s: %v", big2, err)
	}
	if w, _ := clusterWrites(nodes, key2); w != 1 {
		t.Errorf("%s: %d uploads begun, want 1", big2, w)
	}
}

// signal sends sig to the node's daemon.
func (n *clusterNode) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.cmd.Process.Signal(sig)
	}
}

func sameJobs(a, b []jobJSON) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].State != b[i].State || a[i].Attempts != b[i].Attempts {
			return false
		}
	}
	return true
}

// waitAllDone waits until n jobs are done (read through the first live node).
func waitAllDone(t *testing.T, nodes []*clusterNode, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, func() (bool, string) {
		jobs, _ := nodes[0].list()
		done, other, lastErr := 0, map[string]int{}, ""
		for _, j := range jobs {
			if j.State == "done" {
				done++
			} else {
				other[j.State]++
			}
			if j.Error != "" {
				lastErr = j.Error
			}
		}
		return done == n && len(jobs) == n, fmt.Sprintf("%d of %d done, %d jobs, others %v, an error: %s", done, n, len(jobs), other, lastErr)
	}, func() string {
		var b strings.Builder
		for _, nd := range nodes {
			b.WriteString(nd.tail())
		}
		return b.String()
	})
}

// Issue 17: with one etcd member down the cluster works on; with two down
// (no quorum) nodes take no work and say so; once a member is back the
// files are delivered, each once.
func TestClusterEtcdQuorum(t *testing.T) {
	etcd := etcdenv.Start(t, 3)
	bucket := uniqueBucket("quorum")
	minio.MakeBucket(t, bucket)
	nodes, _ := newClusterNodes(t, 2, etcd.Endpoints, bucket)
	for _, n := range nodes {
		n.start()
	}
	stage := nodes[0].site

	out, errOut, _ := nodes[0].cli("doctor", "--user", "root")
	if !strings.Contains(out, "stable_after alone") || strings.Contains(out, "PROBLEM [system] state") {
		t.Errorf("doctor in cluster mode:\n%s%s", out, errOut)
	}

	etcd.Stop(0)
	for i := range 10 {
		name := fmt.Sprintf("a%02d.mp4", i)
		stage.drop(name, media(name, 100<<10))
	}
	waitAllDone(t, nodes, 10, 60*time.Second)

	etcd.Stop(1)
	for i := range 5 {
		name := fmt.Sprintf("b%02d.mp4", i)
		stage.drop(name, media(name, 100<<10))
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			b, _ := os.ReadFile(n.log)
			if bytes.Contains(b, []byte("etcd does not answer")) {
				return true, ""
			}
		}
		return false, "no node says etcd does not answer"
	}, nil)
	for i := range 5 {
		key := fmt.Sprintf("%s/b%02d.mp4", bucket, i)
		if w, _ := clusterWrites(nodes, key); w != 0 {
			t.Errorf("%s written without an etcd quorum", key)
		}
	}

	etcd.Start(1)
	waitAllDone(t, nodes, 15, 90*time.Second)
	for i := range 5 {
		key := fmt.Sprintf("%s/b%02d.mp4", bucket, i)
		if w, _ := clusterWrites(nodes, key); w != 1 {
			t.Errorf("%s: %d writes, want 1", key, w)
		}
	}

	// pause on one node holds every node's work; resume on another
	// releases it.
	if _, errOut, code := nodes[0].cli("pause"); code != 0 {
		t.Fatalf("pause: exit %d: %s", code, errOut)
	}
	waitFor(t, 15*time.Second, func() (bool, string) {
		out, _, _ := nodes[1].cli("status")
		return strings.Contains(out, "PAUSED"), "node1 does not show the pause:\n" + out
	}, nil)
	stage.drop("c00.mp4", media("c00.mp4", 100<<10))
	nodes[1].waitState("c00.mp4", 20*time.Second, "queued")
	// Absence of work can only be watched for a while: two discovery rounds.
	time.Sleep(2 * clusterLeaseTTL / 5 * 2)
	if j, _ := nodes[1].job("c00.mp4"); j.State != "queued" {
		t.Errorf("c00.mp4 is %s while the cluster is paused", j.State)
	}
	if _, errOut, code := nodes[1].cli("resume"); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, errOut)
	}
	waitAllDone(t, nodes, 16, 60*time.Second)

	// With every daemon stopped, list reads the shared state from etcd.
	for _, n := range nodes {
		n.kill()
	}
	jobs, _ := nodes[1].list()
	if len(jobs) != 16 {
		t.Errorf("offline list shows %d jobs, want 16", len(jobs))
	}
}
