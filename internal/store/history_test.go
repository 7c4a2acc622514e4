package store

import (
	"errors"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestFollowReplaysAndGoesOn: following after a revision gives every
// change made since, in revision order and of the kinds asked for, then
// each new change; ChangeOf decodes them as Subscribe would have.
func TestFollowReplaysAndGoesOn(t *testing.T) {
	ts := openStore(t, embeddedConfig(t))
	ctx := testCtx(t)
	vm := func(name string, cpus int) *api.VM {
		return &api.VM{Meta: api.Meta{Name: name}, Spec: api.VMSpec{VCPUs: cpus}}
	}
	start := ts.Rev()
	revA, err := ts.vms.Create(ctx, "a", vm("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.hosts.Create(ctx, "h", &api.Host{Meta: api.Meta{Name: "h"}}); err != nil {
		t.Fatal(err)
	}
	revA2, err := ts.vms.Update(ctx, "a", vm("a", 2), revA)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.vms.Delete(ctx, "a", revA2); err != nil {
		t.Fatal(err)
	}

	recs, errc, after, err := ts.Follow(ctx, start, "vms")
	if err != nil {
		t.Fatalf("follow from %d: %v", start, err)
	}
	if after != start {
		t.Fatalf("follows after %d, want %d", after, start)
	}
	next := func() Record {
		t.Helper()
		select {
		case r, ok := <-recs:
			if !ok {
				t.Fatalf("records ended: %v", <-errc)
			}
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no record within 10 s")
		}
		return Record{}
	}
	type want struct {
		typ     ChangeType
		created bool
		cpus    int
		prev    int // the CPUs of Prev; 0 for none
	}
	for i, w := range []want{{Put, true, 1, 0}, {Put, false, 2, 1}, {Delete, false, 2, 0}} {
		r := next()
		ch, ok := ts.vms.ChangeOf(r)
		if !ok || r.Kind != "vms" || r.Name != "a" || r.Type != w.typ || r.Created != w.created || ch.Obj.Spec.VCPUs != w.cpus {
			t.Fatalf("record %d: %+v (change ok %v, %+v), want %+v", i, r, ok, ch, w)
		}
		if got := 0; w.prev != 0 {
			if ch.Prev != nil {
				got = ch.Prev.Spec.VCPUs
			}
			if got != w.prev {
				t.Fatalf("record %d: prev has %d CPUs, want %d", i, got, w.prev)
			}
		} else if w.typ == Put && ch.Prev != nil {
			t.Fatalf("record %d: a created object has a Prev", i)
		}
		if i > 0 && ch.Obj.Version == 0 {
			t.Fatalf("record %d: no version", i)
		}
	}
	if _, ok := ts.hosts.ChangeOf(Record{Kind: "vms", Value: []byte("{}")}); ok {
		t.Fatal("hosts decoded a record of vms")
	}
	// New changes follow the replay.
	rev, err := ts.vms.Create(ctx, "b", vm("b", 3))
	if err != nil {
		t.Fatal(err)
	}
	if r := next(); r.Name != "b" || r.Rev != rev {
		t.Fatalf("live record %+v, want b at %d", r, rev)
	}
}

// TestFollowRefusesLostAndFutureRevisions: a revision compacted away, or
// one not reached yet, is refused with an error saying which.
func TestFollowRefusesLostAndFutureRevisions(t *testing.T) {
	ts := openStore(t, embeddedConfig(t))
	ctx := testCtx(t)
	old := ts.Rev()
	for i := range 3 {
		if _, err := ts.hosts.Create(ctx, string(rune('a'+i)), &api.Host{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := ts.Follow(ctx, ts.Rev()+1000); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("follow from the future: %v, want ErrFutureRevision", err)
	}
	if _, err := ts.Client().Compact(ctx, ts.Rev()); err != nil {
		t.Fatalf("compacting: %v", err)
	}
	if _, _, _, err := ts.Follow(ctx, old); !errors.Is(err, ErrCompacted) {
		t.Fatalf("follow from a compacted revision: %v, want ErrCompacted", err)
	}
	recs, _, after, err := ts.Follow(ctx, 0)
	if err != nil || after != ts.Rev() {
		t.Fatalf("follow from now: after %d (store at %d), %v", after, ts.Rev(), err)
	}
	select {
	case r := <-recs:
		t.Fatalf("a record before any change: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
}
