package etcdstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxBatch caps the callers sharing one transaction. etcd's --max-txn-ops
// budget shrinks with each level of nesting (a nested transaction gets
// what the outer one left), so a batch leaves most of it to its callers.
const maxBatch = 32

// batchTimeout bounds a shared transaction: it outlives the caller that
// started it, so it cannot use that caller's context alone.
const batchTimeout = 15 * time.Second

// batcher is a group commit for small write transactions, as the bbolt
// store has for its own writes: while one transaction is in flight, the
// transactions other goroutines ask for wait, and are then sent together,
// each as a nested transaction of one etcd Txn, so each keeps its own
// compares and succeeds or fails on its own. A lone writer is sent at
// once, as it is. Callers whose writes touch the same key go in
// different transactions (etcd refuses a key written twice in one).
type batcher struct {
	kv clientv3.KV

	mu    sync.Mutex
	busy  bool
	queue []*call
}

// call is one caller's transaction.
type call struct {
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
	keys      []string // written by then or els (nested ones too)
	sent      bool     // taken from the queue: its outcome will come
	done      chan struct{}
	resp      *clientv3.TxnResponse
	err       error
}

// txn commits If(cmps).Then(then).Else(els), possibly together with other
// callers' transactions; the answer is the caller's own, with the shared
// transaction's header.
func (b *batcher) txn(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	c := &call{ctx: ctx, cmps: cmps, then: then, els: els, done: make(chan struct{})}
	b.mu.Lock()
	if !b.busy {
		// Nothing in flight: no reason to wait for company.
		b.busy = true
		b.mu.Unlock()
		c.sent = true
		b.send(ctx, []*call{c})
		b.next()
		return c.resp, c.err
	}
	c.keys = writtenKeys(nil, then)
	c.keys = writtenKeys(c.keys, els)
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if !c.sent {
		// Never sent: drop it, nothing of it is committed.
		for i, q := range b.queue {
			if q == c {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		return nil, ctx.Err()
	}
	b.mu.Unlock()
	// On its way: its outcome (a claim taken, a job written) must be known
	// to the caller, so wait for it; the send is bounded by batchTimeout.
	<-c.done
	return c.resp, c.err
}

// next hands what queued up meanwhile to a sender of its own, or ends the
// busy spell.
func (b *batcher) next() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.busy = false
		return
	}
	go b.drain()
}

// drain sends the queue in batches until it is empty.
func (b *batcher) drain() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), batchTimeout)
		b.send(ctx, batch)
		cancel()
	}
}

// take removes from the queue up to maxBatch calls that write no key in
// common, oldest first; the others stay for the next batch. b.mu is held.
func (b *batcher) take() []*call {
	var batch []*call
	written := map[string]bool{}
	rest := b.queue[:0]
	for _, c := range b.queue {
		if len(batch) >= maxBatch || overlaps(written, c.keys) {
			rest = append(rest, c)
			continue
		}
		for _, k := range c.keys {
			written[k] = true
		}
		c.sent = true
		batch = append(batch, c)
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	return batch
}

func overlaps(written map[string]bool, keys []string) bool {
	for _, k := range keys {
		if written[k] {
			return true
		}
	}
	return false
}

// writtenKeys appends the keys ops put or delete, nested transactions
// included.
func writtenKeys(keys []string, ops []clientv3.Op) []string {
	for _, op := range ops {
		switch {
		case op.IsTxn():
			_, then, els := op.Txn()
			keys = writtenKeys(writtenKeys(keys, then), els)
		case op.IsPut(), op.IsDelete():
			keys = append(keys, string(op.KeyBytes()))
		}
	}
	return keys
}

// send commits batch and hands each call its outcome.
func (b *batcher) send(ctx context.Context, batch []*call) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	if len(batch) == 1 {
		c := batch[0]
		c.resp, c.err = b.kv.Txn(ctx).If(c.cmps...).Then(c.then...).Else(c.els...).Commit()
		return
	}
	ops := make([]clientv3.Op, len(batch))
	for i, c := range batch {
		ops[i] = clientv3.OpTxn(c.cmps, c.then, c.els)
	}
	resp, err := b.kv.Txn(ctx).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrDuplicateKey) || errors.Is(err, rpctypes.ErrTooManyOps) {
		// A key written twice that writtenKeys could not see (a range
		// delete), or callers too big to share: one transaction each.
		for _, c := range batch {
			c.resp, c.err = b.kv.Txn(ctx).If(c.cmps...).Then(c.then...).Else(c.els...).Commit()
		}
		return
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
			continue
		}
		sub := resp.Responses[i].GetResponseTxn()
		c.resp = &clientv3.TxnResponse{Header: resp.Header, Succeeded: sub.Succeeded, Responses: sub.Responses}
	}
}
