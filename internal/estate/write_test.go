package estate

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// writeTestStore opens an embedded store with a vms collection and one VM,
// "p/a", in it.
func writeTestStore(t *testing.T) (*store.Store, *store.Collection[api.VM]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vms := store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev })
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := vms.Create(ctx, "p/a", &api.VM{Meta: api.Meta{Name: "a", Project: "p", UID: "u-a"}}); err != nil {
		t.Fatal(err)
	}
	return st, vms
}

// TestUpdateAfterAConflict: a write that loses a race with another writer
// is made again on the newest version, keeping the other writer's change.
func TestUpdateAfterAConflict(t *testing.T) {
	ctx := context.Background()
	st, vms := writeTestStore(t)
	calls := 0
	err := update(ctx, st, vms, "p/a", vmVersion, func(cur *api.VM) (*api.VM, error) {
		calls++
		if calls == 1 {
			other := store.Clone(cur)
			other.Labels = map[string]string{"by": "other"}
			if _, err := vms.Update(ctx, "p/a", other, cur.Version); err != nil {
				t.Fatal(err)
			}
		}
		next := store.Clone(cur)
		next.Status.Reason = "mine"
		return next, nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("update = %v after %d calls, want nil after 2", err, calls)
	}
	if vm, _ := vms.Get("p/a"); vm.Status.Reason != "mine" || vm.Labels["by"] != "other" {
		t.Fatalf("vm after both writes: reason %q, labels %v", vm.Status.Reason, vm.Labels)
	}
}

// TestUpdateReportsFailures: a conflict that does not end and a store that
// refuses the write come back as errors; an object gone, or no longer the
// one meant, is nothing to do.
func TestUpdateReportsFailures(t *testing.T) {
	ctx := context.Background()
	st, vms := writeTestStore(t)
	calls := 0
	err := update(ctx, st, vms, "p/a", vmVersion, func(cur *api.VM) (*api.VM, error) {
		calls++
		other := store.Clone(cur)
		if _, err := vms.Update(ctx, "p/a", other, cur.Version); err != nil {
			t.Fatal(err)
		}
		return store.Clone(cur), nil
	})
	if !errors.Is(err, store.ErrConflict) || calls != maxRetries {
		t.Errorf("update against a writer that always wins = %v after %d calls, want a conflict after %d", err, calls, maxRetries)
	}
	called := false
	if err := update(ctx, st, vms, "p/missing", vmVersion, func(*api.VM) (*api.VM, error) { called = true; return nil, nil }); err != nil || called {
		t.Errorf("update of a missing vm = %v (change called: %v), want nil and no call", err, called)
	}
	before, _ := vms.Get("p/a")
	if err := update(ctx, st, vms, "p/a", vmVersion, func(*api.VM) (*api.VM, error) { return nil, errGone }); err != nil {
		t.Errorf("update of a vm no longer meant = %v, want nil", err)
	}
	if after, _ := vms.Get("p/a"); after.Version != before.Version {
		t.Error("update of a vm no longer meant wrote it")
	}
	st.Close()
	err = update(ctx, st, vms, "p/a", vmVersion, func(cur *api.VM) (*api.VM, error) { return store.Clone(cur), nil })
	if !errors.Is(err, store.ErrClosed) {
		t.Errorf("update on a closed store = %v, want it to say the store is closed", err)
	}
	if err := remove(ctx, st, vms, "p/a", vmVersion, func(*api.VM) bool { return true }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("remove on a closed store = %v, want it to say the store is closed", err)
	}
}

// TestRemoveAfterAConflict: a removal that loses a race is made again when
// the object is still the one to remove, and not when it no longer is.
func TestRemoveAfterAConflict(t *testing.T) {
	ctx := context.Background()
	st, vms := writeTestStore(t)
	calls := 0
	err := remove(ctx, st, vms, "p/a", vmVersion, func(cur *api.VM) bool {
		calls++
		if calls == 1 {
			if _, err := vms.Update(ctx, "p/a", store.Clone(cur), cur.Version); err != nil {
				t.Fatal(err)
			}
		}
		return true
	})
	if _, still := vms.Get("p/a"); err != nil || still || calls != 2 {
		t.Fatalf("remove = %v after %d calls, vm still there: %v; want it removed on the second try", err, calls, still)
	}
	if _, err := vms.Create(ctx, "p/b", &api.VM{Meta: api.Meta{Name: "b", Project: "p", UID: "u-b"}}); err != nil {
		t.Fatal(err)
	}
	if err := remove(ctx, st, vms, "p/b", vmVersion, func(*api.VM) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if _, ok := vms.Get("p/b"); !ok {
		t.Fatal("remove took a vm that is no longer the one to remove")
	}
}
