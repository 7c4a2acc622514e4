package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// configFunc returns the Config of a fresh, empty store for one test.
type configFunc func(t *testing.T) Config

// runSuite runs the store's tests against the etcd that mk configures:
// the embedded one or an external one.
func runSuite(t *testing.T, mk configFunc) {
	tests := []struct {
		name string
		run  func(*testing.T, configFunc)
	}{
		{"CRUD", testCRUD},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"Pagination", testPagination},
		{"OutOfBandWrites", testOutOfBand},
		{"Restart", testRestart},
		{"TxnAtomicity", testTxnAtomicity},
		{"RawKeys", testRawKeys},
		{"SlowSubscriber", testSlowSubscriber},
		{"FilteredSubscriber", testFilteredSubscriber},
		{"Partition", testPartition},
		{"PartitionBuiltUnderWrites", testPartitionBuiltUnderWrites},
	}
	t.Run("Parallel", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, mk)
			})
		}
	})
	// Compaction is global to an etcd: on a shared external one it would
	// cut the watches of the tests above, so it runs once they are done.
	t.Run("CompactionReload", func(t *testing.T) { testCompactionReload(t, mk) })
}

func testCRUD(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))

	vm := newVM("web-1")
	rev, err := s.vms.Create(ctx, "web-1", vm)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if vm.Version != rev {
		t.Errorf("created object's version = %d, want %d", vm.Version, rev)
	}
	got, ok := s.vms.Get("web-1")
	if !ok {
		t.Fatal("get right after create: not found")
	}
	if got.Version != rev || got.Spec.MemoryMiB != 8192 || got.Status.Disks[1].Name != "data" {
		t.Errorf("get = version %d, %+v", got.Version, got.Spec)
	}
	if s.vms.Len() != 1 {
		t.Errorf("len = %d, want 1", s.vms.Len())
	}

	_, err = s.vms.Create(ctx, "web-1", newVM("web-1"))
	var kerr *KeyError
	if !errors.Is(err, ErrExists) || !errors.As(err, &kerr) || kerr.Name != "web-1" || kerr.Kind != "vms" {
		t.Errorf("second create: %v, want ErrExists naming vms web-1", err)
	}

	upd := Clone(got)
	upd.Spec.VCPUs = 8
	rev2, err := s.vms.Update(ctx, "web-1", upd, got.Version)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if got.Spec.VCPUs != 4 {
		t.Error("Clone shares memory with the index")
	}
	if got2, _ := s.vms.Get("web-1"); got2.Spec.VCPUs != 8 || got2.Version != rev2 || rev2 <= rev {
		t.Errorf("after update: vcpus %d version %d (update rev %d)", got2.Spec.VCPUs, got2.Version, rev2)
	}
	if _, err := s.vms.Update(ctx, "web-1", upd, rev); !errors.Is(err, ErrConflict) {
		t.Errorf("update with stale version: %v, want ErrConflict", err)
	}
	if _, err := s.vms.Update(ctx, "nope", upd, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of missing: %v, want ErrNotFound", err)
	}
	if _, err := s.vms.Update(ctx, "nope", upd, 5); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of missing with version: %v, want ErrNotFound", err)
	}
	if err := s.vms.Delete(ctx, "web-1", rev); !errors.Is(err, ErrConflict) {
		t.Errorf("delete with stale version: %v, want ErrConflict", err)
	}
	if err := s.vms.Delete(ctx, "web-1", rev2); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := s.vms.Get("web-1"); ok {
		t.Error("get right after delete: still there")
	}
	if err := s.vms.Delete(ctx, "web-1", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.vms.Create(ctx, "", newVM("")); err == nil {
		t.Error("create with empty name succeeded")
	}
	// A name may be re-used after delete; unconditional delete works.
	if _, err := s.vms.Create(ctx, "web-1", newVM("web-1")); err != nil {
		t.Fatalf("re-create: %v", err)
	}
	if err := s.vms.Delete(ctx, "web-1", 0); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
	if s.vms.Len() != 0 {
		t.Errorf("len = %d, want 0", s.vms.Len())
	}
}

func testConcurrentUpdates(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	if _, err := s.vms.Create(ctx, "counter", newVM("counter")); err != nil {
		t.Fatalf("create: %v", err)
	}
	const workers = 20
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				cur, ok := s.vms.Get("counter")
				if !ok {
					errs <- errors.New("counter vanished")
					return
				}
				next := Clone(cur)
				next.Spec.RestartCount++
				_, err := s.vms.Update(ctx, "counter", next, cur.Version)
				if errors.Is(err, ErrConflict) {
					conflicts.Add(1)
					continue
				}
				errs <- err
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	got, _ := s.vms.Get("counter")
	if got.Spec.RestartCount != workers {
		t.Errorf("counter = %d after %d increments (%d conflicts)", got.Spec.RestartCount, workers, conflicts.Load())
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

func testPagination(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	const n = 250
	var want []string
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		name := fmt.Sprintf("vm-%03d", i)
		want = append(want, name)
		vm := newVM(name)
		vm.Labels["parity"] = []string{"even", "odd"}[i%2]
		wg.Go(func() {
			_, err := s.vms.Create(ctx, name, vm)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("create: %v", err)
		}
	}

	pages := func(opts ListOptions[api.VM]) ([]int, []string) {
		t.Helper()
		var sizes []int
		var all []string
		for {
			items, next, err := s.vms.List(opts)
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			sizes = append(sizes, len(items))
			all = append(all, names(items)...)
			if next == "" {
				return sizes, all
			}
			opts.Continue = next
		}
	}
	for _, tc := range []struct {
		limit int
		sizes []int
	}{
		{0, []int{250}},
		{100, []int{100, 100, 50}},
		{50, []int{50, 50, 50, 50, 50}},
		{250, []int{250}},
		{1000, []int{250}},
	} {
		sizes, all := pages(ListOptions[api.VM]{Limit: tc.limit})
		if !slices.Equal(sizes, tc.sizes) || !slices.Equal(all, want) {
			t.Errorf("limit %d: pages %v, %d names (sorted: %v)", tc.limit, sizes, len(all), slices.IsSorted(all))
		}
	}

	even := func(v *api.VM) bool { return v.Labels["parity"] == "even" }
	sizes, all := pages(ListOptions[api.VM]{Limit: 40, Filter: even})
	var wantEven []string
	for i, name := range want {
		if i%2 == 0 {
			wantEven = append(wantEven, name)
		}
	}
	if !slices.Equal(sizes, []int{40, 40, 40, 5}) || !slices.Equal(all, wantEven) {
		t.Errorf("filtered: pages %v, names %v", sizes, all)
	}
	none, next, err := s.vms.List(ListOptions[api.VM]{Limit: 10, Filter: func(*api.VM) bool { return false }})
	if err != nil || len(none) != 0 || next != "" {
		t.Errorf("filter matching nothing: %d items, continue %q, %v", len(none), next, err)
	}
	for _, bad := range []string{"%%%", "not base64!"} {
		if _, _, err := s.vms.List(ListOptions[api.VM]{Continue: bad}); !errors.Is(err, ErrInvalidContinue) {
			t.Errorf("continue %q: %v, want ErrInvalidContinue", bad, err)
		}
	}
}

func testTxnAtomicity(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	cfg := mk(t)
	s := openStore(t, cfg)
	raw := rawClient(t, s.Store, cfg)
	aRev, err := s.vms.Create(ctx, "a", newVM("a"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	hostA := &api.Host{Meta: api.Meta{Name: "h1"}}
	if _, err := s.hosts.Create(ctx, "h1", hostA); err != nil {
		t.Fatalf("create host: %v", err)
	}
	assertFails := func(what string, want error, wantName string, ops ...Op) {
		t.Helper()
		_, err := s.Txn(ctx, ops...)
		var kerr *KeyError
		if !errors.Is(err, want) || !errors.As(err, &kerr) || kerr.Name != wantName {
			t.Errorf("%s: %v, want %v naming %q", what, err, want, wantName)
		}
		if _, ok := s.vms.Get("b"); ok {
			t.Errorf("%s: b was written", what)
		}
		if resp, err := raw.Get(ctx, s.vms.Key("b")); err != nil || len(resp.Kvs) != 0 {
			t.Errorf("%s: b in etcd (%v)", what, err)
		}
	}
	assertFails("stale update", ErrConflict, "a",
		s.vms.OpCreate("b", newVM("b")), s.vms.OpUpdate("a", newVM("a"), aRev-1))
	assertFails("create existing", ErrExists, "a",
		s.vms.OpCreate("b", newVM("b")), s.vms.OpCreate("a", newVM("a")))
	assertFails("delete missing", ErrNotFound, "zz",
		s.vms.OpCreate("b", newVM("b")), s.vms.OpDelete("zz", 0))
	assertFails("host conflict", ErrConflict, "h1",
		s.vms.OpCreate("b", newVM("b")), s.hosts.OpDelete("h1", hostA.Version+100))
	if _, err := s.Txn(ctx, s.vms.OpCreate("b", newVM("b")), s.vms.OpDelete("b", 0)); err == nil {
		t.Error("txn writing one key twice succeeded")
	}

	b, c, a := newVM("b"), newVM("c"), newVM("a")
	a.Spec.VCPUs = 2
	rev, err := s.Txn(ctx,
		s.vms.OpCreate("b", b), s.vms.OpCreate("c", c), s.vms.OpUpdate("a", a, aRev),
		s.hosts.OpUpdate("h1", hostA, hostA.Version))
	if err != nil {
		t.Fatalf("txn: %v", err)
	}
	for _, name := range []string{"a", "b", "c"} {
		got, ok := s.vms.Get(name)
		if !ok || got.Version != rev {
			t.Errorf("%s after txn: present %v version %v, want %d", name, ok, got, rev)
		}
	}
	if h, _ := s.hosts.Get("h1"); h.Version != rev || b.Version != rev || a.Version != rev {
		t.Errorf("versions after txn: host %d, b %d, a %d, want %d", h.Version, b.Version, a.Version, rev)
	}
	if _, err := s.Txn(ctx, s.vms.OpDelete("b", rev), s.vms.OpDelete("c", 0)); err != nil {
		t.Fatalf("txn delete: %v", err)
	}
	if s.vms.Len() != 1 {
		t.Errorf("len = %d, want 1", s.vms.Len())
	}
	if _, err := s.Txn(ctx); err == nil {
		t.Error("empty txn succeeded")
	}
}

func testRawKeys(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	cfg := mk(t)
	s := openStore(t, cfg)
	raw := rawClient(t, s.Store, cfg)

	if err := s.CreateKey(ctx, "idempotency/k1", []byte("op-1"), 0); err != nil {
		t.Fatalf("create key: %v", err)
	}
	if err := s.CreateKey(ctx, "idempotency/k1", []byte("op-2"), time.Minute); !errors.Is(err, ErrExists) {
		t.Errorf("second create key: %v, want ErrExists", err)
	}
	if v, err := s.GetKey(ctx, "idempotency/k1"); err != nil || string(v) != "op-1" {
		t.Errorf("get key: %q, %v", v, err)
	}
	if err := s.PutKey(ctx, "idempotency/k1", []byte("op-3"), 0); err != nil {
		t.Fatalf("put key: %v", err)
	}
	if v, _ := s.GetKey(ctx, "idempotency/k1"); string(v) != "op-3" {
		t.Errorf("get key after put: %q", v)
	}
	if err := s.DeleteKey(ctx, "idempotency/k1"); err != nil {
		t.Fatalf("delete key: %v", err)
	}
	if err := s.DeleteKey(ctx, "idempotency/k1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete key: %v, want ErrNotFound", err)
	}
	if _, err := s.GetKey(ctx, "idempotency/k1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get deleted key: %v, want ErrNotFound", err)
	}

	if err := s.CreateKey(ctx, "join-tokens/t1", []byte("x"), 1500*time.Millisecond); err != nil {
		t.Fatalf("create key with ttl: %v", err)
	}
	resp, err := raw.Get(ctx, s.Prefix()+"join-tokens/t1")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("key with ttl has no lease: %v %v", resp, err)
	}
	ttl, err := raw.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil || ttl.GrantedTTL != 2 || ttl.TTL <= 0 {
		t.Errorf("lease of key with ttl 1.5s: %+v, %v", ttl, err)
	}

	if err := s.PutKey(ctx, "vms/x", []byte("x"), 0); err == nil {
		t.Error("raw key inside a collection accepted")
	}
	if err := s.PutKey(ctx, "", []byte("x"), 0); err == nil {
		t.Error("empty raw key accepted")
	}
	if s.vms.Len() != 0 || s.hosts.Len() != 0 {
		t.Error("raw keys showed up in a collection")
	}
}
