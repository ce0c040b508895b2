package powerfs

import (
	"math/rand/v2"
	"sort"
	"syscall"
)

// An op is one change to directory entries that is done in the live tree
// but not yet durable. Ops are kept in the order they happened.
type op struct {
	kind   opKind
	p1     uint64 // directory whose entry n1 changes
	n1     string
	p2     uint64 // rename and exchange: the other directory and name
	n2     string
	child  uint64 // the node added, removed or moved
	child2 uint64 // exchange: the node that was at p2/n2

	ctime, ctime2 syscall.Timespec // of child and child2 right after the change
}

type opKind uint8

const (
	opAdd      opKind = iota + 1 // create, mkdir, mknod, symlink, link: p1/n1 = child
	opRemove                     // unlink, rmdir: p1/n1 goes
	opRename                     // p1/n1 moves to p2/n2 (replacing what was there)
	opExchange                   // p1/n1 and p2/n2 swap (RENAME_EXCHANGE)
)

// key is what orders ops: a directory whose entries change, or a node that
// is added, removed or moved. An op can only become durable together with
// every earlier op that shares a key with it.
type key struct {
	dir bool
	id  uint64
}

func (o *op) keys() []key {
	ks := []key{{dir: true, id: o.p1}, {id: o.child}}
	if o.kind == opRename || o.kind == opExchange {
		ks = append(ks, key{dir: true, id: o.p2})
	}
	if o.kind == opExchange {
		ks = append(ks, key{id: o.child2})
	}
	return ks
}

// changes reports whether o changes the entries of directory dir, i.e.
// whether fsync(dir) makes it durable. A rename is one atomic change, made
// durable by syncing either of its directories, as on journaling file
// systems: no state has the file in both places or in neither.
func (o *op) changes(dir uint64) bool {
	return o.p1 == dir || ((o.kind == opRename || o.kind == opExchange) && o.p2 == dir)
}

// namespace is the durable directory tree: directory id -> name -> node id.
type namespace map[uint64]map[string]uint64

func (ns namespace) set(dir uint64, name string, id uint64) {
	m := ns[dir]
	if m == nil {
		m = map[string]uint64{}
		ns[dir] = m
	}
	m[name] = id
}

// apply makes o durable in ns. Ops are applied with all their earlier
// dependencies, so the entries o reads (the moved node) are as they were
// in the live tree when o ran.
func (ns namespace) apply(o *op) {
	switch o.kind {
	case opAdd:
		ns.set(o.p1, o.n1, o.child)
	case opRemove:
		delete(ns[o.p1], o.n1)
	case opRename:
		delete(ns[o.p1], o.n1)
		ns.set(o.p2, o.n2, o.child)
	case opExchange:
		ns.set(o.p1, o.n1, o.child2)
		ns.set(o.p2, o.n2, o.child)
	}
}

// closure returns the indexes (ascending) of the ops in log that fsync of
// directory dir makes durable: those that change dir, and every earlier op
// they depend on (sharing a directory or a node).
func closure(log []op, dir uint64) []int {
	want := map[key]bool{}
	var out []int
	for i := len(log) - 1; i >= 0; i-- {
		o := &log[i]
		in := o.changes(dir)
		ks := o.keys()
		if !in {
			for _, k := range ks {
				if want[k] {
					in = true
					break
				}
			}
		}
		if in {
			out = append(out, i)
			for _, k := range ks {
				want[k] = true
			}
		}
	}
	sort.Ints(out)
	return out
}

// randomSubset returns the indexes (ascending) of a random set of ops that
// could have reached the disk on their own (the kernel writes metadata back
// without being asked): each op with probability keep, and only when every
// earlier op it depends on is in the set too.
func randomSubset(log []op, keep float64, r *rand.Rand) []int {
	blocked := map[key]bool{}
	var out []int
	for i := range log {
		o := &log[i]
		ks := o.keys()
		ok := r.Float64() < keep
		for _, k := range ks {
			if blocked[k] {
				ok = false
			}
		}
		if ok {
			out = append(out, i)
			continue
		}
		for _, k := range ks {
			blocked[k] = true
		}
	}
	return out
}

// without returns log minus the ops at the ascending indexes idx.
func without(log []op, idx []int) []op {
	out := log[:0:0]
	j := 0
	for i := range log {
		if j < len(idx) && idx[j] == i {
			j++
			continue
		}
		out = append(out, log[i])
	}
	return out
}
