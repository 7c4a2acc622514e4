package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Fence is the condition a leader's writes carry: the key it holds
// while it leads (its election key, bound to its session's lease) still
// exists and was created at Rev. A leader that lost its session, resigned
// or was replaced fails the condition, so its late writes are refused
// instead of landing after another leader's.
type Fence struct {
	// Key is the full etcd key (not relative to the prefix).
	Key string
	// Rev is the revision the key was created at.
	Rev int64
}

// Fenced returns a Writer whose every transaction also requires f; one
// that finds f broken writes nothing and fails with an error wrapping
// ErrFenced.
func (s *Store) Fenced(f Fence) *FencedWriter { return &FencedWriter{s: s, f: f} }

// FencedWriter writes to a store under a fence.
type FencedWriter struct {
	s *Store
	f Fence
}

// Fence is the condition the writer's transactions carry.
func (w *FencedWriter) Fence() Fence { return w.f }

// Txn commits ops as Store.Txn does, under the writer's fence.
func (w *FencedWriter) Txn(ctx context.Context, ops ...Op) (int64, error) {
	if len(ops) == 0 {
		return 0, fmt.Errorf("commit transaction: no operations")
	}
	guard := Op{s: w.s, typ: opGuard, kind: "fence", name: w.f.Key, key: w.f.Key, expect: w.f.Rev}
	return w.s.Txn(ctx, append(ops[:len(ops):len(ops)], guard)...)
}

var _ Writer = (*FencedWriter)(nil)

// guardCmp is the condition of a guard op: its key holds the create
// revision the op expects.
func guardCmp(op Op) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(op.key), "=", op.expect)
}
