package etcdstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/storetest"
)

// gatedKV counts transactions and holds the first one until gate is
// closed, so that the calls made meanwhile queue up behind it.
type gatedKV struct {
	clientv3.KV
	mu      sync.Mutex
	txns    int
	gate    chan struct{}
	started chan struct{}
}

func newGated(kv clientv3.KV) *gatedKV {
	return &gatedKV{KV: kv, gate: make(chan struct{}), started: make(chan struct{})}
}

func (g *gatedKV) Txn(ctx context.Context) clientv3.Txn { return &gatedTxn{Txn: g.KV.Txn(ctx), g: g} }

func (g *gatedKV) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.txns
}

type gatedTxn struct {
	clientv3.Txn
	g *gatedKV
}

func (t *gatedTxn) If(c ...clientv3.Cmp) clientv3.Txn  { t.Txn = t.Txn.If(c...); return t }
func (t *gatedTxn) Then(o ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(o...); return t }
func (t *gatedTxn) Else(o ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(o...); return t }
func (t *gatedTxn) Commit() (*clientv3.TxnResponse, error) {
	t.g.mu.Lock()
	t.g.txns++
	first := t.g.txns == 1
	t.g.mu.Unlock()
	if first {
		close(t.g.started)
		<-t.g.gate
	}
	return t.Txn.Commit()
}

// queued waits until n calls wait in b's queue.
func queued(t *testing.T, b *batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := len(b.queue)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type outcome struct {
	resp *clientv3.TxnResponse
	err  error
}

// start runs b.txn in a goroutine; its outcome comes on the channel.
func start(ctx context.Context, b *batcher, cmps []clientv3.Cmp, then, els []clientv3.Op) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		resp, err := b.txn(ctx, cmps, then, els)
		ch <- outcome{resp, err}
	}()
	return ch
}

func TestBatcher(t *testing.T) {
	e := etcdenv.Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx := context.Background()
	value := func(t *testing.T, k string) string {
		t.Helper()
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	absent := func(k string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(k), "=", 0) }
	present := func(k string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(k), ">", 0) }

	t.Run("LoneWriterAtOnce", func(t *testing.T) {
		g := &gatedKV{KV: cli, gate: make(chan struct{}), started: make(chan struct{})}
		close(g.gate)
		b := &batcher{kv: g}
		began := time.Now()
		resp, err := b.txn(ctx, []clientv3.Cmp{absent("/lone/a")}, []clientv3.Op{clientv3.OpPut("/lone/a", "1")}, nil)
		if err != nil || !resp.Succeeded {
			t.Fatalf("lone txn: %+v, %v", resp, err)
		}
		if g.count() != 1 || value(t, "/lone/a") != "1" {
			t.Errorf("lone txn: %d transactions, value %q", g.count(), value(t, "/lone/a"))
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("lone txn took %v", d)
		}
		b.mu.Lock()
		busy := b.busy
		b.mu.Unlock()
		if busy {
			t.Error("batcher still busy after a lone txn")
		}
	})

	t.Run("CallersIndependent", func(t *testing.T) {
		g := newGated(cli)
		b := &batcher{kv: g}
		first := start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/ind/0", "0")}, nil)
		<-g.started
		ok1 := start(ctx, b, []clientv3.Cmp{absent("/ind/1")}, []clientv3.Op{clientv3.OpPut("/ind/1", "1")}, nil)
		queued(t, b, 1)
		refused := start(ctx, b, []clientv3.Cmp{present("/ind/nothing")},
			[]clientv3.Op{clientv3.OpPut("/ind/2", "2")}, []clientv3.Op{clientv3.OpGet("/ind/0")})
		queued(t, b, 2)
		ok3 := start(ctx, b, []clientv3.Cmp{absent("/ind/3")}, []clientv3.Op{clientv3.OpPut("/ind/3", "3")}, nil)
		queued(t, b, 3)
		close(g.gate)
		if o := <-first; o.err != nil || !o.resp.Succeeded {
			t.Fatalf("first: %+v, %v", o.resp, o.err)
		}
		a, r, c := <-ok1, <-refused, <-ok3
		if a.err != nil || !a.resp.Succeeded || c.err != nil || !c.resp.Succeeded {
			t.Fatalf("callers whose compare holds: %+v %v, %+v %v", a.resp, a.err, c.resp, c.err)
		}
		if r.err != nil || r.resp.Succeeded {
			t.Fatalf("caller whose compare fails: %+v, %v", r.resp, r.err)
		}
		if kvs := r.resp.Responses[0].GetResponseRange().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "0" {
			t.Errorf("refused caller's else read: %v", kvs)
		}
		if value(t, "/ind/1") != "1" || value(t, "/ind/2") != "" || value(t, "/ind/3") != "3" {
			t.Errorf("values: %q %q %q", value(t, "/ind/1"), value(t, "/ind/2"), value(t, "/ind/3"))
		}
		if g.count() != 2 {
			t.Errorf("%d transactions, want 2 (the lone one, then the three queued together)", g.count())
		}
		if a.resp.Header.Revision != c.resp.Header.Revision {
			t.Errorf("queued callers committed at revisions %d and %d, want one transaction", a.resp.Header.Revision, c.resp.Header.Revision)
		}
	})

	t.Run("DuplicateKeys", func(t *testing.T) {
		g := newGated(cli)
		b := &batcher{kv: g}
		first := start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/dup/0", "0")}, nil)
		<-g.started
		// The same key twice: seen before sending, in two transactions.
		x1 := start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/dup/x", "1")}, nil)
		queued(t, b, 1)
		x2 := start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/dup/x", "2")}, nil)
		queued(t, b, 2)
		close(g.gate)
		for _, ch := range []<-chan outcome{first, x1, x2} {
			if o := <-ch; o.err != nil || !o.resp.Succeeded {
				t.Fatalf("%+v, %v", o.resp, o.err)
			}
		}
		if value(t, "/dup/x") != "2" || g.count() != 3 {
			t.Errorf("value %q after %d transactions, want \"2\" after 3", value(t, "/dup/x"), g.count())
		}

		// A range delete and a put inside it: only etcd sees the clash
		// ("duplicate key given in txn request"); each is then sent alone.
		g = newGated(cli)
		b = &batcher{kv: g}
		first = start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/dup/0", "0")}, nil)
		<-g.started
		del := start(ctx, b, nil, []clientv3.Op{clientv3.OpDelete("/dup/r/", clientv3.WithPrefix())}, nil)
		queued(t, b, 1)
		put := start(ctx, b, []clientv3.Cmp{absent("/dup/r/a")}, []clientv3.Op{clientv3.OpPut("/dup/r/a", "a")}, nil)
		queued(t, b, 2)
		close(g.gate)
		for _, ch := range []<-chan outcome{first, del, put} {
			if o := <-ch; o.err != nil || !o.resp.Succeeded {
				t.Fatalf("%+v, %v", o.resp, o.err)
			}
		}
		if value(t, "/dup/r/a") != "a" || g.count() != 4 {
			t.Errorf("value %q after %d transactions, want \"a\" after 4 (lone, refused batch, two alone)", value(t, "/dup/r/a"), g.count())
		}
	})

	t.Run("CanceledWhileQueued", func(t *testing.T) {
		g := newGated(cli)
		b := &batcher{kv: g}
		first := start(ctx, b, nil, []clientv3.Op{clientv3.OpPut("/cancel/0", "0")}, nil)
		<-g.started
		cctx, cancel := context.WithCancel(ctx)
		gone := start(cctx, b, nil, []clientv3.Op{clientv3.OpPut("/cancel/x", "x")}, nil)
		queued(t, b, 1)
		cancel()
		if o := <-gone; !errors.Is(o.err, context.Canceled) {
			t.Fatalf("canceled caller: %+v, %v", o.resp, o.err)
		}
		close(g.gate)
		<-first
		if value(t, "/cancel/x") != "" {
			t.Error("a call canceled before it was sent was committed")
		}
	})

	t.Run("Many", func(t *testing.T) {
		b := &batcher{kv: cli}
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := range 20 {
					k := "/many/" + string(rune('a'+w)) + "/" + string(rune('a'+i))
					resp, err := b.txn(ctx, []clientv3.Cmp{absent(k)}, []clientv3.Op{clientv3.OpPut(k, "v")}, nil)
					if err != nil || !resp.Succeeded {
						t.Errorf("%s: %+v, %v", k, resp, err)
					}
				}
			})
		}
		wg.Wait()
		resp, err := cli.Get(ctx, "/many/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 320 {
			t.Errorf("%d keys written, want 320 (%v)", resp.Count, err)
		}
	})

	// A job's update sharing a transaction with another job's is still
	// refused once the claim was taken over, and does not fail the other.
	t.Run("FencedInBatch", func(t *testing.T) {
		a, err := Open(ctx, clientv3.Config{Endpoints: e.Endpoints}, Options{Prefix: "/fenced", Node: "a", LeaseTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := Open(ctx, clientv3.Config{Endpoints: e.Endpoints}, Options{Prefix: "/fenced", Node: "b", LeaseTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		j0 := storetest.NewJob("f", "0.mp4", state.Queued)
		j1 := storetest.NewJob("f", "1.mp4", state.Queued)
		j2 := storetest.NewJob("f", "2.mp4", state.Queued)
		if err := a.CreateMany(ctx, []*state.Job{j0, j1, j2}); err != nil {
			t.Fatal(err)
		}
		if err := a.Claim(ctx, j1.ID); err != nil {
			t.Fatal(err)
		}
		if err := a.Claim(ctx, j2.ID); err != nil {
			t.Fatal(err)
		}
		// a's claim on j2 is taken over: a's lease is gone, b claims j2.
		sess, err := a.Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Client().Revoke(ctx, sess.Lease()); err != nil {
			t.Fatal(err)
		}
		if err := b.Claim(ctx, j2.ID); err != nil {
			t.Fatal(err)
		}
		g := newGated(a.cli)
		a.batch = &batcher{kv: g}
		uploading := func(j *state.Job) error { j.State = state.Uploading; return nil }
		type res struct {
			j   *state.Job
			err error
		}
		run := func(id uint64) <-chan res {
			ch := make(chan res, 1)
			go func() { j, err := a.Update(ctx, id, uploading); ch <- res{j, err} }()
			return ch
		}
		first := run(j1.ID) // alone; fenced too (a's lease is gone)
		<-g.started
		fencedOne := run(j2.ID)
		queued(t, a.batch, 1)
		free := run(j0.ID) // never claimed: no claim to lose
		queued(t, a.batch, 2)
		close(g.gate)
		if r := <-first; !errors.Is(r.err, ErrFenced) {
			t.Fatalf("update of j1 after the lease was lost: %v, want ErrFenced", r.err)
		}
		if r := <-fencedOne; !errors.Is(r.err, ErrFenced) {
			t.Fatalf("update of j2 after the take-over: %v, want ErrFenced", r.err)
		}
		if r := <-free; r.err != nil || r.j.State != state.Uploading {
			t.Fatalf("unclaimed job's update in the same transaction: %+v, %v", r.j, r.err)
		}
		if g.count() != 2 {
			t.Errorf("%d transactions, want 2", g.count())
		}
		if cur, err := b.Get(ctx, j2.ID); err != nil || cur.State != state.Queued {
			t.Errorf("fenced job changed: %+v, %v", cur, err)
		}
		// Held by b now: b's update goes through.
		if _, err := b.Update(ctx, j2.ID, uploading); err != nil {
			t.Errorf("new holder's update: %v", err)
		}
	})
}
