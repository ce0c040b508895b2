// Package etcdstore keeps watchfolder's jobs in etcd, so several daemons
// can share one folder. It applies the rules of package state (legal
// transitions, history) inside a compare-and-swap retry loop, and adds
// claims: a job a node works on is bound to the node's lease, and every
// write the node makes for that job is conditional on still holding it.
//
// Layout under the prefix P:
//
//	P/seq                         last job id (decimal)
//	P/jobs/<id>                   job JSON
//	P/idx/state/<state>/<id>      folder name (List by state, Counts)
//	P/idx/path/<folder>\x00<rel>\x00<id>  empty (ForPath, Latest)
//	P/active/<folder>\x00<rel>     id of the path's unfinished job
//	P/claims/<id>                 node name, bound to the node's lease
//	P/nodes/<node>                node info, bound to the node's lease
//	P/outbox/<node>/<id>          queued notification of one node
//
// Ids are 16 hex digits so that key order is id order.
package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/watchfolder/watchfolder/state"
)

// MaxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops); batches are cut to fit it.
const MaxTxnOps = 128

// Errors of this backend.
var (
	// ErrFenced: a write for a job this node had claimed was refused
	// because the claim is no longer ours (lease expired, taken over).
	ErrFenced = errors.New("claim on the job was lost (lease expired or taken over by another node); nothing was committed")
	// ErrClaimed: another node holds the job's claim.
	ErrClaimed = errors.New("job is claimed by another node")
	// ErrActive: a create was refused because the path already has an
	// unfinished job (another node created it first, e.g. while the
	// scanner election changed hands).
	ErrActive = errors.New("the file already has an unfinished job")
)

// Options for Open.
type Options struct {
	Prefix   string        // default "/watchfolder"
	Node     string        // this node's name (claims, outbox); default host name
	LeaseTTL time.Duration // claim lease; default 15s
	Now      func() time.Time
}

// Store is a job store in etcd. It is safe for concurrent use.
type Store struct {
	cli   *clientv3.Client
	p     string
	node  string
	ttl   time.Duration
	now   func() time.Time
	owned bool // Close closes cli
	batch *batcher

	mu     sync.Mutex
	sess   *concurrency.Session
	claims map[uint64]claim
	kept   map[uint64]keptJob // see Update
	// alone: jobs whose path had no job at all when they were created
	// (see ForPathOthers), with that path.
	alone   map[uint64]Path
	writeKO uint64
}

type keptJob struct {
	data []byte
	rev  int64
}

type claim struct {
	rev   int64 // CreateRevision of the claim key
	lease clientv3.LeaseID
}

// New wraps a connected client. Close does not close cli.
func New(cli *clientv3.Client, o Options) *Store {
	if o.Prefix == "" {
		o.Prefix = "/watchfolder"
	}
	o.Prefix = strings.TrimRight(o.Prefix, "/")
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	clock := o.Now
	if clock == nil {
		clock = time.Now
	}
	return &Store{cli: cli, p: o.Prefix, node: o.Node, ttl: o.LeaseTTL, batch: &batcher{kv: cli},
		now: func() time.Time { return state.StoredTime(clock()) }, claims: map[uint64]claim{}, kept: map[uint64]keptJob{}, alone: map[uint64]Path{}}
}

// Open connects to etcd with cfg and returns a Store owning the client.
func Open(ctx context.Context, cfg clientv3.Config, o Options) (*Store, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Endpoints, err)
	}
	// clientv3.New does not wait for a connection: ask once so a wrong
	// endpoint or credential fails here, with a clear message.
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, "health-probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Endpoints, err)
	}
	s := New(cli, o)
	s.owned = true
	return s, nil
}

// Client is the etcd client (for elections and status).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix of this store.
func (s *Store) Prefix() string { return s.p }

// Node is this node's name.
func (s *Store) Node() string { return s.node }

// Close ends the session (claims are released with its lease) and, when
// the store opened the client, closes it.
func (s *Store) Close() error {
	s.mu.Lock()
	sess := s.sess
	s.sess = nil
	s.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
	if s.owned {
		return s.cli.Close()
	}
	return nil
}

// WriteFailures counts failed write transactions.
func (s *Store) WriteFailures() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeKO
}

func (s *Store) failed() {
	s.mu.Lock()
	s.writeKO++
	s.mu.Unlock()
}

func hexID(id uint64) string { return fmt.Sprintf("%016x", id) }

func (s *Store) jobKey(id uint64) string { return s.p + "/jobs/" + hexID(id) }
func (s *Store) stateIdx(st state.State, id uint64) string {
	return s.p + "/idx/state/" + string(st) + "/" + hexID(id)
}
func (s *Store) pathPrefix(folder, rel string) string {
	return s.p + "/idx/path/" + folder + "\x00" + rel + "\x00"
}
func (s *Store) pathIdx(folder, rel string, id uint64) string {
	return s.pathPrefix(folder, rel) + hexID(id)
}
func (s *Store) claimKey(id uint64) string { return s.p + "/claims/" + hexID(id) }

// activeKey marks the one unfinished job of folder+rel; creating it with a
// CreateRevision == 0 compare is what keeps two nodes from creating a job
// each for the same file.
func (s *Store) activeKey(folder, rel string) string {
	return s.p + "/active/" + folder + "\x00" + rel
}

// holdActive takes the path's mark for job id unless another job holds it.
// It is a nested transaction so that a job coming back to life (an
// operator's retry of a failed job) is never refused for it.
func (s *Store) holdActive(folder, rel string, id uint64) clientv3.Op {
	k := s.activeKey(folder, rel)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(k, hexID(id))}, nil)
}

// releaseActive drops the path's mark if job id holds it.
func (s *Store) releaseActive(folder, rel string, id uint64) clientv3.Op {
	k := s.activeKey(folder, rel)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", hexID(id))},
		[]clientv3.Op{clientv3.OpDelete(k)}, nil)
}
func (s *Store) seqKey() string { return s.p + "/seq" }

func idFromKey(k []byte) (uint64, bool) {
	if len(k) < 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(string(k[len(k)-16:]), 16, 64)
	return id, err == nil
}

func decode(id uint64, data []byte) (*state.Job, error) {
	j := new(state.Job)
	if err := json.Unmarshal(data, j); err != nil {
		return nil, fmt.Errorf("decode job %d: %v: %w", id, err, state.ErrCorrupt)
	}
	return j, nil
}

// Create is CreateMany for one job.
func (s *Store) Create(ctx context.Context, j *state.Job) error {
	return s.CreateMany(ctx, []*state.Job{j})
}

// maxAlone bounds Store.alone.
const maxAlone = 100000

// opsPerJob: whether the path has jobs already (see ForPathOthers), the
// job, its state index entry, its path index entry, the path's active mark.
const opsPerJob = 5

// CreateMany creates jobs. Each job is created only if its folder+relpath
// has no unfinished job (the active mark, compared in the same transaction
// as the writes): two nodes racing to create a job for the same file make
// exactly one. Ids are taken from the counter in one compare-and-swap; the
// jobs are then written in transactions of at most MaxTxnOps operations.
// Jobs refused for an existing unfinished job keep id 0 and the others are
// committed; the error then wraps ErrActive. Each transaction is atomic;
// when a later one fails, the jobs of the earlier ones are committed (they
// have their ids) and the error says how many.
func (s *Store) CreateMany(ctx context.Context, jobs []*state.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	staged, err := state.PrepareCreate(jobs, s.now())
	if err != nil {
		return err
	}
	first, err := s.reserveIDs(ctx, uint64(len(staged)))
	if err != nil {
		s.failed()
		return fmt.Errorf("create %d job(s): %w", len(jobs), err)
	}
	var refused []string
	// Two jobs of one batch for the same path: the first one wins, as it
	// would against a job created by another node.
	inBatch := make(map[string]bool, len(staged))
	per := MaxTxnOps / opsPerJob
	for start := 0; start < len(staged); start += per {
		end := min(start+per, len(staged))
		var todo []int
		for i := start; i < end; i++ {
			staged[i].ID = first + uint64(i)
			k := s.activeKey(staged[i].Folder, staged[i].RelPath)
			if inBatch[k] {
				refused = append(refused, staged[i].Folder+"/"+staged[i].RelPath)
				continue
			}
			inBatch[k] = true
			todo = append(todo, i)
		}
		for len(todo) > 0 {
			busy, rev, first, err := s.createChunk(ctx, staged, todo)
			if err != nil {
				s.failed()
				return fmt.Errorf("create %d job(s): %d committed before: %w", len(jobs), start, err)
			}
			if len(busy) == 0 {
				for k, i := range todo {
					*jobs[i] = staged[i]
					s.remember(&staged[i], rev)
					if first[k] {
						s.mu.Lock()
						if len(s.alone) >= maxAlone {
							// Jobs another node finished are never forgotten
							// here: start afresh rather than grow (the hint
							// only saves reads).
							clear(s.alone)
						}
						s.alone[staged[i].ID] = Path{staged[i].Folder, staged[i].RelPath}
						s.mu.Unlock()
					}
				}
				break
			}
			// Drop the paths another job holds and try the rest again.
			keep := todo[:0]
			for _, i := range todo {
				if busy[s.activeKey(staged[i].Folder, staged[i].RelPath)] {
					refused = append(refused, staged[i].Folder+"/"+staged[i].RelPath)
					continue
				}
				keep = append(keep, i)
			}
			todo = keep
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("create %d job(s): %d refused (%s): %w",
			len(jobs), len(refused), strings.Join(refused[:min(len(refused), 5)], ", "), ErrActive)
	}
	return nil
}

// createChunk writes staged[todo] in one transaction, on condition that no
// path among them has an active mark. When some have, nothing is written
// and busy holds their marks' keys. first[k] reports that todo[k]'s path
// had no job at all.
func (s *Store) createChunk(ctx context.Context, staged []state.Job, todo []int) (busy map[string]bool, rev int64, first []bool, err error) {
	ops := make([]clientv3.Op, 0, len(todo)*opsPerJob)
	// First, before any write of the transaction: does each path have a
	// job (its path index prefix holds a key)? An empty nested transaction
	// answers without writing.
	for _, i := range todo {
		j := &staged[i]
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(s.pathPrefix(j.Folder, j.RelPath)), "=", 0).WithPrefix()}, nil, nil))
	}
	conds := make([]clientv3.Cmp, 0, len(todo))
	reads := make([]clientv3.Op, 0, len(todo))
	for _, i := range todo {
		j := &staged[i]
		data, err := json.Marshal(j)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("encode job %d: %w", j.ID, err)
		}
		ak := s.activeKey(j.Folder, j.RelPath)
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(ak), "=", 0))
		reads = append(reads, clientv3.OpGet(ak, clientv3.WithKeysOnly()))
		ops = append(ops,
			clientv3.OpPut(s.jobKey(j.ID), string(data)),
			clientv3.OpPut(s.stateIdx(j.State, j.ID), j.Folder),
			clientv3.OpPut(s.pathIdx(j.Folder, j.RelPath, j.ID), ""),
			clientv3.OpPut(ak, hexID(j.ID)))
	}
	resp, err := s.cli.Txn(ctx).If(conds...).Then(ops...).Else(reads...).Commit()
	if err != nil {
		return nil, 0, nil, err
	}
	if resp.Succeeded {
		first = make([]bool, len(todo))
		for k := range todo {
			first[k] = resp.Responses[k].GetResponseTxn().Succeeded
		}
		return nil, resp.Header.Revision, first, nil
	}
	busy = map[string]bool{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			busy[string(kv.Key)] = true
		}
	}
	if len(busy) == 0 {
		// The marks were released between the compare and the read: the
		// next attempt will tell.
		return nil, 0, nil, fmt.Errorf("active marks changed during the create; try again")
	}
	return busy, 0, nil, nil
}

// reserveIDs advances the counter by n and returns the first id.
func (s *Store) reserveIDs(ctx context.Context, n uint64) (uint64, error) {
	for {
		resp, err := s.cli.Get(ctx, s.seqKey())
		if err != nil {
			return 0, fmt.Errorf("read id counter: %w", err)
		}
		var last uint64
		var rev int64
		if len(resp.Kvs) == 1 {
			rev = resp.Kvs[0].ModRevision
			if last, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return 0, fmt.Errorf("id counter %q: %w", resp.Kvs[0].Value, state.ErrCorrupt)
			}
		}
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.seqKey()), "=", rev)).
			Then(clientv3.OpPut(s.seqKey(), strconv.FormatUint(last+n, 10))).Commit()
		if err != nil {
			return 0, fmt.Errorf("advance id counter: %w", err)
		}
		if tr.Succeeded {
			return last + 1, nil
		}
	}
}

// Get returns the job with id, or state.ErrNotFound.
func (s *Store) Get(ctx context.Context, id uint64) (*state.Job, error) {
	j, _, err := s.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	return j, nil
}

func (s *Store) get(ctx context.Context, id uint64) (*state.Job, int64, error) {
	resp, err := s.cli.Get(ctx, s.jobKey(id))
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		s.forget(id)
		return nil, 0, state.ErrNotFound
	}
	kv := resp.Kvs[0]
	j, err := decode(id, kv.Value)
	if err == nil && !j.State.Terminal() {
		s.mu.Lock()
		s.kept[id] = keptJob{data: kv.Value, rev: kv.ModRevision}
		s.mu.Unlock()
	}
	return j, kv.ModRevision, err
}

// Update loads job id, calls fn, checks the transition and commits with a
// compare-and-swap on the job's revision, retrying from the load when
// another writer came first (fn may then run more than once). When this
// node holds the job's claim the commit is also conditional on the claim:
// a lost claim returns ErrFenced and writes nothing.
//
// The last version this node read or wrote of each unfinished job is kept,
// so an update usually costs one round trip: the transaction is tried on
// that version, and when another writer came first its answer carries the
// current one. fn's verdict on a kept version is never trusted: an error
// from fn or a refused transition is checked again on a fresh read.
func (s *Store) Update(ctx context.Context, id uint64, fn func(*state.Job) error) (*state.Job, error) {
	data, rev, have := s.recall(id)
	fresh := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("update job %d: %w", id, err)
		}
		if !have {
			resp, err := s.cli.Get(ctx, s.jobKey(id))
			if err != nil {
				return nil, fmt.Errorf("update job %d: %w", id, err)
			}
			if len(resp.Kvs) == 0 {
				s.forget(id)
				return nil, fmt.Errorf("update job %d: %w", id, state.ErrNotFound)
			}
			data, rev, have, fresh = resp.Kvs[0].Value, resp.Kvs[0].ModRevision, true, true
		}
		j, err := decode(id, data)
		if err != nil {
			return nil, fmt.Errorf("update job %d: %w", id, err)
		}
		ops, conds, unclaim, fnErr, err := s.stage(j, rev, s.now(), fn)
		if (fnErr != nil || err != nil) && !fresh {
			have = false // judge again on the current version
			continue
		}
		if fnErr != nil {
			return nil, fnErr
		}
		if err != nil {
			return nil, fmt.Errorf("update job %d: %w", id, err)
		}
		ok, fenced, resp, err := s.commitReading(ctx, conds, ops, []uint64{id}, s.jobKey(id))
		if err != nil {
			return nil, fmt.Errorf("update job %d: %w", id, err)
		}
		if fenced {
			return nil, fmt.Errorf("update job %d: %w", id, ErrFenced)
		}
		if ok {
			s.remember(j, resp.Header.Revision)
			if unclaim {
				s.dropClaim(id)
			}
			return j, nil
		}
		// Another writer came first: its version came back with the answer.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			have = false // deleted: the next read says so
			continue
		}
		data, rev, have, fresh = kvs[0].Value, kvs[0].ModRevision, true, true
	}
}

// recall returns the kept version of job id.
func (s *Store) recall(id uint64) ([]byte, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kept[id]
	return v.data, v.rev, ok
}

// remember keeps j as committed at rev; finished jobs are dropped, so
// the map holds only jobs in progress.
func (s *Store) remember(j *state.Job, rev int64) {
	if j.State.Terminal() {
		s.forget(j.ID)
		return
	}
	data, err := json.Marshal(j)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.kept[j.ID] = keptJob{data: data, rev: rev}
	s.mu.Unlock()
}

func (s *Store) forget(id uint64) {
	s.mu.Lock()
	delete(s.kept, id)
	delete(s.alone, id)
	s.mu.Unlock()
}

// stage applies fn to j (read at rev) and returns the writes and the
// conditions they need.
func (s *Store) stage(j *state.Job, rev int64, now time.Time, fn func(*state.Job) error) (ops []clientv3.Op, conds []clientv3.Cmp, unclaim bool, fnErr, err error) {
	oldFolder, oldRel := j.Folder, j.RelPath
	oldState, fnErr, err := state.ApplyUpdate(j, now, fn)
	if fnErr != nil || err != nil {
		return nil, nil, false, fnErr, err
	}
	data, err := json.Marshal(j)
	if err != nil {
		return nil, nil, false, nil, fmt.Errorf("encode job %d: %w", j.ID, err)
	}
	ops = []clientv3.Op{clientv3.OpPut(s.jobKey(j.ID), string(data))}
	if oldState != j.State || oldFolder != j.Folder {
		ops = append(ops, clientv3.OpDelete(s.stateIdx(oldState, j.ID)),
			clientv3.OpPut(s.stateIdx(j.State, j.ID), j.Folder))
	}
	if oldFolder != j.Folder || oldRel != j.RelPath {
		ops = append(ops, clientv3.OpDelete(s.pathIdx(oldFolder, oldRel, j.ID)),
			clientv3.OpPut(s.pathIdx(j.Folder, j.RelPath, j.ID), ""))
	}
	// The active mark follows the job: released in the transaction that
	// finishes it (so a new version of the file may get a job), taken again
	// by a retried job, moved with a rename.
	moved := oldFolder != j.Folder || oldRel != j.RelPath
	if !oldState.Terminal() && (j.State.Terminal() || moved) {
		ops = append(ops, s.releaseActive(oldFolder, oldRel, j.ID))
	}
	if !j.State.Terminal() && (oldState.Terminal() || moved) {
		ops = append(ops, s.holdActive(j.Folder, j.RelPath, j.ID))
	}
	if unclaim = !oldState.Terminal() && j.State.Terminal() && s.Holds(j.ID); unclaim {
		// A finished job needs no claim: give it up in the same transaction
		// (the commit is conditional on it still being ours), which saves
		// the node a round trip per job; the caller forgets it once committed.
		ops = append(ops, clientv3.OpDelete(s.claimKey(j.ID)))
	}
	conds = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.jobKey(j.ID)), "=", rev)}
	return ops, conds, unclaim, nil, nil
}

// commitResp runs one transaction with the claim conditions of ids this
// node holds added, and returns the answer (its header's revision is the
// commit's). ok false: a job changed meanwhile (retry). fenced: a claim of
// ours is gone.
func (s *Store) commitResp(ctx context.Context, conds []clientv3.Cmp, ops []clientv3.Op, ids []uint64) (resp *clientv3.TxnResponse, ok, fenced bool, err error) {
	ok, fenced, resp, err = s.commitReading(ctx, conds, ops, ids, "")
	return resp, ok, fenced, err
}

// commitReading is commitResp that, when reread is set, reads that key in the
// same transaction when the conditions fail (Responses[0]).
func (s *Store) commitReading(ctx context.Context, conds []clientv3.Cmp, ops []clientv3.Op, ids []uint64, reread string) (ok, fenced bool, resp *clientv3.TxnResponse, err error) {
	var claimConds []clientv3.Cmp
	s.mu.Lock()
	for _, id := range ids {
		if c, held := s.claims[id]; held {
			claimConds = append(claimConds, clientv3.Compare(clientv3.CreateRevision(s.claimKey(id)), "=", c.rev))
		}
	}
	s.mu.Unlock()
	all := append(conds, claimConds...)
	var elseOps []clientv3.Op
	if reread != "" {
		elseOps = append(elseOps, clientv3.OpGet(reread))
	}
	if len(claimConds) > 0 {
		// Tell a lost claim from a concurrent write without a second read.
		elseOps = append(elseOps, clientv3.OpTxn(claimConds, nil, nil))
	}
	if len(ids) == 1 {
		// One job's write (Update): shared with other workers' (group commit).
		resp, err = s.batch.txn(ctx, all, ops, elseOps)
	} else {
		resp, err = s.cli.Txn(ctx).If(all...).Then(ops...).Else(elseOps...).Commit()
	}
	if err != nil {
		s.failed()
		return false, false, nil, err
	}
	if resp.Succeeded {
		return true, false, resp, nil
	}
	if len(claimConds) > 0 && !resp.Responses[len(elseOps)-1].GetResponseTxn().Succeeded {
		return false, true, resp, nil
	}
	return false, false, resp, nil
}

// UpdateMany applies fn to each job. Jobs are committed in transactions of
// up to MaxTxnOps operations, each a compare-and-swap over all its jobs;
// as with CreateMany, an error after the first transaction leaves the
// earlier ones committed.
func (s *Store) UpdateMany(ctx context.Context, ids []uint64, fn func(*state.Job) error) ([]*state.Job, error) {
	out := make([]*state.Job, 0, len(ids))
	const per = MaxTxnOps / 8 // a job takes up to 8 ops (job, indexes, marks, claim)
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		done, err := s.updateChunk(ctx, chunk, fn)
		if err != nil {
			return nil, fmt.Errorf("update %d job(s): %w", len(ids), err)
		}
		out = append(out, done...)
	}
	return out, nil
}

func (s *Store) updateChunk(ctx context.Context, ids []uint64, fn func(*state.Job) error) ([]*state.Job, error) {
	// The first attempt stages the kept versions (see Update) and reads
	// only the others, all in one read; the compare on each job's revision
	// refuses a kept version that is stale, and fn's verdict on a kept
	// version is never trusted. Every later attempt reads all of them.
	fresh := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		vers, err := s.versions(ctx, ids, !fresh)
		if err != nil {
			return nil, err
		}
		var ops []clientv3.Op
		var conds []clientv3.Cmp
		out := make([]*state.Job, len(ids))
		var unclaimed []uint64
		seen := map[uint64]int{}
		now := s.now()
		retry := false
		for i, id := range ids {
			if k, ok := seen[id]; ok {
				// The same id again sees its first change: apply fn once more
				// on the staged copy and replace its writes.
				out[i] = out[k]
				continue
			}
			v := vers[id]
			if v.data == nil {
				s.forget(id)
				return nil, fmt.Errorf("job %d: %w", id, state.ErrNotFound)
			}
			j, err := decode(id, v.data)
			if err != nil {
				return nil, fmt.Errorf("job %d: %w", id, err)
			}
			o, c, unclaim, fnErr, err := s.stage(j, v.rev, now, fn)
			if (fnErr != nil || err != nil) && v.kept {
				retry = true // judge again on the current version
				break
			}
			if fnErr != nil {
				return nil, fmt.Errorf("job %d: %w", id, fnErr)
			}
			if err != nil {
				return nil, err
			}
			seen[id] = i
			out[i] = j
			if unclaim {
				unclaimed = append(unclaimed, id)
			}
			ops, conds = append(ops, o...), append(conds, c...)
		}
		if retry {
			fresh = true
			continue
		}
		resp, ok, fenced, err := s.commitResp(ctx, conds, ops, ids)
		if err != nil {
			return nil, err
		}
		if fenced {
			return nil, ErrFenced
		}
		if ok {
			for _, j := range out {
				s.remember(j, resp.Header.Revision)
			}
			for _, id := range unclaimed {
				s.dropClaim(id)
			}
			return out, nil
		}
		fresh = true
	}
}

// version is one job's stored JSON at its mod revision; kept: from this
// node's memory rather than read now. data is nil for a missing job.
type version struct {
	data []byte
	rev  int64
	kept bool
}

// versions returns the versions of ids: the kept ones when useKept, the
// others read in one transaction (a consistent view).
func (s *Store) versions(ctx context.Context, ids []uint64, useKept bool) (map[uint64]version, error) {
	out := make(map[uint64]version, len(ids))
	var missing []uint64
	for _, id := range ids {
		if _, ok := out[id]; ok {
			continue
		}
		if useKept {
			if data, rev, ok := s.recall(id); ok {
				out[id] = version{data: data, rev: rev, kept: true}
				continue
			}
		}
		out[id] = version{}
		missing = append(missing, id)
	}
	err := s.readJobs(ctx, missing, func(id uint64, kv *mvccpb.KeyValue) error {
		out[id] = version{data: kv.Value, rev: kv.ModRevision}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readJobs reads the jobs of ids, MaxTxnOps to a read transaction, and
// calls found for each one that exists, in the order of ids.
func (s *Store) readJobs(ctx context.Context, ids []uint64, found func(id uint64, kv *mvccpb.KeyValue) error) error {
	for start := 0; start < len(ids); start += MaxTxnOps {
		chunk := ids[start:min(start+MaxTxnOps, len(ids))]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(s.jobKey(id))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return err
		}
		for i, r := range resp.Responses {
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				if err := found(chunk[i], kvs[0]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// dropClaim forgets the claim of a job whose terminal transition, just
// committed, deleted it (see stage).
func (s *Store) dropClaim(id uint64) {
	s.mu.Lock()
	delete(s.claims, id)
	s.mu.Unlock()
}

// ForPath returns every job of folder+relpath, newest first.
func (s *Store) ForPath(ctx context.Context, folder, relpath string) ([]*state.Job, error) {
	ids, err := s.pathIDs(ctx, folder, relpath)
	if err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", folder, relpath, err)
	}
	jobs, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", folder, relpath, err)
	}
	return jobs, nil
}

// ForPathOthers is ForPath without j: the other jobs of j's path. It reads
// nothing when this node created j for a path that had no job then, and j
// has since never finished nor moved: j has held the path's active mark
// all along, so no other job can have been created for the path (a new
// file in a burst: no round trip at all). Otherwise it costs one range
// read, and one more when there are other jobs.
func (s *Store) ForPathOthers(ctx context.Context, j *state.Job) ([]*state.Job, error) {
	s.mu.Lock()
	p, ok := s.alone[j.ID]
	s.mu.Unlock()
	if ok && p == (Path{j.Folder, j.RelPath}) && j.HistoryDropped == 0 && !j.State.Terminal() &&
		!slices.ContainsFunc(j.History, func(t state.Transition) bool { return t.To.Terminal() }) {
		return nil, nil
	}
	ids, err := s.pathIDs(ctx, j.Folder, j.RelPath)
	if err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", j.Folder, j.RelPath, err)
	}
	ids = slices.DeleteFunc(ids, func(id uint64) bool { return id == j.ID })
	jobs, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("jobs for %s/%s: %w", j.Folder, j.RelPath, err)
	}
	return jobs, nil
}

func (s *Store) pathIDs(ctx context.Context, folder, relpath string) ([]uint64, error) {
	resp, err := s.cli.Get(ctx, s.pathPrefix(folder, relpath), clientv3.WithPrefix(),
		clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, kv := range resp.Kvs {
		if id, ok := idFromKey(kv.Key); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// getMany reads jobs, MaxTxnOps to a transaction, skipping ids whose job
// is missing.
func (s *Store) getMany(ctx context.Context, ids []uint64) ([]*state.Job, error) {
	var out []*state.Job
	err := s.readJobs(ctx, ids, func(id uint64, kv *mvccpb.KeyValue) error {
		j, err := decode(id, kv.Value)
		if err == nil {
			out = append(out, j)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Path names a file: folder and relative path.
type Path struct{ Folder, RelPath string }

// LatestMany is Latest for many paths: their path index entries in one
// transaction per MaxTxnOps paths, then the jobs found in one more. Paths
// without a job are left out of the map.
func (s *Store) LatestMany(ctx context.Context, paths []Path) (map[Path]*state.Job, error) {
	byPath := make(map[Path][]uint64, len(paths))
	var all []uint64
	for start := 0; start < len(paths); start += MaxTxnOps {
		chunk := paths[start:min(start+MaxTxnOps, len(paths))]
		reads := make([]clientv3.Op, len(chunk))
		for i, p := range chunk {
			reads[i] = clientv3.OpGet(s.pathPrefix(p.Folder, p.RelPath), clientv3.WithPrefix(),
				clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		}
		resp, err := s.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return nil, fmt.Errorf("latest jobs of %d path(s): %w", len(paths), err)
		}
		for i, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				if id, ok := idFromKey(kv.Key); ok {
					byPath[chunk[i]] = append(byPath[chunk[i]], id)
					all = append(all, id)
				}
			}
		}
	}
	jobs, err := s.getMany(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("latest jobs of %d path(s): %w", len(paths), err)
	}
	byID := make(map[uint64]*state.Job, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	out := make(map[Path]*state.Job, len(byPath))
	for p, ids := range byPath {
		for _, id := range ids { // newest first
			j := byID[id]
			if j == nil {
				continue
			}
			if out[p] == nil {
				out[p] = j
			}
			if !j.State.Terminal() {
				out[p] = j
				break
			}
		}
	}
	return out, nil
}

// Latest returns the newest unfinished job of folder+relpath, else the
// newest; state.ErrNotFound when there is none.
func (s *Store) Latest(ctx context.Context, folder, relpath string) (*state.Job, error) {
	jobs, err := s.ForPath(ctx, folder, relpath)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if !j.State.Terminal() {
			return j, nil
		}
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("latest job for %s/%s: %w", folder, relpath, state.ErrNotFound)
	}
	return jobs[0], nil
}

// stateIDs returns the ids in state st, with their folder, descending.
func (s *Store) stateIDs(ctx context.Context, st state.State) ([]uint64, []string, error) {
	resp, err := s.cli.Get(ctx, s.p+"/idx/state/"+string(st)+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, nil, err
	}
	ids := make([]uint64, 0, len(resp.Kvs))
	folders := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, ok := idFromKey(kv.Key); ok {
			ids = append(ids, id)
			folders = append(folders, string(kv.Value))
		}
	}
	return ids, folders, nil
}

// Entry is a job as the state index knows it: no job is read.
type Entry struct {
	ID     uint64
	Folder string
	State  state.State
}

// Indexed returns the jobs in states from the state index alone, one range
// read per state: what a node polling for work needs, without reading
// every job.
func (s *Store) Indexed(ctx context.Context, states ...state.State) ([]Entry, error) {
	var out []Entry
	for _, st := range states {
		ids, folders, err := s.stateIDs(ctx, st)
		if err != nil {
			return nil, fmt.Errorf("list %s jobs: %w", st, err)
		}
		for i, id := range ids {
			out = append(out, Entry{ID: id, Folder: folders[i], State: st})
		}
	}
	return out, nil
}

// GetMany reads jobs ids in one transaction per MaxTxnOps (a consistent
// view within each), leaving out those that are missing.
func (s *Store) GetMany(ctx context.Context, ids []uint64) ([]*state.Job, error) {
	jobs, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("get %d job(s): %w", len(ids), err)
	}
	return jobs, nil
}

// List returns jobs matching f, newest first.
func (s *Store) List(ctx context.Context, f state.Filter) ([]*state.Job, error) {
	states := f.States
	for _, st := range states {
		if !st.Known() {
			return nil, fmt.Errorf("list jobs: unknown state %q", st)
		}
	}
	if len(states) == 0 {
		states = state.AllStates()
	}
	var ids []uint64
	seen := map[uint64]bool{}
	for _, st := range states {
		got, folders, err := s.stateIDs(ctx, st)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		for i, id := range got {
			if seen[id] || (f.Folder != "" && folders[i] != f.Folder) || (f.AfterID != 0 && id >= f.AfterID) {
				continue
			}
			seen[id] = true
			ids = append(ids, id)
		}
	}
	sortDesc(ids)
	var out []*state.Job
	for start := 0; start < len(ids); start += MaxTxnOps {
		jobs, err := s.getMany(ctx, ids[start:min(start+MaxTxnOps, len(ids))])
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		for _, j := range jobs {
			if !f.Since.IsZero() && j.Updated.Before(f.Since) {
				continue
			}
			out = append(out, j)
			if f.Limit > 0 && len(out) >= f.Limit {
				return out, nil
			}
		}
	}
	return out, nil
}

func sortDesc(ids []uint64) {
	// slices.Sort then reverse would allocate nothing either; this keeps
	// the intent in one place.
	for i := 1; i < len(ids); i++ {
		for k := i; k > 0 && ids[k] > ids[k-1]; k-- {
			ids[k], ids[k-1] = ids[k-1], ids[k]
		}
	}
}

// Unfinished returns every job not in a terminal state, oldest first.
func (s *Store) Unfinished(ctx context.Context) ([]*state.Job, error) {
	var states []state.State
	for _, st := range state.AllStates() {
		if !st.Terminal() {
			states = append(states, st)
		}
	}
	jobs, err := s.List(ctx, state.Filter{States: states})
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	for i, k := 0, len(jobs)-1; i < k; i, k = i+1, k-1 {
		jobs[i], jobs[k] = jobs[k], jobs[i]
	}
	return jobs, nil
}

// Counts returns the number of jobs per folder and state, from the state
// index (keys and folder names only, no job is read).
func (s *Store) Counts(ctx context.Context) (map[string]map[state.State]int, error) {
	pre := s.p + "/idx/state/"
	resp, err := s.cli.Get(ctx, pre, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	out := map[string]map[state.State]int{}
	for _, kv := range resp.Kvs {
		st, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), pre), "/")
		if !ok {
			continue
		}
		folder := string(kv.Value)
		if out[folder] == nil {
			out[folder] = map[state.State]int{}
		}
		out[folder][state.State(st)]++
	}
	return out, nil
}

// Delete removes a job and its index entries.
func (s *Store) Delete(ctx context.Context, id uint64) error {
	for {
		j, rev, err := s.get(ctx, id)
		if err != nil {
			return fmt.Errorf("delete job %d: %w", id, err)
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.jobKey(id)), "=", rev)).
			Then(clientv3.OpDelete(s.jobKey(id)), clientv3.OpDelete(s.stateIdx(j.State, id)),
				clientv3.OpDelete(s.pathIdx(j.Folder, j.RelPath, id)),
				s.releaseActive(j.Folder, j.RelPath, id)).Commit()
		if err != nil {
			s.failed()
			return fmt.Errorf("delete job %d: %w", id, err)
		}
		if resp.Succeeded {
			s.forget(id)
			return nil
		}
	}
}

// Prune deletes jobs in states (default done, failed, gone) last updated
// before olderThan.
func (s *Store) Prune(ctx context.Context, olderThan time.Time, states []state.State) (int, error) {
	if len(states) == 0 {
		states = []state.State{state.Done, state.Failed, state.Gone}
	}
	for _, st := range states {
		if !st.Terminal() {
			return 0, fmt.Errorf("prune: %s is not a finished state", st)
		}
	}
	jobs, err := s.List(ctx, state.Filter{States: states})
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	n := 0
	for _, j := range jobs {
		if !j.Updated.Before(olderThan) {
			continue
		}
		if err := s.Delete(ctx, j.ID); err != nil && !errors.Is(err, state.ErrNotFound) {
			return n, fmt.Errorf("prune: %w", err)
		}
		n++
	}
	return n, nil
}

// Backup is not offered by this backend: etcd has its own snapshots.
func (s *Store) Backup(ctx context.Context, w io.Writer, sized func(int64)) (int64, error) {
	return 0, errors.New("backup: the state is in etcd; use `etcdctl snapshot save` (or `watchfolder migrate` to copy it into a bbolt file)")
}

// Import writes jobs as they are, keeping their ids (`watchfolder
// migrate`), in transactions of at most MaxTxnOps operations. The prefix
// must hold no job yet; the id counter continues after the highest id.
func (s *Store) Import(ctx context.Context, jobs []*state.Job) error {
	resp, err := s.cli.Get(ctx, s.p+"/jobs/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("import jobs: %w", err)
	}
	if resp.Count > 0 {
		return fmt.Errorf("import jobs: %s already holds %d job(s); import only into an empty prefix", s.p, resp.Count)
	}
	var top uint64
	var ops []clientv3.Op
	active := map[string]uint64{}
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for _, j := range jobs {
		if j.ID == 0 {
			return fmt.Errorf("import jobs: job %s/%s has no id", j.Folder, j.RelPath)
		}
		data, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("encode job %d: %w", j.ID, err)
		}
		if len(ops)+opsPerJob > MaxTxnOps {
			if err := flush(); err != nil {
				return fmt.Errorf("import jobs: %w", err)
			}
		}
		ops = append(ops, clientv3.OpPut(s.jobKey(j.ID), string(data)),
			clientv3.OpPut(s.stateIdx(j.State, j.ID), j.Folder),
			clientv3.OpPut(s.pathIdx(j.Folder, j.RelPath, j.ID), ""))
		if !j.State.Terminal() {
			// Marks are set after the jobs (one per path: the newest).
			active[s.activeKey(j.Folder, j.RelPath)] = max(active[s.activeKey(j.Folder, j.RelPath)], j.ID)
		}
		top = max(top, j.ID)
	}
	for k, id := range active {
		if len(ops) >= MaxTxnOps {
			if err := flush(); err != nil {
				return fmt.Errorf("import jobs: %w", err)
			}
		}
		ops = append(ops, clientv3.OpPut(k, hexID(id)))
	}
	if err := flush(); err != nil {
		return fmt.Errorf("import jobs: %w", err)
	}
	if top > 0 {
		last, err := s.reserveIDs(ctx, 0)
		if err != nil {
			return fmt.Errorf("import jobs: %w", err)
		}
		if last-1 < top {
			if _, err := s.reserveIDs(ctx, top-(last-1)); err != nil {
				return fmt.Errorf("import jobs: %w", err)
			}
		}
	}
	return nil
}
