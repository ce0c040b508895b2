package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
	"github.com/watchfolder/watchfolder/watcher"
)

// jobStore is what the daemon needs of the state store: *state.Store
// (bbolt, the default) and *etcdstore.Store (cluster mode) both provide it.
type jobStore interface {
	Create(ctx context.Context, j *state.Job) error
	CreateMany(ctx context.Context, jobs []*state.Job) error
	Get(ctx context.Context, id uint64) (*state.Job, error)
	Latest(ctx context.Context, folder, relpath string) (*state.Job, error)
	ForPath(ctx context.Context, folder, relpath string) ([]*state.Job, error)
	Update(ctx context.Context, id uint64, fn func(*state.Job) error) (*state.Job, error)
	UpdateMany(ctx context.Context, ids []uint64, fn func(*state.Job) error) ([]*state.Job, error)
	List(ctx context.Context, f state.Filter) ([]*state.Job, error)
	Unfinished(ctx context.Context) ([]*state.Job, error)
	Counts(ctx context.Context) (map[string]map[state.State]int, error)
	Delete(ctx context.Context, id uint64) error
	Prune(ctx context.Context, olderThan time.Time, states []state.State) (int, error)
	Backup(ctx context.Context, w io.Writer, sized func(int64)) (int64, error)
	WriteFailures() uint64
	Close() error
	outbox
}

var (
	_ jobStore = (*state.Store)(nil)
	_ jobStore = (*etcdstore.Store)(nil)
)

// OpenEtcd connects to the etcd cluster of cfg's [state] section (also used
// by the CLI to read the shared state).
func OpenEtcd(ctx context.Context, cfg config.StateSettings) (*etcdstore.Store, error) {
	cc := clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second,
		Username: cfg.Username, Password: cfg.Password.Value()}
	if cfg.CACert != "" || cfg.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CACert != "" {
			pem, err := os.ReadFile(cfg.CACert)
			if err != nil {
				return nil, fmt.Errorf("state.ca_cert: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("state.ca_cert %s: no PEM certificate in it", cfg.CACert)
			}
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("state.cert_file/key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = tc
	}
	return etcdstore.Open(ctx, cc, etcdstore.Options{Prefix: cfg.Prefix, Node: cfg.Node, LeaseTTL: cfg.LeaseTTL})
}

// cluster is the cluster-mode part of a daemon: claims on the jobs its
// workers run, discovery of jobs other nodes created, and the election of
// one scanner per folder. Nil when the state is local (bbolt).
type cluster struct {
	st  *etcdstore.Store
	log *slog.Logger
	cfg config.StateSettings

	mu      sync.Mutex
	leading map[string]bool     // folder -> this node scans it
	dropped map[string]struct{} // paths reported while not leading
}

func newCluster(st *etcdstore.Store, cfg config.StateSettings, log *slog.Logger) *cluster {
	return &cluster{st: st, cfg: cfg, log: log.With("node", cfg.Node),
		leading: map[string]bool{}, dropped: map[string]struct{}{}}
}

// acquire claims job id for this node and reads the job in the same etcd
// transaction (j, nil when the job is missing or the state is local).
// False: another node works on it, or etcd cannot be reached (the job is
// found again later by discovery).
func (c *cluster) acquire(ctx context.Context, id uint64) (j *state.Job, ok bool) {
	if c == nil {
		return nil, true
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	j, err := c.st.ClaimGet(cctx, id)
	switch {
	case err == nil:
		return j, true
	case errors.Is(err, state.ErrNotFound):
		return nil, true // claimed; the worker finds the job gone and releases it
	case errors.Is(err, etcdstore.ErrClaimed):
		c.log.Debug("job is worked on by another node", "job", id, "err", err)
	default:
		c.log.Warn("cannot claim job: etcd does not answer (no quorum?); not taking work until it does", "job", id, "err", err)
	}
	return nil, false
}

// release gives up id's claim unless the scheduler still tracks the job
// here (a retry timer, a job pushed again).
func (c *cluster) release(ctx context.Context, d *Daemon, id uint64) {
	if c == nil || d.sched.tracked(id) {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	if err := c.st.Release(cctx, id); err != nil {
		c.log.Warn("release claim", "job", id, "err", err)
	}
}

// scanning reports whether this node creates jobs for folder's files. A
// path seen while not scanning is remembered, to be reported again if
// this node is elected later.
func (c *cluster) scanning(folder, path string) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leading[folder] {
		return true
	}
	c.dropped[path] = struct{}{}
	return false
}

// run starts discovery, the claim sweeper and one election per folder; it
// returns when ctx is done.
func (c *cluster) run(ctx context.Context, d *Daemon) {
	var wg sync.WaitGroup
	for _, f := range d.Config().Folders {
		wg.Go(func() { c.campaign(ctx, d, f.Name) })
	}
	wg.Go(func() { c.discover(ctx, d) })
	wg.Wait()
}

// pollEvery is how often a node looks for work others created or left.
func (c *cluster) pollEvery() time.Duration {
	return min(max(c.cfg.LeaseTTL/5, 200*time.Millisecond), 2*time.Second)
}

// discover pushes runnable jobs nobody claims to the local scheduler (the
// workers claim them when they pick them) and releases claims of jobs that
// finished here.
func (c *cluster) discover(ctx context.Context, d *Daemon) {
	t := time.NewTicker(c.pollEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
		c.syncPause(cctx, d)
		for _, id := range c.st.Held() {
			c.release(cctx, d, id)
		}
		// The state index tells which jobs are runnable and where; only
		// those nobody works on are read (for a retry's time), so polling
		// during a burst costs a few range reads, not every job.
		entries, err := c.st.Indexed(cctx, state.Queued, state.Retry, state.Uploading, state.Registering, state.Moving)
		var claims map[uint64]string
		if err == nil {
			claims, err = c.st.Claims(cctx)
		}
		folders := d.rt.Load().folders
		var now, later []uint64
		if err == nil {
			for _, e := range entries {
				if _, held := claims[e.ID]; held || d.sched.tracked(e.ID) || folders[e.Folder] == nil {
					continue
				}
				if e.State == state.Retry {
					later = append(later, e.ID)
				} else {
					now = append(now, e.ID)
				}
			}
		}
		var retries []*state.Job
		if err == nil && len(later) > 0 {
			retries, err = c.st.GetMany(cctx, later)
		}
		cancel()
		if err != nil {
			c.log.Warn("cannot look for work: etcd does not answer (no quorum?); retrying", "err", err)
			continue
		}
		slices.Sort(now) // oldest first
		for _, id := range now {
			d.sched.push(id)
		}
		for _, j := range retries {
			if j.State == state.Retry {
				d.sched.pushAt(j.ID, j.NextAttempt)
			} else if !j.State.Terminal() {
				d.sched.push(j.ID) // moved on meanwhile; the worker sees its state
			}
		}
	}
}

// campaign runs for leadership of folder's scanning; the leader rescans the
// folder every scan_interval (inotify does not see other hosts' writes on
// a network mount) and creates the jobs.
func (c *cluster) campaign(ctx context.Context, d *Daemon, folder string) {
	for ctx.Err() == nil {
		sess, err := c.st.Session(ctx)
		if err != nil {
			c.log.Warn("etcd session; retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(sess, c.st.ElectionPrefix(folder))
		// A campaign under a session that expires meanwhile must not win.
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				cancel()
			case <-cctx.Done():
			}
		}()
		err = e.Campaign(cctx, c.cfg.Node)
		cancel()
		if err == nil {
			select {
			case <-sess.Done():
				err = errors.New("etcd session expired during the election")
			default:
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("scanner election; retrying", "folder", folder, "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		c.log.Info("elected scanner of the folder", "folder", folder)
		c.mu.Lock()
		c.leading[folder] = true
		again := c.dropped
		c.dropped = map[string]struct{}{}
		c.mu.Unlock()
		w := d.watcher.Load()
		for p := range again {
			w.Forget(p)
		}
		w.Rescan()
		t := time.NewTicker(c.cfg.ScanInterval)
	lead:
		for {
			select {
			case <-ctx.Done():
				break lead
			case <-sess.Done():
				c.log.Warn("lost the etcd session; no longer scanning the folder", "folder", folder)
				break lead
			case <-t.C:
				d.watcher.Load().Rescan()
			}
		}
		t.Stop()
		c.mu.Lock()
		c.leading[folder] = false
		c.mu.Unlock()
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = e.Resign(rctx)
			cancel()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ClusterStatus is the cluster part of `status`.
type ClusterStatus struct {
	Node     string            `json:"node"`
	Nodes    []string          `json:"nodes"`
	Claims   map[uint64]string `json:"claims"`   // job id -> node
	Scanning []string          `json:"scanning"` // folders this node scans
	Scanners map[string]string `json:"scanners"` // folder -> elected node
}

func (c *cluster) status(ctx context.Context, folders []config.Folder) (*ClusterStatus, error) {
	if c == nil {
		return nil, nil
	}
	nodes, err := c.st.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	claims, err := c.st.Claims(ctx)
	if err != nil {
		return nil, err
	}
	s := &ClusterStatus{Node: c.cfg.Node, Claims: claims, Scanners: map[string]string{}}
	for _, f := range folders {
		if s.Scanners[f.Name], err = c.st.Scanner(ctx, f.Name); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		s.Nodes = append(s.Nodes, n.Name)
	}
	c.mu.Lock()
	for f, on := range c.leading {
		if on {
			s.Scanning = append(s.Scanning, f)
		}
	}
	c.mu.Unlock()
	return s, nil
}

// openStore opens the store [state] names: state.db in state_dir (bbolt),
// or the etcd cluster.
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (jobStore, *cluster, error) {
	if cfg.State.Cluster() {
		st, err := OpenEtcd(ctx, cfg.State)
		if err != nil {
			return nil, nil, err
		}
		return st, newCluster(st, cfg.State, log), nil
	}
	// A CLI reading the stopped daemon's database holds a shared lock for
	// a moment: wait for it rather than refuse to start. Another daemon
	// holding it for good still fails, after this wait.
	dbPath := filepath.Join(cfg.StateDir, "state.db")
	store, err := state.Open(dbPath, state.Options{})
	if errors.Is(err, state.ErrLocked) {
		log.Warn("state database is locked by another process; waiting for it", "err", err, "wait", stateLockWait)
		store, err = state.Open(dbPath, state.Options{Timeout: stateLockWait})
	}
	if err != nil {
		return nil, nil, err
	}
	return store, nil, nil
}

// owns checks with etcd, right before a step that cannot be undone
// (registering a media, filing the file), that this node still holds job
// id's claim. A node paused or cut off past its lease finds its claim gone
// or taken over, and leaves the job and its file to the new holder.
func (c *cluster) owns(ctx context.Context, id uint64) bool {
	if c == nil {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	ok, err := c.st.StillHeld(cctx, id)
	if err != nil {
		c.log.Warn("cannot confirm the claim on the job with etcd; not touching it", "job", id, "err", err)
		return false
	}
	if !ok {
		c.lost(id)
	}
	return ok
}

func (c *cluster) lost(id uint64) {
	c.log.Warn("claim on the job was lost (this node's lease expired: paused or cut off?); another node owns it now, this node commits nothing and leaves the file alone", "job", id)
}

// load is store.Get followed by owns, in one linearizable read when the
// state is in etcd (one round trip instead of two). owned false: the
// claim is gone (logged as owns does), or etcd did not answer.
func (d *Daemon) load(ctx context.Context, id uint64) (j *state.Job, owned bool, err error) {
	c := d.cl
	if c == nil {
		j, err := d.store.Get(ctx, id)
		return j, err == nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	j, owned, err = c.st.GetOwned(cctx, id)
	if err != nil {
		return nil, false, err
	}
	if !owned {
		c.lost(id)
	}
	return j, owned, nil
}

// latestCache holds the newest job of each path of an ingest batch, read
// for the whole batch at once in cluster mode (one etcd round trip per 128
// files instead of one or two per file). Each entry serves only the first
// lookup of its path: a later one in the same batch may follow a change
// the batch itself made, and reads the store again.
type latestCache struct {
	jobs map[etcdstore.Path]*state.Job
	read map[etcdstore.Path]bool
}

// prefetchLatest fills a latestCache for batch; nil (each lookup reads
// the store) when the state is local or etcd did not answer.
func (d *Daemon) prefetchLatest(ctx context.Context, batch []watcher.Event) *latestCache {
	if d.cl == nil || len(batch) < 2 {
		return nil
	}
	lc := &latestCache{read: make(map[etcdstore.Path]bool, len(batch))}
	paths := make([]etcdstore.Path, 0, len(batch))
	for _, ev := range batch {
		p := etcdstore.Path{Folder: ev.Folder, RelPath: ev.RelPath}
		if !lc.read[p] {
			lc.read[p] = true
			paths = append(paths, p)
		}
	}
	jobs, err := d.cl.st.LatestMany(ctx, paths)
	if err != nil {
		d.log.Warn("read the batch's jobs at once; reading them one by one", "err", err)
		return nil
	}
	lc.jobs = jobs
	return lc
}

// latest is store.Latest, answered from lc when it can.
func (d *Daemon) latest(ctx context.Context, lc *latestCache, folder, relpath string) (*state.Job, error) {
	p := etcdstore.Path{Folder: folder, RelPath: relpath}
	if lc != nil && lc.read[p] {
		delete(lc.read, p)
		if j := lc.jobs[p]; j != nil {
			return j, nil
		}
		return nil, fmt.Errorf("latest job for %s/%s: %w", folder, relpath, state.ErrNotFound)
	}
	return d.store.Latest(ctx, folder, relpath)
}

// otherJobs returns the other jobs of j's path (skipDelivered); in cluster
// mode without reading j itself again.
func (d *Daemon) otherJobs(ctx context.Context, j *state.Job) ([]*state.Job, error) {
	if d.cl == nil {
		return d.store.ForPath(ctx, j.Folder, j.RelPath)
	}
	return d.cl.st.ForPathOthers(ctx, j)
}

// ownsFresh is how long the filer trusts a claim check it made for a
// whole batch in one read; a job filed later than that is checked again
// on its own. Far below any lease, so the check still comes right before
// the move.
const ownsFresh = 250 * time.Millisecond

// filingRead is the filer's read of a batch's jobs and of this node's
// claims on them, made at at.
type filingRead struct {
	jobs map[uint64]*state.Job
	held map[uint64]bool
	at   time.Time
}

// loadForFiling reads the filer's jobs and the claims on them, in one
// round trip per transaction's worth (see ownsFresh). It returns nil when
// etcd did not answer: the caller then reads each job on its own.
func (c *cluster) loadForFiling(ctx context.Context, ids []uint64) *filingRead {
	at := time.Now()
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	jobs, held, err := c.st.GetManyOwned(cctx, ids)
	if err != nil {
		c.log.Warn("read the jobs to file; reading them one by one", "jobs", len(ids), "err", err)
		return nil
	}
	return &filingRead{jobs: jobs, held: held, at: at}
}

// fenced reports a write refused because the claim was lost.
func fenced(err error) bool { return errors.Is(err, etcdstore.ErrFenced) }

// etcdCallTimeout bounds the cluster bookkeeping calls (claims, discovery)
// so a node without an etcd quorum logs and waits instead of hanging.
const etcdCallTimeout = 5 * time.Second

// pauseSetting is the cluster-wide pause (the same JSON as paused.json).
const pauseSetting = "pause"

// publishPause stores this node's pause state for every node to apply.
func (c *cluster) publishPause(ctx context.Context, p *pauseState) error {
	if c == nil {
		return nil
	}
	data, err := json.Marshal(p.doc())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	return c.st.SetSetting(cctx, pauseSetting, data)
}

// syncPause applies the cluster-wide pause when it differs from this
// node's, and hands back the jobs a resume releases.
func (c *cluster) syncPause(ctx context.Context, d *Daemon) {
	data, err := c.st.Setting(ctx, pauseSetting)
	if err != nil || data == nil {
		return
	}
	var doc pauseDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		c.log.Warn("cluster pause setting is malformed; ignoring it", "err", err)
		return
	}
	release, changed, err := d.pause.replace(doc)
	if err != nil {
		c.log.Warn("apply the cluster's pause state", "err", err)
		return
	}
	if changed {
		c.log.Info("pause state changed by another node", "paused", d.pause.list(), "released_jobs", len(release))
	}
	for _, id := range release {
		d.sched.push(id)
	}
}

func (p *pauseState) doc() pauseDoc {
	p.mu.Lock()
	defer p.mu.Unlock()
	doc := pauseDoc{All: p.all, Folders: []string{}}
	for f := range p.folders {
		doc.Folders = append(doc.Folders, f)
	}
	slices.Sort(doc.Folders)
	return doc
}

// replace sets the pause state to doc (saved locally too, so a node that
// restarts without etcd keeps it).
func (p *pauseState) replace(doc pauseDoc) (release []uint64, changed bool, err error) {
	cur := p.doc()
	slices.Sort(doc.Folders)
	if cur.All == doc.All && slices.Equal(cur.Folders, doc.Folders) {
		return nil, false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = doc.All
	p.folders = map[string]bool{}
	for _, f := range doc.Folders {
		p.folders[f] = true
	}
	if err := p.saveLocked(); err != nil {
		return nil, true, err
	}
	for id, f := range p.parked {
		if !p.pausedLocked(f) {
			release = append(release, id)
			delete(p.parked, id)
		}
	}
	slices.Sort(release)
	return release, true, nil
}

// CheckCluster is doctor's part for cluster mode: the etcd cluster answers
// (unless offline), and a reminder of what a shared folder changes.
func CheckCluster(ctx context.Context, cfg *config.Config, offline bool) []Problem {
	s := cfg.State
	if !s.Cluster() {
		return nil
	}
	out := []Problem{{ClassSystem, "state", "cluster mode: the writer probe sees only writers on the node that scans a folder; " +
		"files written from other hosts are judged finished by stable_after alone", false}}
	if offline {
		return out
	}
	st, err := OpenEtcd(ctx, s)
	if err != nil {
		return append(out, Problem{ClassSystem, "state", err.Error(), true})
	}
	defer st.Close()
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return append(out, Problem{ClassSystem, "state", err.Error(), true})
	}
	for _, n := range nodes {
		if n.Name == s.Node {
			out = append(out, Problem{ClassSystem, "state", fmt.Sprintf("node name %q is already live in the cluster: "+
				"each node needs its own name (this check also runs while this node's daemon is up)", s.Node), false})
		}
	}
	return out
}

// collectors are the per-node cluster metrics.
func (c *cluster) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "watchfolder_cluster_claims", Help: "Jobs this node holds the claim of (cluster mode).",
		}, func() float64 { return float64(len(c.st.Held())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "watchfolder_cluster_scanning_folders", Help: "Folders this node is the elected scanner of (cluster mode).",
		}, func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			n := 0
			for _, on := range c.leading {
				if on {
					n++
				}
			}
			return float64(n)
		}),
	}
}
