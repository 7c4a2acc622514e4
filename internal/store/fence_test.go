package store

import (
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFencedWrites: a write under a fence lands while the fence's key
// holds the revision it was created at, and is refused, writing nothing,
// once the key is gone or was made again; a conflict beside a broken
// fence is reported as the fence.
func TestFencedWrites(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	cli := s.Client()
	key := "/test/leader/one"
	put, err := cli.Put(ctx, key, "a")
	if err != nil {
		t.Fatal(err)
	}
	w := s.Fenced(Fence{Key: key, Rev: put.Header.Revision})
	vm := newVM("fenced")
	if _, err := w.Txn(ctx, s.vms.OpCreate("fenced", vm)); err != nil {
		t.Fatalf("a write under a fence that holds: %v", err)
	}
	if got, ok := s.vms.Get("fenced"); !ok || got.Version != vm.Version {
		t.Fatalf("the fenced write is not in the index: %v %v", got, ok)
	}

	// The key written again keeps its create revision: still the leader.
	if _, err := cli.Put(ctx, key, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Txn(ctx, s.vms.OpUpdate("fenced", vm, vm.Version)); err != nil {
		t.Fatalf("a write under a fence whose key changed value only: %v", err)
	}

	// Deleted and made again: another term.
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	before := s.vms.Len()
	_, err = w.Txn(ctx, s.vms.OpCreate("late", newVM("late")))
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("a write under a fence whose key is gone: %v, want ErrFenced", err)
	}
	if _, err := cli.Put(ctx, key, "c"); err != nil {
		t.Fatal(err)
	}
	stale := vm.Version - 1 // a conflict too
	_, err = w.Txn(ctx, s.vms.OpCreate("late", newVM("late")), s.vms.OpUpdate("fenced", vm, stale))
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("a write under a fence whose key was made again: %v, want ErrFenced", err)
	}
	resp, err := cli.Get(ctx, s.vms.Key("late"), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 || s.vms.Len() != before {
		t.Errorf("a refused fenced write landed: %d in etcd, %d in the index (was %d)", resp.Count, s.vms.Len(), before)
	}
}
