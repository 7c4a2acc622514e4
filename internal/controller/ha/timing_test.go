package ha

import (
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// clock is a fake clock for the timing logic.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func pending(last time.Time, t Timings) *api.HostFence {
	return &api.HostFence{State: api.FencePending, LastHeartbeat: last, Deadline: t.Deadline(last)}
}

func TestDecideTimeline(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	last := c.now()
	// Silent, but for less than T_fence: nothing, HA VMs or not.
	for _, d := range []time.Duration{0, time.Second, 2999 * time.Millisecond} {
		c.t = last.Add(d)
		if got := tm.Decide(c.now(), last, nil, true, false); got != Nothing {
			t.Errorf("silent %s: %s, want nothing", d, got)
		}
	}
	// At T_fence: suspect, only with HA VMs.
	c.t = last.Add(3 * time.Second)
	if got := tm.Decide(c.now(), last, nil, true, false); got != Suspect {
		t.Errorf("silent T_fence: %s, want suspect", got)
	}
	if got := tm.Decide(c.now(), last, nil, false, false); got != Nothing {
		t.Errorf("silent T_fence without HA vms: %s, want nothing", got)
	}
	f := pending(last, tm)
	// Pending: nothing until T_fence + margin.
	c.advance(999 * time.Millisecond)
	if got := tm.Decide(c.now(), last, f, true, false); got != Nothing {
		t.Errorf("pending before the deadline: %s, want nothing", got)
	}
	// The hook's success fences before the deadline.
	if got := tm.Decide(c.now(), last, f, true, true); got != Fence {
		t.Errorf("pending, hook ok: %s, want fence", got)
	}
	c.advance(time.Millisecond)
	if got := tm.Decide(c.now(), last, f, true, false); got != Fence {
		t.Errorf("pending at T_fence+margin: %s, want fence", got)
	}
	// Fenced: restart what is left, nothing once nothing is.
	ff := &api.HostFence{State: api.FenceFenced}
	if got := tm.Decide(c.now(), last, ff, true, false); got != Restart {
		t.Errorf("fenced with HA vms: %s, want restart", got)
	}
	if got := tm.Decide(c.now(), last, ff, false, false); got != Nothing {
		t.Errorf("fenced without HA vms: %s, want nothing", got)
	}
	// Returned: judged afresh.
	rf := &api.HostFence{State: api.FenceReturned}
	if got := tm.Decide(c.now(), c.now(), rf, true, false); got != Nothing {
		t.Errorf("returned and heartbeating: %s, want nothing", got)
	}
}

// A heartbeat heard while pending, even one the record has not caught
// up with, stops the fencing; one that stays late beyond the deadline
// measured from it fences.
func TestDecideLateHeartbeat(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	first := c.now()
	f := pending(first, tm)
	c.advance(3500 * time.Millisecond)
	late := c.now() // a slow heartbeat arrives
	c.advance(600 * time.Millisecond)
	if got := tm.Decide(c.now(), late, f, true, false); got != Nothing {
		t.Errorf("a heartbeat since the pending record: %s, want nothing", got)
	}
	// The deadline moves with the newest heartbeat.
	c.t = late.Add(3999 * time.Millisecond)
	if got := tm.Decide(c.now(), late, f, true, false); got != Nothing {
		t.Errorf("before T_fence+margin from the newest heartbeat: %s, want nothing", got)
	}
	c.t = late.Add(4 * time.Second)
	if got := tm.Decide(c.now(), late, f, true, false); got != Fence {
		t.Errorf("at T_fence+margin from the newest heartbeat: %s, want fence", got)
	}
}

// A host whose heartbeats are each late by less than T_fence is never
// suspected, over many rounds.
func TestDecideSlowHostNeverSuspected(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	last := c.now()
	for i := range 1000 {
		c.advance(100 * time.Millisecond)
		if got := tm.Decide(c.now(), last, nil, true, false); got != Nothing {
			t.Fatalf("round %d, silent %s: %s", i, c.now().Sub(last), got)
		}
		if c.now().Sub(last) >= 2900*time.Millisecond {
			last = c.now() // the late heartbeat arrives
		}
	}
}
