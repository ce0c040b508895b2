package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/watchfolder/watchfolder/state"
)

// Session returns this node's session (a lease kept alive by the client),
// starting a new one when there is none or the last one expired. Claims
// taken under an expired session stay lost: they are not carried over.
func (s *Store) Session(ctx context.Context) (*concurrency.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess != nil {
		select {
		case <-s.sess.Done():
			s.sess = nil
		default:
			return s.sess, nil
		}
	}
	ttl := max(int(s.ttl/time.Second), 1)
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	s.sess = sess
	// Announce the node for `status`; the key goes with the lease.
	info, _ := json.Marshal(NodeInfo{Name: s.node, Started: time.Now().UTC()})
	if _, err := s.cli.Put(ctx, s.p+"/nodes/"+s.node, string(info), clientv3.WithLease(sess.Lease())); err != nil {
		return nil, fmt.Errorf("announce node %s: %w", s.node, err)
	}
	return sess, nil
}

// NodeInfo is what a node announces under P/nodes/.
type NodeInfo struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
}

// Claim takes job id for this node, bound to the node's lease. It returns
// ErrClaimed (wrapped, naming the holder) when another node holds it. From
// now on every write of this store for the job requires the claim.
func (s *Store) Claim(ctx context.Context, id uint64) error {
	_, err := s.claim(ctx, id, false)
	return err
}

// ClaimGet is Claim and Get in one transaction (one round trip): the job
// as it is once this node holds its claim. A missing job returns
// state.ErrNotFound with the claim taken (Release gives it up).
func (s *Store) ClaimGet(ctx context.Context, id uint64) (*state.Job, error) {
	return s.claim(ctx, id, true)
}

func (s *Store) claim(ctx context.Context, id uint64, read bool) (*state.Job, error) {
	sess, err := s.Session(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim job %d: %w", id, err)
	}
	key := s.claimKey(id)
	then := []clientv3.Op{clientv3.OpPut(key, s.node, clientv3.WithLease(sess.Lease()))}
	els := []clientv3.Op{clientv3.OpGet(key)}
	if read {
		then = append(then, clientv3.OpGet(s.jobKey(id)))
		els = append(els, clientv3.OpGet(s.jobKey(id)))
	}
	// Workers claim at the same time: the claims share transactions.
	resp, err := s.batch.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, then, els)
	if err != nil {
		return nil, fmt.Errorf("claim job %d: %w", id, err)
	}
	c := claim{rev: resp.Header.Revision, lease: sess.Lease()}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, fmt.Errorf("claim job %d: released meanwhile: %w", id, ErrClaimed)
		}
		if clientv3.LeaseID(kvs[0].Lease) != sess.Lease() {
			return nil, fmt.Errorf("claim job %d: held by %s: %w", id, kvs[0].Value, ErrClaimed)
		}
		c.rev = kvs[0].CreateRevision // ours already
	}
	s.mu.Lock()
	s.claims[id] = c
	s.mu.Unlock()
	if !read {
		return nil, nil
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		s.forget(id)
		return nil, fmt.Errorf("get job %d: %w", id, state.ErrNotFound)
	}
	j, err := decode(id, kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	if !j.State.Terminal() {
		s.mu.Lock()
		s.kept[id] = keptJob{data: kvs[0].Value, rev: kvs[0].ModRevision}
		s.mu.Unlock()
	}
	return j, nil
}

// Holds reports whether this node believes it holds job id's claim (it may
// have been lost since: writes find out).
func (s *Store) Holds(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.claims[id]
	return ok
}

// Held lists the ids this node has claimed.
func (s *Store) Held() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, 0, len(s.claims))
	for id := range s.claims {
		out = append(out, id)
	}
	return out
}

// Release gives up job id's claim, if it is still ours.
func (s *Store) Release(ctx context.Context, id uint64) error {
	s.mu.Lock()
	c, ok := s.claims[id]
	delete(s.claims, id)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	key := s.claimKey(id)
	_, err := s.batch.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", c.rev)},
		[]clientv3.Op{clientv3.OpDelete(key)}, nil)
	if err != nil {
		return fmt.Errorf("release job %d: %w", id, err)
	}
	return nil
}

// StillHeld asks etcd (a linearizable read) whether job id's claim is
// still ours: checked right before a side effect that cannot be undone.
func (s *Store) StillHeld(ctx context.Context, id uint64) (bool, error) {
	s.mu.Lock()
	c, ok := s.claims[id]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	resp, err := s.cli.Get(ctx, s.claimKey(id))
	if err != nil {
		return false, fmt.Errorf("check claim on job %d: %w", id, err)
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == c.rev, nil
}

// Claims returns every claim in the cluster: job id -> node.
func (s *Store) Claims(ctx context.Context) (map[uint64]string, error) {
	resp, err := s.cli.Get(ctx, s.p+"/claims/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	out := make(map[uint64]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, ok := idFromKey(kv.Key); ok {
			out[id] = string(kv.Value)
		}
	}
	return out, nil
}

// Nodes returns the nodes whose lease is alive.
func (s *Store) Nodes(ctx context.Context) ([]NodeInfo, error) {
	resp, err := s.cli.Get(ctx, s.p+"/nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	var out []NodeInfo
	for _, kv := range resp.Kvs {
		var n NodeInfo
		if json.Unmarshal(kv.Value, &n) == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// ElectionPrefix is the election key prefix for scanning folder.
func (s *Store) ElectionPrefix(folder string) string { return s.p + "/election/" + folder }

func (s *Store) outboxPrefix() string { return s.p + "/outbox/" + s.node + "/" }

// OutboxAdd stores a notification of this node and returns its id.
func (s *Store) OutboxAdd(ctx context.Context, hook, event string, body []byte) (uint64, error) {
	data, err := json.Marshal(state.OutboxEntry{Hook: hook, Event: event, Body: body, Created: s.now()})
	if err != nil {
		return 0, fmt.Errorf("queue notification: %w", err)
	}
	// The id is the revision of the put: unique and increasing.
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.seqKey(), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return 0, fmt.Errorf("queue notification: %w", err)
	}
	id := uint64(resp.Header.Revision) + 1
	for {
		key := s.outboxPrefix() + hexID(id)
		tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(data))).Commit()
		if err != nil {
			return 0, fmt.Errorf("queue notification: %w", err)
		}
		if tr.Succeeded {
			return id, nil
		}
		id++
	}
}

// OutboxDelete removes a notification; a missing id is not an error.
func (s *Store) OutboxDelete(ctx context.Context, id uint64) error {
	if _, err := s.cli.Delete(ctx, s.outboxPrefix()+hexID(id)); err != nil {
		return fmt.Errorf("remove notification %d: %w", id, err)
	}
	return nil
}

// Outbox returns this node's stored notifications, oldest first.
func (s *Store) Outbox(ctx context.Context) ([]state.OutboxEntry, error) {
	resp, err := s.cli.Get(ctx, s.outboxPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read notification outbox: %w", err)
	}
	var out []state.OutboxEntry
	for _, kv := range resp.Kvs {
		var e state.OutboxEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("outbox entry %s: %v: %w", kv.Key, err, state.ErrCorrupt)
		}
		id, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), s.outboxPrefix()), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("outbox key %s: %w", kv.Key, state.ErrCorrupt)
		}
		e.ID = id
		out = append(out, e)
	}
	return out, nil
}

// Setting returns a cluster-wide setting stored under P/settings/<name>
// (nil when unset).
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.p+"/settings/"+name)
	if err != nil {
		return nil, fmt.Errorf("read setting %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// SetSetting stores a cluster-wide setting.
func (s *Store) SetSetting(ctx context.Context, name string, value []byte) error {
	if _, err := s.cli.Put(ctx, s.p+"/settings/"+name, string(value)); err != nil {
		return fmt.Errorf("write setting %s: %w", name, err)
	}
	return nil
}

// Scanner returns the node elected to scan folder ("" when none is).
func (s *Store) Scanner(ctx context.Context, folder string) (string, error) {
	// The election's leader is the oldest key under its prefix.
	resp, err := s.cli.Get(ctx, s.ElectionPrefix(folder)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("read scanner of %s: %w", folder, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// GetOwned is Get and StillHeld in one linearizable read (one round trip):
// the job, and whether this node still holds its claim. held is false,
// without asking etcd about the claim, when this node never claimed it.
func (s *Store) GetOwned(ctx context.Context, id uint64) (*state.Job, bool, error) {
	jobs, held, err := s.GetManyOwned(ctx, []uint64{id})
	if err != nil {
		return nil, false, fmt.Errorf("get job %d: %w", id, err)
	}
	j, ok := jobs[id]
	if !ok {
		return nil, false, fmt.Errorf("get job %d: %w", id, state.ErrNotFound)
	}
	return j, held[id], nil
}

// GetManyOwned reads jobs ids and the claims this node holds on them in
// one transaction per MaxTxnOps/2 jobs: the jobs found, and which of them
// this node still holds the claim of. Missing jobs are left out.
func (s *Store) GetManyOwned(ctx context.Context, ids []uint64) (map[uint64]*state.Job, map[uint64]bool, error) {
	jobs := make(map[uint64]*state.Job, len(ids))
	held := make(map[uint64]bool, len(ids))
	const per = MaxTxnOps / 2
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		s.mu.Lock()
		revs := make([]int64, len(chunk))
		for i, id := range chunk {
			revs[i] = s.claims[id].rev // 0: not ours
		}
		s.mu.Unlock()
		ops := make([]clientv3.Op, 0, 2*len(chunk))
		for i, id := range chunk {
			ops = append(ops, clientv3.OpGet(s.jobKey(id)))
			if revs[i] != 0 {
				ops = append(ops, clientv3.OpGet(s.claimKey(id), clientv3.WithKeysOnly()))
			}
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, nil, err
		}
		k := 0
		for i, id := range chunk {
			kvs := resp.Responses[k].GetResponseRange().Kvs
			k++
			if revs[i] != 0 {
				ckvs := resp.Responses[k].GetResponseRange().Kvs
				k++
				held[id] = len(ckvs) == 1 && ckvs[0].CreateRevision == revs[i]
			}
			if len(kvs) == 0 {
				s.forget(id)
				continue
			}
			j, err := decode(id, kvs[0].Value)
			if err != nil {
				return nil, nil, err
			}
			if !j.State.Terminal() {
				s.mu.Lock()
				s.kept[id] = keptJob{data: kvs[0].Value, rev: kvs[0].ModRevision}
				s.mu.Unlock()
			}
			jobs[id] = j
		}
	}
	return jobs, held, nil
}
