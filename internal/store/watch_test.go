package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testOutOfBand writes with a second etcd client and expects the index and
// a subscription to follow, in order.
func testOutOfBand(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	cfg := mk(t)
	s := openStore(t, cfg)
	raw := rawClient(t, s.Store, cfg)
	sub := s.vms.Subscribe(ctx)

	put := func(name string, vm *api.VM) int64 {
		t.Helper()
		b, _ := json.Marshal(vm)
		resp, err := raw.Put(ctx, s.vms.Key(name), string(b))
		if err != nil {
			t.Fatalf("raw put: %v", err)
		}
		return resp.Header.Revision
	}
	a := newVM("a")
	r1 := put("a", a)
	r2 := put("b", newVM("b"))
	a.Spec.VCPUs = 16
	r3 := put("a", a)
	// A value that is not an object is skipped, not fatal.
	if _, err := raw.Put(ctx, s.vms.Key("junk"), "{not json"); err != nil {
		t.Fatalf("raw put: %v", err)
	}
	del, err := raw.Delete(ctx, s.vms.Key("b"))
	if err != nil {
		t.Fatalf("raw delete: %v", err)
	}
	r4 := del.Header.Revision
	// A key outside the collections is ignored.
	if _, err := raw.Put(ctx, s.Prefix()+"other/x", "1"); err != nil {
		t.Fatalf("raw put: %v", err)
	}

	changes := recv(t, sub, 4)
	type ev struct {
		typ  ChangeType
		name string
		rev  int64
	}
	var got []ev
	for _, c := range changes {
		got = append(got, ev{c.Type, c.Name, c.Rev})
	}
	want := []ev{{Put, "a", r1}, {Put, "b", r2}, {Put, "a", r3}, {Delete, "b", r4}}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	if changes[0].Prev != nil || changes[2].Prev == nil || changes[2].Prev.Spec.VCPUs != 4 || changes[2].Obj.Spec.VCPUs != 16 {
		t.Error("put changes carry wrong Prev/Obj")
	}
	if changes[3].Obj == nil || changes[3].Obj.Name != "b" || changes[3].Obj.Version != r2 {
		t.Errorf("delete change carries %+v, want b's last value", changes[3].Obj)
	}

	if err := s.WaitRev(ctx, r4); err != nil {
		t.Fatalf("wait rev: %v", err)
	}
	if got, ok := s.vms.Get("a"); !ok || got.Version != r3 || got.Spec.VCPUs != 16 {
		t.Errorf("a in index: %v %+v", ok, got)
	}
	if _, ok := s.vms.Get("b"); ok {
		t.Error("b still in index after out-of-band delete")
	}
	if _, ok := s.vms.Get("junk"); ok {
		t.Error("undecodable value in index")
	}
	if s.vms.Len() != 1 {
		t.Errorf("len = %d, want 1", s.vms.Len())
	}

	// An object overwritten with something that does not decode leaves the
	// index, as it would on a reload.
	bad, err := raw.Put(ctx, s.vms.Key("a"), "[]")
	if err != nil {
		t.Fatalf("raw put: %v", err)
	}
	if c := recv(t, sub, 1)[0]; c.Type != Delete || c.Name != "a" || c.Rev != bad.Header.Revision {
		t.Errorf("change for an undecodable overwrite: %v %s at %d", c.Type, c.Name, c.Rev)
	}
	if _, ok := s.vms.Get("a"); ok {
		t.Error("a still in index after an undecodable overwrite")
	}
}

// testCompactionReload makes the watch fall behind a compaction: it is
// cancelled, the store reloads and is held before watching again while
// another client writes and compacts. The watch then finds its revision
// compacted and the store must reload to the right contents.
func testCompactionReload(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	cfg := mk(t)
	var loads atomic.Int32
	paused, resume := make(chan struct{}), make(chan struct{})
	s := openStore(t, cfg, func(s *Store) {
		s.beforeWatch = func() {
			if loads.Add(1) == 2 {
				close(paused)
				<-resume
			}
		}
	})
	raw := rawClient(t, s.Store, cfg)
	for i := range 10 {
		name := fmt.Sprintf("a%d", i)
		if _, err := s.vms.Create(ctx, name, newVM(name)); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	sub := s.vms.Subscribe(ctx)

	s.restartWatch()
	<-paused

	put := func(name string, vcpus int) int64 {
		vm := newVM(name)
		vm.Spec.VCPUs = vcpus
		b, _ := json.Marshal(vm)
		resp, err := raw.Put(ctx, s.vms.Key(name), string(b))
		if err != nil {
			t.Fatalf("raw put: %v", err)
		}
		return resp.Header.Revision
	}
	revs := map[string]int64{}
	for i := range 5 {
		name := fmt.Sprintf("a%d", i)
		revs[name] = put(name, 32)
	}
	var last int64
	for i := 5; i < 10; i++ {
		resp, err := raw.Delete(ctx, s.vms.Key(fmt.Sprintf("a%d", i)))
		if err != nil {
			t.Fatalf("raw delete: %v", err)
		}
		last = resp.Header.Revision
	}
	for i := range 5 {
		name := fmt.Sprintf("b%d", i)
		revs[name] = put(name, 1)
		last = revs[name]
	}
	if _, err := raw.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	close(resume)

	if err := s.WaitRev(ctx, last); err != nil {
		t.Fatalf("wait for the reload: %v", err)
	}
	// The hook runs just after the load that woke WaitRev.
	eventually(t, "a reload after the compaction", func() bool { return loads.Load() >= 3 })
	if s.vms.Len() != 10 {
		t.Errorf("len = %d, want 10", s.vms.Len())
	}
	for name, rev := range revs {
		got, ok := s.vms.Get(name)
		if !ok || got.Version != rev {
			t.Errorf("%s: present %v, %+v, want version %d", name, ok, got, rev)
		}
	}
	// The subscriber gets the difference, in revision order: 10 puts and 5
	// deletes.
	changes := recv(t, sub, 15)
	var puts, deletes int
	for i, c := range changes {
		if i > 0 && c.Rev < changes[i-1].Rev {
			t.Errorf("change %d out of order: rev %d after %d", i, c.Rev, changes[i-1].Rev)
		}
		switch c.Type {
		case Put:
			puts++
			if c.Rev != revs[c.Name] {
				t.Errorf("put %s at %d, want %d", c.Name, c.Rev, revs[c.Name])
			}
		case Delete:
			deletes++
			if c.Rev < last {
				t.Errorf("delete %s at %d, before the reload revision %d", c.Name, c.Rev, last)
			}
		}
	}
	if puts != 10 || deletes != 5 {
		t.Errorf("%d puts and %d deletes, want 10 and 5", puts, deletes)
	}
}

func testRestart(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	cfg := mk(t)
	s := openStore(t, cfg)
	for i := range 50 {
		name := fmt.Sprintf("vm-%02d", i)
		if _, err := s.vms.Create(ctx, name, newVM(name)); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	for i := range 10 {
		name := fmt.Sprintf("vm-%02d", i)
		cur, _ := s.vms.Get(name)
		next := Clone(cur)
		next.Status.PowerState = api.PowerStopped
		if _, err := s.vms.Update(ctx, name, next, cur.Version); err != nil {
			t.Fatalf("update: %v", err)
		}
		if err := s.vms.Delete(ctx, fmt.Sprintf("vm-%02d", 49-i), 0); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	if err := s.PutKey(ctx, "tokens/t1", []byte("secret"), 0); err != nil {
		t.Fatalf("put key: %v", err)
	}
	before, _, _ := s.vms.List(ListOptions[api.VM]{})
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}

	s2 := openStore(t, cfg)
	after, _, _ := s2.vms.List(ListOptions[api.VM]{})
	if len(after) != 40 || len(before) != 40 {
		t.Fatalf("%d objects before close, %d after reopen, want 40", len(before), len(after))
	}
	for i := range after {
		a, b := after[i], before[i]
		if a.Name != b.Name || a.Version != b.Version || a.Status.PowerState != b.Status.PowerState {
			t.Errorf("after reopen %s@%d %s, before %s@%d %s", a.Name, a.Version, a.Status.PowerState, b.Name, b.Version, b.Status.PowerState)
		}
	}
	if v, err := s2.GetKey(ctx, "tokens/t1"); err != nil || string(v) != "secret" {
		t.Errorf("raw key after reopen: %q, %v", v, err)
	}
	if _, err := s2.vms.Create(ctx, "new", newVM("new")); err != nil {
		t.Errorf("create after reopen: %v", err)
	}
}

// testSlowSubscriber checks that a subscriber that does not read holds up
// neither writes nor another subscriber, and still gets everything.
func testSlowSubscriber(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	slowCtx, cancelSlow := context.WithCancel(ctx)
	slow := s.vms.Subscribe(slowCtx)
	fast := s.vms.Subscribe(ctx)

	const n = 200
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				name := fmt.Sprintf("vm-%03d", i)
				if _, err := s.vms.Create(ctx, name, newVM(name)); err != nil {
					t.Errorf("create: %v", err)
					return
				}
			}
		})
	}
	got := recv(t, fast, n)
	wg.Wait()
	if s.vms.Len() != n {
		t.Errorf("len = %d, want %d", s.vms.Len(), n)
	}
	for _, ch := range [][]Change[api.VM]{got, recv(t, slow, n)} {
		seen := map[string]bool{}
		for i, c := range ch {
			seen[c.Name] = true
			if c.Type != Put || (i > 0 && c.Rev <= ch[i-1].Rev) {
				t.Fatalf("change %d: %v %s at %d after %d", i, c.Type, c.Name, c.Rev, ch[max(i-1, 0)].Rev)
			}
		}
		if len(seen) != n {
			t.Errorf("%d distinct objects, want %d", len(seen), n)
		}
	}
	cancelSlow()
	for range slow {
	}
	// Close ends the remaining subscription.
	s.Close()
	for range fast {
	}
}

// testFilteredSubscriber checks that SubscribeWhere delivers the changes
// its filter keeps, in revision order, deletes and moves away included,
// and that the filter sees each change once.
func testFilteredSubscriber(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	var calls atomic.Int64
	onH1 := func(vm *api.VM) bool { return vm.Spec.Host == "h1" }
	mine := s.vms.SubscribeWhere(ctx, func(c Change[api.VM]) bool {
		calls.Add(1)
		return onH1(c.Obj) || (c.Prev != nil && onH1(c.Prev))
	})
	all := s.vms.Subscribe(ctx)
	vm := func(name, host string) *api.VM {
		v := newVM(name)
		v.Spec.Host = host
		return v
	}
	for i := range 10 {
		name := fmt.Sprintf("other-%d", i)
		if _, err := s.vms.Create(ctx, name, vm(name, "h2")); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	a, err := s.vms.Create(ctx, "a", vm("a", "h1"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	moved, err := s.vms.Update(ctx, "a", vm("a", "h2"), a) // moves away from h1
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := s.vms.Create(ctx, "b", vm("b", "h1")); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := s.vms.Delete(ctx, "b", 0); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := s.vms.Delete(ctx, "a", moved); err != nil { // no longer h1's
		t.Fatalf("delete: %v", err)
	}
	recv(t, all, 15) // every change is published before the filtered ones are checked
	got := recv(t, mine, 4)
	want := []struct {
		typ  ChangeType
		name string
		host string
	}{{Put, "a", "h1"}, {Put, "a", "h2"}, {Put, "b", "h1"}, {Delete, "b", "h1"}}
	for i, c := range got {
		if c.Type != want[i].typ || c.Name != want[i].name || c.Obj.Spec.Host != want[i].host {
			t.Errorf("change %d: %v %s on %s, want %v %s on %s", i, c.Type, c.Name, c.Obj.Spec.Host, want[i].typ, want[i].name, want[i].host)
		}
		if i > 0 && c.Rev <= got[i-1].Rev {
			t.Errorf("change %d at revision %d after %d", i, c.Rev, got[i-1].Rev)
		}
	}
	select {
	case c := <-mine:
		t.Errorf("a fifth change delivered: %v %s on %s", c.Type, c.Name, c.Obj.Spec.Host)
	default:
	}
	if n := calls.Load(); n != 15 {
		t.Errorf("the filter was called %d times for 15 changes", n)
	}
}
