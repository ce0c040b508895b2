// Package cluster measures cluster mode (issue 17): what the etcd store
// costs a burst of small files and one large file against bbolt, and how
// three nodes, each
// behind its own bandwidth-limited uplink, compare with one. It holds only
// a benchmark, run by `make bench-cluster` (bench/cluster.sh), never by
// `make test`:
//
//	go test -run '^$' -bench Cluster -benchtime 1x -timeout 30m ./bench/cluster/
//
// Knobs (environment): WF_BENCH_BURST_FILES (2000), WF_BENCH_BURST_KIB
// (16), WF_BENCH_SCALE_FILES (24), WF_BENCH_SCALE_MIB (32),
// WF_BENCH_NODE_RATE_MIB (per-node uplink, MiB/s, 24),
// WF_BENCH_MAX_FILES ([upload] max_files of each node in the scale-out
// runs, 4: with the default 16 the scanning node claims most of a small
// batch before the others look for work), WF_BENCH_BURST_PAIRS (1: how
// many times the burst runs on both stores; the median ratio is reported,
// as a busy machine's noise dwarfs one run's), WF_BENCH_BIG_MIB (1024:
// the one large file on bbolt vs etcd), WF_BENCH_ONLY (burst, big or
// scale: one part only), WF_BENCH_BIN (a watchfolder binary to
// measure instead of building this tree's, e.g. an older commit's).
package cluster

import (
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// row is one line of the printed table.
type row struct {
	scenario, setup string
	files           int
	bytes           int64
	wall            time.Duration
}

func BenchmarkCluster(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x: every run is minutes of end-to-end work")
	}
	work := b.TempDir()
	bin := os.Getenv("WF_BENCH_BIN")
	if bin == "" {
		var err error
		if bin, err = testenv.BuildWatchfolder(work, false); err != nil {
			b.Fatal(err)
		}
	}
	only := os.Getenv("WF_BENCH_ONLY")
	m := testenv.StartMinIOT(b)
	etcd := etcdenv.Start(b, 3)

	burstN, burstKiB := envInt("WF_BENCH_BURST_FILES", 2000), envInt("WF_BENCH_BURST_KIB", 16)
	scaleN, scaleMiB := envInt("WF_BENCH_SCALE_FILES", 24), envInt("WF_BENCH_SCALE_MIB", 32)
	rate := int64(envInt("WF_BENCH_NODE_RATE_MIB", 24)) << 20
	maxFiles := envInt("WF_BENCH_MAX_FILES", 4)
	env := &bench{b: b, bin: bin, minio: m, etcd: etcd.Endpoints, work: work, maxFiles: maxFiles}

	var rows []row
	add := func(scenario, setup string, files int, size int64, wall time.Duration) {
		rows = append(rows, row{scenario, setup, files, int64(files) * size, wall})
		b.Logf("%s %s: %v", scenario, setup, wall.Round(time.Millisecond))
	}
	var one, three time.Duration
	var ratios []float64 // etcd / bbolt, one per pair of burst runs
	if only == "" || only == "burst" {
		// (a) one daemon, no bandwidth limit: the store's cost end to end.
		// Each pair runs both stores back to back, in turns first, so a
		// machine whose load drifts weighs on both alike.
		burst := env.stage("burst", burstN, int64(burstKiB)<<10)
		size := int64(burstKiB) << 10
		for pair := range envInt("WF_BENCH_BURST_PAIRS", 1) {
			var bolt, etc time.Duration
			runBolt := func() {
				bolt = env.run(fmt.Sprintf("burst-bbolt-%d", pair), burst, 1, false, 0)
				add("burst", "bbolt, 1 node", burstN, size, bolt)
			}
			runEtcd := func() {
				before := etcdRequests(b, etcd.Endpoints)
				etc = env.run(fmt.Sprintf("burst-etcd-%d", pair), burst, 1, true, 0)
				add("burst", "etcd (3 members), 1 node", burstN, size, etc)
				etcdRequests(b, etcd.Endpoints).since(before).print(burstN)
			}
			if pair%2 == 0 {
				runBolt()
				runEtcd()
			} else {
				runEtcd()
				runBolt()
			}
			ratios = append(ratios, etc.Seconds()/bolt.Seconds())
		}
	}
	var bigRatio float64
	if only == "" || only == "big" {
		// (b) one large file, one daemon, no bandwidth limit: what the
		// store costs a multipart upload (a checkpoint per part).
		size := int64(envInt("WF_BENCH_BIG_MIB", 1024)) << 20
		file := env.stage("onefile", 1, size)
		bolt := env.run("big-bbolt", file, 1, false, 0)
		add("one file", "bbolt, 1 node", 1, size, bolt)
		etc := env.run("big-etcd", file, 1, true, 0)
		add("one file", "etcd (3 members), 1 node", 1, size, etc)
		bigRatio = etc.Seconds() / bolt.Seconds()
	}
	if only == "" || only == "scale" {
		// (c) the same files through per-node uplinks of rate bytes/s.
		big := env.stage("big", scaleN, int64(scaleMiB)<<20)
		one = env.run("scale-1", big, 1, true, rate)
		add("scale-out", fmt.Sprintf("1 node, %d MiB/s uplink", rate>>20), scaleN, int64(scaleMiB)<<20, one)
		three = env.run("scale-3", big, 3, true, rate)
		add("scale-out", fmt.Sprintf("3 nodes, %d MiB/s uplink each", rate>>20), scaleN, int64(scaleMiB)<<20, three)
	}

	fmt.Printf("\n| scenario | setup | files | MiB | wall s | MiB/s |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %d | %.0f | %.2f | %.1f |\n", r.scenario, r.setup, r.files,
			float64(r.bytes)/(1<<20), r.wall.Seconds(), float64(r.bytes)/(1<<20)/r.wall.Seconds())
	}
	fmt.Println()
	if len(ratios) > 0 {
		var each []string
		for _, r := range ratios {
			each = append(each, fmt.Sprintf("%+.0f %%", 100*(r-1)))
		}
		slices.Sort(ratios)
		etcdCost := ratios[len(ratios)/2] - 1
		if len(ratios)%2 == 0 {
			etcdCost = (ratios[len(ratios)/2-1]+ratios[len(ratios)/2])/2 - 1
		}
		fmt.Printf("etcd vs bbolt, burst: %+.0f %% (goal <= +15 %%)", 100*etcdCost)
		if len(ratios) > 1 {
			fmt.Printf(", median of %d pairs: %s", len(ratios), strings.Join(each, ", "))
		}
		fmt.Println()
		b.ReportMetric(100*etcdCost, "etcd_burst_extra_%")
	}
	if bigRatio > 0 {
		fmt.Printf("etcd vs bbolt, one large file: %+.0f %%\n", 100*(bigRatio-1))
		b.ReportMetric(100*(bigRatio-1), "etcd_bigfile_extra_%")
	}
	if one > 0 {
		ratio := three.Seconds() / one.Seconds()
		fmt.Printf("3 nodes / 1 node: %.2f (goal <= 0.40)\n", ratio)
		b.ReportMetric(ratio, "scaleout_ratio")
	}
	fmt.Println()
}

type bench struct {
	b     *testing.B
	bin   string
	minio *testenv.MinIO
	etcd  []string
	work  string
	runs  int
	// maxFiles is each node's max_files when uploads are rate-limited.
	maxFiles int
}

// stage writes n files of size under work/name once; each run hard-links
// them into a fresh directory, so the bytes are written only once.
func (e *bench) stage(name string, n int, size int64) []string {
	dir := filepath.Join(e.work, "stage-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.b.Fatal(err)
	}
	block := make([]byte, 1<<20)
	var paths []string
	for i := range n {
		// Distinct bytes per file, cheap to make.
		for k := range block {
			block[k] = byte(i*7 + k*13 + k>>8)
		}
		p := filepath.Join(dir, fmt.Sprintf("clip%04d.mp4", i))
		f, err := os.Create(p)
		if err != nil {
			e.b.Fatal(err)
		}
		for left := size; left > 0; left -= int64(len(block)) {
			if _, err := f.Write(block[:min(left, int64(len(block)))]); err != nil {
				e.b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			e.b.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// run delivers files with nodes daemons (etcd or bbolt state), each
// behind its own proxy capped at rate bytes/s (0: direct to MinIO), and
// returns the time from the files' arrival to the last one filed.
func (e *bench) run(name string, files []string, nodes int, etcd bool, rate int64) time.Duration {
	e.runs++
	bucket := fmt.Sprintf("bench-%s-%d", strings.ReplaceAll(name, "_", "-"), e.runs)
	e.minio.MakeBucket(e.b, bucket)
	dir := filepath.Join(e.work, name)
	inbox := filepath.Join(dir, "in")
	incoming := filepath.Join(dir, "incoming")
	for _, d := range []string{inbox, incoming} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.b.Fatal(err)
		}
	}
	for _, f := range files {
		if err := os.Link(f, filepath.Join(incoming, filepath.Base(f))); err != nil {
			e.b.Fatal(err)
		}
	}
	var procs []*exec.Cmd
	var pxs []*limiter
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	for i := range nodes {
		endpoint := e.minio.Endpoint
		if rate > 0 {
			px, err := startLimiter(e.minio.Addr, rate)
			if err != nil {
				e.b.Fatal(err)
			}
			defer px.close()
			pxs = append(pxs, px)
			endpoint = "http://" + px.addr
		}
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		upload := ""
		if rate > 0 {
			upload = fmt.Sprintf("[upload]\nmax_files = %d\n", e.maxFiles)
		}
		cfg := e.config(ndir, inbox, bucket, endpoint, name, i, etcd, upload)
		log, err := os.Create(filepath.Join(ndir, "daemon.log"))
		if err != nil {
			e.b.Fatal(err)
		}
		defer log.Close()
		cmd := exec.Command(e.bin, "run", "--config", cfg)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			e.b.Fatal(err)
		}
		procs = append(procs, cmd)
		waitSocket(e.b, filepath.Join(ndir, "ctl.sock"))
	}
	if etcd && nodes > 1 {
		time.Sleep(time.Second) // let the scanner election settle
	}
	start := time.Now()
	// One rename: the whole set arrives at once, as a copy finishing.
	if err := os.Rename(incoming, filepath.Join(inbox, "batch")); err != nil {
		e.b.Fatal(err)
	}
	processed := filepath.Join(inbox, "processed")
	deadline := start.Add(10 * time.Minute)
	for countFiles(processed) < len(files) {
		if n := countFiles(filepath.Join(inbox, "failed")); n > 0 {
			e.b.Fatalf("%s: %d file(s) failed; logs under %s", name, n, dir)
		}
		if time.Now().After(deadline) {
			e.b.Fatalf("%s: %d of %d files filed after 10 min; logs under %s", name, countFiles(processed), len(files), dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(start)
	if len(pxs) > 1 {
		var spread []string
		for i, px := range pxs {
			px.mu.Lock()
			spread = append(spread, fmt.Sprintf("node%d %d MiB", i, px.sent>>20))
			px.mu.Unlock()
		}
		fmt.Printf("%s: sent upstream: %s\n", name, strings.Join(spread, ", "))
	}
	if got := len(e.minio.ListKeys(e.b, bucket)); got != len(files) {
		e.b.Fatalf("%s: %d objects in the bucket, want %d", name, got, len(files))
	}
	return wall
}

func (e *bench) config(dir, inbox, bucket, endpoint, name string, node int, etcd bool, upload string) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.b.Fatal(err)
	}
	store := ""
	if etcd {
		var eps []string
		for _, ep := range e.etcd {
			eps = append(eps, strconv.Quote(ep))
		}
		store = fmt.Sprintf("[state]\nbackend = \"etcd\"\nendpoints = [%s]\nprefix = %q\nnode = \"node%d\"\nlease_ttl = \"5s\"\nscan_interval = \"200ms\"\n",
			strings.Join(eps, ", "), "/bench/"+name, node)
	}
	cfg := fmt.Sprintf(`state_dir = %q
control_socket = %q
[log]
level = "warn"
%s
%s
[[folder]]
name = "in"
path = %q
destinations = ["store"]
stable_after = "0s"
rescan_interval = "1m"
probe = "off"
[destination.store]
type = "s3"
bucket = %q
key = "{relpath}"
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = %q
`, filepath.Join(dir, "state"), filepath.Join(dir, "ctl.sock"), store, upload, inbox, bucket, endpoint, e.minio.AccessKey, e.minio.SecretKey)
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		e.b.Fatal(err)
	}
	return p
}

// waitSocket waits until a daemon's control socket accepts connections.
func waitSocket(b *testing.B, path string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".mp4") {
			n++
		}
		return nil
	})
	return n
}

// limiter is a TCP proxy whose connections share one upstream budget of
// rate bytes/s, as one host's uplink does (a per-connection cap would let
// a node with more connections go faster).
type limiter struct {
	addr string
	ln   net.Listener
	rate float64

	mu   sync.Mutex
	next time.Time // when the bytes reserved so far will have been sent
	sent int64     // bytes sent upstream (how the work was spread)
	wg   sync.WaitGroup
}

func startLimiter(upstream string, rate int64) (*limiter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &limiter{addr: ln.Addr().String(), ln: ln, rate: float64(rate)}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go l.handle(c, upstream)
		}
	}()
	return l, nil
}

// wait paces n bytes: each chunk reserves its slot on the shared clock;
// a short burst allowance keeps small requests from waiting.
func (l *limiter) wait(n int) {
	const slack = 50 * time.Millisecond
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now.Add(-slack)) {
		l.next = now.Add(-slack)
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.sent += int64(n)
	until := l.next
	l.mu.Unlock()
	if d := time.Until(until); d > 0 {
		time.Sleep(d)
	}
}

func (l *limiter) handle(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, u) // downstream: answers are small, not capped
		c.Close()
		close(done)
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			l.wait(n)
			if _, werr := u.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if tc, ok := u.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}

func (l *limiter) close() {
	l.ln.Close()
	l.wg.Wait()
}

// requests counts what the etcd members answered: unary gRPC calls by
// method (summed over the members, as their servers share one registry
// in this process) and the revision, which moves once per committed write
// transaction. The difference of two counts is a run's cost in round trips.
type requests struct {
	calls map[string]float64
	rev   int64
}

func etcdRequests(b *testing.B, endpoints []string) requests {
	r := requests{calls: map[string]float64{}}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var method, typ string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "grpc_method":
					method = l.GetValue()
				case "grpc_type":
					typ = l.GetValue()
				}
			}
			if typ == "unary" {
				r.calls[method] += m.GetCounter().GetValue()
			}
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(b.Context(), "revision-probe", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	r.rev = resp.Header.Revision
	return r
}

func (r requests) since(old requests) requests {
	out := requests{calls: map[string]float64{}, rev: r.rev - old.rev}
	for k, v := range r.calls {
		if d := v - old.calls[k]; d > 0 {
			out.calls[k] = d
		}
	}
	// The probe of the second count itself.
	out.calls["Range"]--
	return out
}

// print shows the requests per file of a run of files files.
func (r requests) print(files int) {
	var parts []string
	var total float64
	for _, k := range slices.Sorted(maps.Keys(r.calls)) {
		total += r.calls[k]
		parts = append(parts, fmt.Sprintf("%s %.2f", k, r.calls[k]/float64(files)))
	}
	fmt.Printf("etcd requests per file: %.2f (%s); write transactions committed: %.2f\n",
		total/float64(files), strings.Join(parts, ", "), float64(r.rev)/float64(files))
}
