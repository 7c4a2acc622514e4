package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestObserveBeforeTheWriteReturns: an observer has seen every change by
// the time the write that made it returns (its revision is reached), in
// revision order, whoever wrote it: what it keeps is exact as of the
// index.
func TestObserveBeforeTheWriteReturns(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	var mu sync.Mutex
	seen := map[string]int64{}
	last := int64(0)
	var order error
	s.vms.Observe(func(c Change[api.VM]) {
		mu.Lock()
		defer mu.Unlock()
		if c.Rev < last && order == nil {
			order = fmt.Errorf("change at %d after one at %d", c.Rev, last)
		}
		last = c.Rev
		if c.Type == Delete {
			delete(seen, c.Name)
		} else {
			seen[c.Name] = c.Rev
		}
	})
	for i := range 50 {
		name := fmt.Sprintf("v%d", i)
		rev, err := s.vms.Create(ctx, name, newVM(name))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := seen[name]
		mu.Unlock()
		if got != rev {
			t.Fatalf("create of %s returned at revision %d, the observer saw %d", name, rev, got)
		}
	}
	// A write of another client, waited for by revision.
	other := rawClient(t, s.Store, s.cfg)
	resp, err := other.Delete(ctx, s.vms.Key("v7"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitRev(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	_, still := seen["v7"]
	err = order
	mu.Unlock()
	if still || err != nil {
		t.Errorf("after the revision of another client's delete: observer still has v7 (%v), order: %v", still, err)
	}
}

// TestCheckOp: a check in a transaction writes nothing, holds the
// transaction to the object's version, and names the object when it
// changed or went.
func TestCheckOp(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	if _, err := s.vms.Create(ctx, "a", newVM("a")); err != nil {
		t.Fatal(err)
	}
	a, _ := s.vms.Get("a")
	if _, err := s.Txn(ctx, s.vms.OpCheck("a", a.Version), s.vms.OpCreate("b", newVM("b"))); err != nil {
		t.Fatalf("a transaction checking an unchanged object: %v", err)
	}
	if got, _ := s.vms.Get("a"); got.Version != a.Version {
		t.Errorf("a check wrote its object: version %d, was %d", got.Version, a.Version)
	}
	if _, err := s.vms.Update(ctx, "a", newVM("a"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := s.Txn(ctx, s.vms.OpCheck("a", a.Version), s.vms.OpCreate("c", newVM("c")))
	var ke *KeyError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ke) || ke.Kind != "vms" || ke.Name != "a" {
		t.Errorf("a check of a changed object: %v, want a conflict naming vms a", err)
	}
	if _, ok := s.vms.Get("c"); ok {
		t.Error("a transaction whose check failed wrote")
	}
	if err := s.vms.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, s.vms.OpCheck("a", a.Version), s.vms.OpCreate("c", newVM("c"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("a check of a deleted object: %v, want ErrNotFound", err)
	}
}
