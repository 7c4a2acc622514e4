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
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second, OnTimeout: true}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	last := c.now()
	// Silent, but for less than T_fence: nothing, HA VMs or not.
	for _, d := range []time.Duration{0, time.Second, 2999 * time.Millisecond} {
		c.t = last.Add(d)
		if got := tm.Decide(c.now(), last, nil, true, false, true); got != Nothing {
			t.Errorf("silent %s: %s, want nothing", d, got)
		}
	}
	// At T_fence: suspect, only with HA VMs.
	c.t = last.Add(3 * time.Second)
	if got := tm.Decide(c.now(), last, nil, true, false, true); got != Suspect {
		t.Errorf("silent T_fence: %s, want suspect", got)
	}
	if got := tm.Decide(c.now(), last, nil, false, false, true); got != Nothing {
		t.Errorf("silent T_fence without HA vms: %s, want nothing", got)
	}
	f := pending(last, tm)
	// Pending: nothing until T_fence + margin.
	c.advance(999 * time.Millisecond)
	if got := tm.Decide(c.now(), last, f, true, false, true); got != Nothing {
		t.Errorf("pending before the deadline: %s, want nothing", got)
	}
	// The hook's success fences before the deadline.
	if got := tm.Decide(c.now(), last, f, true, true, true); got != Fence {
		t.Errorf("pending, hook ok: %s, want fence", got)
	}
	c.advance(time.Millisecond)
	if got := tm.Decide(c.now(), last, f, true, false, true); got != Fence {
		t.Errorf("pending at T_fence+margin: %s, want fence", got)
	}
	// Fenced: restart what is left, nothing once nothing is.
	ff := &api.HostFence{State: api.FenceFenced}
	if got := tm.Decide(c.now(), last, ff, true, false, true); got != Restart {
		t.Errorf("fenced with HA vms: %s, want restart", got)
	}
	if got := tm.Decide(c.now(), last, ff, false, false, true); got != Nothing {
		t.Errorf("fenced without HA vms: %s, want nothing", got)
	}
	// Returned: judged afresh.
	rf := &api.HostFence{State: api.FenceReturned}
	if got := tm.Decide(c.now(), c.now(), rf, true, false, true); got != Nothing {
		t.Errorf("returned and heartbeating: %s, want nothing", got)
	}
}

// A heartbeat heard while pending, even one the record has not caught
// up with, stops the fencing; one that stays late beyond the deadline
// measured from it fences.
func TestDecideLateHeartbeat(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second, OnTimeout: true}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	first := c.now()
	f := pending(first, tm)
	c.advance(3500 * time.Millisecond)
	late := c.now() // a slow heartbeat arrives
	c.advance(600 * time.Millisecond)
	if got := tm.Decide(c.now(), late, f, true, false, true); got != Nothing {
		t.Errorf("a heartbeat since the pending record: %s, want nothing", got)
	}
	// The deadline moves with the newest heartbeat.
	c.t = late.Add(3999 * time.Millisecond)
	if got := tm.Decide(c.now(), late, f, true, false, true); got != Nothing {
		t.Errorf("before T_fence+margin from the newest heartbeat: %s, want nothing", got)
	}
	c.t = late.Add(4 * time.Second)
	if got := tm.Decide(c.now(), late, f, true, false, true); got != Fence {
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
		if got := tm.Decide(c.now(), last, nil, true, false, true); got != Nothing {
			t.Fatalf("round %d, silent %s: %s", i, c.now().Sub(last), got)
		}
		if c.now().Sub(last) >= 2900*time.Millisecond {
			last = c.now() // the late heartbeat arrives
		}
	}
}

// With fencing on timeout off, a host's silence alone never fences it,
// keeper armed or not. Past the deadline it is unknown, and stays so;
// only the hook's word that it is powered off fences it, before the
// deadline or after.
func TestDecideNoFenceOnTimeoutWhenOff(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second}
	c := &clock{t: time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)}
	last := c.now()
	c.advance(3 * time.Second)
	if got := tm.Decide(c.now(), last, nil, true, false, true); got != Suspect {
		t.Fatalf("silent T_fence: %s, want suspect", got)
	}
	f := pending(last, tm)
	for _, d := range []time.Duration{time.Second, time.Minute, time.Hour} {
		c.t = last.Add(3*time.Second + d)
		if got := tm.Decide(c.now(), last, f, true, false, true); got != Unknown {
			t.Errorf("pending, silent %s past T_fence, no hook: %s, want unknown", d, got)
		}
	}
	u := &api.HostFence{State: api.FenceUnknown, LastHeartbeat: last, Deadline: tm.Deadline(last)}
	if got := tm.Decide(c.now(), last, u, true, false, true); got != Nothing {
		t.Errorf("unknown, no hook: %s, want nothing", got)
	}
	if got := tm.Decide(c.now(), last, u, true, true, true); got != Fence {
		t.Errorf("unknown, hook reported it powered off: %s, want fence", got)
	}
	if got := tm.Decide(last.Add(3500*time.Millisecond), last, f, true, true, true); got != Fence {
		t.Errorf("pending, hook reported it powered off: %s, want fence", got)
	}
}

// Check reads a host's HA VMs only when the host is being fenced or has
// been silent for T_fence: everywhere else, the decision must not depend
// on them.
func TestDecideNeedsHAVMsOnlyWhenFencingOrSilent(t *testing.T) {
	base := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	for _, tm := range []Timings{
		{FenceTimeout: 3 * time.Second, Margin: time.Second, OnTimeout: true},
		{FenceTimeout: 3 * time.Second, Margin: time.Second},
	} {
		for silent := time.Duration(0); silent < tm.FenceTimeout; silent += 100 * time.Millisecond {
			for _, hook := range []bool{false, true} {
				with := tm.Decide(base.Add(silent), base, nil, true, hook, true)
				without := tm.Decide(base.Add(silent), base, nil, false, hook, true)
				if with != without {
					t.Errorf("no fence record, silent %s, hook %v: %s with HA vms, %s without", silent, hook, with, without)
				}
			}
		}
	}
}

// A host whose last heartbeat did not say its keeper was armed is never
// fenced on its silence alone, fencing on timeout on or not: its agent
// may have crashed while its QEMUs run on, and nothing kills them. Past
// the deadline it is unknown; the hook's word still fences it. With the
// keeper armed, the same host is fenced at T_fence + margin, not before.
func TestDecideTimeoutNeedsArmedKeeper(t *testing.T) {
	tm := Timings{FenceTimeout: 3 * time.Second, Margin: time.Second, OnTimeout: true}
	last := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	if got := tm.Decide(last.Add(3*time.Second), last, nil, true, false, false); got != Suspect {
		t.Fatalf("silent T_fence, keeper unarmed: %s, want suspect (the hook runs)", got)
	}
	f := pending(last, tm)
	for _, d := range []time.Duration{time.Second, time.Minute, time.Hour} {
		now := last.Add(3*time.Second + d)
		if got := tm.Decide(now, last, f, true, false, false); got != Unknown {
			t.Errorf("pending, silent %s past T_fence, keeper unarmed: %s, want unknown", d, got)
		}
		if got := tm.Decide(now, last, f, true, true, false); got != Fence {
			t.Errorf("pending, keeper unarmed, hook reported it off: %s, want fence", got)
		}
		if got := tm.Decide(now, last, f, true, false, true); got != Fence {
			t.Errorf("pending, silent %s past T_fence, keeper armed: %s, want fence", d, got)
		}
	}
	if got := tm.Decide(last.Add(3999*time.Millisecond), last, f, true, false, true); got != Nothing {
		t.Errorf("pending before T_fence + margin, keeper armed: %s, want nothing", got)
	}
	u := &api.HostFence{State: api.FenceUnknown, LastHeartbeat: last, Deadline: tm.Deadline(last)}
	if got := tm.Decide(last.Add(time.Hour), last, u, true, false, true); got != Nothing {
		t.Errorf("unknown: %s, want nothing (an unknown host stays so until the hook's word or its heartbeat)", got)
	}
}
