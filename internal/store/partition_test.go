package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// hostsOf keys a VM by its host and the host it migrates to.
func hostsOf(vm *api.VM) []string {
	keys := []string{vm.Spec.Host}
	if vm.Spec.Migration != nil {
		keys = append(keys, vm.Spec.Migration.Target)
	}
	return keys
}

func placedVM(name, host string) *api.VM {
	v := newVM(name)
	v.Spec.Host = host
	return v
}

// testPartition: a partition holds what the index holds, per key, from
// before it was made and after; each key's subscriber gets the changes of
// the objects under that key (including the one that takes an object away
// and its deletion) and no other; keys are computed once per write, not
// once per subscriber.
func testPartition(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	for _, n := range []string{"old-1", "old-2"} {
		if _, err := s.vms.Create(ctx, n, placedVM(n, "h1")); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	var keyed atomic.Int64
	p := NewPartition(s.vms, func(vm *api.VM) []string { keyed.Add(1); return hostsOf(vm) })
	if got := names(p.List("h1")); !slices.Equal(got, []string{"old-1", "old-2"}) {
		t.Fatalf("h1 after load = %v", got)
	}
	keyed.Store(0)
	subs := map[string]<-chan Change[api.VM]{}
	for i := range 50 {
		h := fmt.Sprintf("h%d", i)
		subs[h] = p.Subscribe(ctx, h)
	}
	a, err := s.vms.Create(ctx, "a", placedVM("a", "h1"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	mig := placedVM("a", "h1")
	mig.Spec.Migration = &api.Migration{Target: "h2"}
	a, err = s.vms.Update(ctx, "a", mig, a) // concerns h1 and h2
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	a, err = s.vms.Update(ctx, "a", placedVM("a", "h2"), a) // left h1
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if err := s.vms.Delete(ctx, "old-1", 0); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := s.vms.Delete(ctx, "a", a); err != nil {
		t.Fatalf("delete: %v", err)
	}
	type seen struct {
		typ  ChangeType
		name string
		host string
	}
	want := map[string][]seen{
		"h1": {{Put, "a", "h1"}, {Put, "a", "h1"}, {Put, "a", "h2"}, {Delete, "old-1", "h1"}},
		"h2": {{Put, "a", "h1"}, {Put, "a", "h2"}, {Delete, "a", "h2"}},
	}
	for h, w := range want {
		got := recv(t, subs[h], len(w))
		for i, c := range got {
			if c.Type != w[i].typ || c.Name != w[i].name || c.Obj.Spec.Host != w[i].host {
				t.Errorf("%s change %d: %v %s on %s, want %v", h, i, c.Type, c.Name, c.Obj.Spec.Host, w[i])
			}
			if i > 0 && c.Rev <= got[i-1].Rev {
				t.Errorf("%s change %d at revision %d after %d", h, i, c.Rev, got[i-1].Rev)
			}
		}
	}
	// A later change to h1 shows nothing else was queued for the others.
	if _, err := s.vms.Create(ctx, "z", placedVM("z", "h1")); err != nil {
		t.Fatalf("create: %v", err)
	}
	recv(t, subs["h1"], 1)
	for h, ch := range subs {
		select {
		case c := <-ch:
			t.Errorf("%s got an extra change: %v %s on %s", h, c.Type, c.Name, c.Obj.Spec.Host)
		default:
		}
	}
	if n := keyed.Load(); n != 4 { // a deletion reuses the keys it was held by
		t.Errorf("keys computed %d times for 4 puts and 50 subscribers", n)
	}
	if got := names(p.List("h1")); !slices.Equal(got, []string{"old-2", "z"}) {
		t.Errorf("h1 = %v, want [old-2 z]", got)
	}
	if n := p.Count("h2"); n != 0 {
		t.Errorf("h2 holds %d objects after its only one was deleted", n)
	}
}

// testPartitionBuiltUnderWrites: a partition made while other writers
// create, move and delete objects holds, once they stop, exactly what a
// scan of the index finds for every key.
func testPartitionBuiltUnderWrites(t *testing.T, mk configFunc) {
	ctx := testCtx(t)
	s := openStore(t, mk(t))
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; wctx.Err() == nil; i++ {
				name := fmt.Sprintf("w%d-%d", w, i%20)
				host := fmt.Sprintf("h%d", i%7)
				if cur, ok := s.vms.Get(name); ok {
					if i%3 == 0 {
						_ = s.vms.Delete(ctx, name, cur.Version)
					} else {
						_, _ = s.vms.Update(ctx, name, placedVM(name, host), cur.Version)
					}
					continue
				}
				_, _ = s.vms.Create(ctx, name, placedVM(name, host))
			}
		}()
	}
	var parts []*Partition[api.VM]
	for range 5 {
		parts = append(parts, NewPartition(s.vms, hostsOf))
	}
	stop()
	wg.Wait()
	// One more write, seen by the index, orders after every write above.
	rev, err := s.vms.Create(ctx, "last", placedVM("last", "h0"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := s.WaitRev(ctx, rev); err != nil {
		t.Fatalf("wait: %v", err)
	}
	for i, p := range parts {
		for h := range 7 {
			host := fmt.Sprintf("h%d", h)
			want := names(s.vms.Select(func(vm *api.VM) bool { return slices.Contains(hostsOf(vm), host) }))
			if got := names(p.List(host)); !slices.Equal(got, want) {
				t.Errorf("partition %d, %s = %v, index has %v", i, host, got, want)
			}
		}
	}
}

// TestPartitionSkipsWhatItAlreadyHolds: a change published while the
// partition read the index reaches it again afterwards. Replayed, an older
// Put must not replace a newer object, a Put of an object deleted since
// must not bring it back even for a moment, and neither is told to
// subscribers.
func TestPartitionSkipsWhatItAlreadyHolds(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, embeddedConfig(t))
	r1, err := s.vms.Create(ctx, "a", placedVM("a", "h1"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	r2, err := s.vms.Update(ctx, "a", placedVM("a", "h2"), r1)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	gone, err := s.vms.Create(ctx, "gone", placedVM("gone", "h1"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := s.vms.Delete(ctx, "gone", gone); err != nil {
		t.Fatalf("delete: %v", err)
	}
	p := NewPartition(s.vms, hostsOf)
	h1 := p.Subscribe(ctx, "h1")
	// Replays of what the index already had when the partition read it.
	p.observe(Change[api.VM]{Type: Put, Name: "a", Obj: placedVM("a", "h1"), Rev: r1})
	p.observe(Change[api.VM]{Type: Put, Name: "a", Obj: placedVM("a", "h2"), Prev: placedVM("a", "h1"), Rev: r2})
	p.observe(Change[api.VM]{Type: Put, Name: "gone", Obj: placedVM("gone", "h1"), Rev: gone})
	if got := names(p.List("h1")); len(got) != 0 {
		t.Errorf("h1 = %v after replays, want nothing", got)
	}
	if got := names(p.List("h2")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("h2 = %v after replays, want [a]", got)
	}
	p.observe(Change[api.VM]{Type: Delete, Name: "gone", Obj: placedVM("gone", "h1"), Rev: gone + 1})
	select {
	case c := <-h1:
		t.Errorf("a replay was told to h1's subscriber: %v %s", c.Type, c.Name)
	default:
	}
}

// TestPartitionDeliversAfterObservers: what a partition's subscriber is
// told, every observer of the collection has seen, even one registered
// after the partition was made (a host told of its VM asks the server
// about it at once, and the server's answer comes from an observer).
func TestPartitionDeliversAfterObservers(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, embeddedConfig(t))
	p := NewPartition(s.vms, hostsOf)
	var seen sync.Map
	s.vms.Observe(func(c Change[api.VM]) {
		if _, ok := seen.Load(c.Name); !ok && c.Name == "slow" {
			time.Sleep(100 * time.Millisecond) // a busy observer
		}
		seen.Store(c.Name, true)
	})
	h1 := p.Subscribe(ctx, "h1")
	// Checked as each change arrives: a create returns only once every
	// observer has seen it, so checking after it would prove nothing.
	unseen := make(chan string, 2)
	go func() {
		for range 2 {
			c := <-h1
			_, ok := seen.Load(c.Name)
			if !ok {
				unseen <- c.Name
			} else {
				unseen <- ""
			}
		}
	}()
	for _, n := range []string{"slow", "b"} {
		if _, err := s.vms.Create(ctx, n, placedVM(n, "h1")); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	for range 2 {
		select {
		case n := <-unseen:
			if n != "" {
				t.Errorf("%s reached the partition's subscriber before the observer saw it", n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the partition's subscriber was not told of both creates")
		}
	}
}
