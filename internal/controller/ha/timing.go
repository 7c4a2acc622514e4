// Package ha restarts the VMs of a lost host on other hosts, once the lost
// host is known not to run them (docs/HA.md). It runs on the leader only,
// every write fenced by the leader's term.
//
// The argument, in short: a fence hook that reports the host powered
// off fences it. Without one, the host's silence alone fences it when
// the host's last heartbeat said its keeper was armed (and fencing on
// timeout is not turned off, Timings.OnTimeout): the keeper, a process
// apart from the agent (package keeper), kills the host's HA VMs when no
// heartbeat the agent sent has been answered for T_fence, counted from
// when it sent the last answered one, whether the agent runs or not; the
// agent does the same while it runs. The leader counts from when it
// received that heartbeat (later), and waits T_fence and a margin. A host
// whose keeper was not armed (dead, or not yet fed) is only marked
// unknown: QEMU outlives a crashed or stopped agent. A heartbeat that
// arrives while the leader waits changes the host's record, which the
// leader's fencing write is conditional on: it is refused and nothing
// moves.
package ha

import (
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Timings are the fencing's durations.
type Timings struct {
	// FenceTimeout is T_fence: how long an agent goes without an
	// answered heartbeat before it kills its HA VMs.
	FenceTimeout time.Duration
	// Margin is what the leader waits beyond T_fence: it covers the
	// agent's kill, clock rate differences and heartbeats other servers
	// received and had not yet shared.
	Margin time.Duration
	// OnTimeout lets the leader fence a host on its silence alone, at
	// T_fence and the margin, when the host's last heartbeat said its
	// keeper was armed: the keeper, apart from the agent, has killed its
	// HA VMs by then. Off, only a fence hook that reports the host
	// powered off fences it. Either way a silent host without a hook's
	// word whose keeper was not armed is marked unknown and its HA VMs
	// are not restarted: an agent that crashed, hung or was stopped kills
	// nothing, and its QEMUs outlive it.
	OnTimeout bool
}

// Deadline is when a host last heard of at last counts as fenced without
// a hook: T_fence and the margin after it.
func (t Timings) Deadline(last time.Time) time.Time { return last.Add(t.FenceTimeout + t.Margin) }

// Step is what the leader does with a host.
type Step int

const (
	// Nothing: the host heartbeats, or has no fencing to do.
	Nothing Step = iota
	// Suspect: record the host's fencing as pending (and run the fence
	// hook, if any).
	Suspect
	// Fence: mark the host fenced; its HA VMs may run elsewhere.
	Fence
	// Restart: the host is fenced; restart its HA VMs still placed on it.
	Restart
	// Unknown: the host is silent past T_fence and the margin, but
	// nothing confirmed it powered off and fencing on timeout alone is
	// off: record it as unknown; its HA VMs stay where they are.
	Unknown
)

func (s Step) String() string {
	switch s {
	case Suspect:
		return "suspect"
	case Fence:
		return "fence"
	case Restart:
		return "restart"
	case Unknown:
		return "unknown"
	}
	return "nothing"
}

// Decide is the leader's decision for one host at now: last is the
// newest heartbeat the leader knows of (never before its term began),
// haVMs whether
// HA VMs are placed on it, hookOK whether the fence hook reported the
// host powered off in this episode, and armed whether the host's last
// heartbeat said its keeper was armed. It is pure: the controller's clock
// and the store are its caller's.
func (t Timings) Decide(now, last time.Time, f *api.HostFence, haVMs, hookOK, armed bool) Step {
	silent := now.Sub(last)
	state := ""
	if f != nil {
		state = f.State
	}
	switch state {
	case api.FenceFenced:
		if haVMs {
			return Restart
		}
		return Nothing
	case api.FencePending:
		// A heartbeat newer than the one the pending record was made
		// from means the host is alive: the heartbeat's own write ends
		// the record, and the fencing write would be refused anyway.
		if last.After(f.LastHeartbeat) && silent < t.FenceTimeout {
			return Nothing
		}
		switch {
		case hookOK:
			return Fence
		case now.Before(t.Deadline(last)):
			return Nothing
		case t.OnTimeout && armed:
			return Fence
		}
		return Unknown
	case api.FenceUnknown:
		// Only a hook's late word that the host is off fences it now.
		if hookOK {
			return Fence
		}
		return Nothing
	}
	// Not fencing: a host only slow (heartbeats late, but within
	// T_fence) is never suspected, whatever liveness says. At T_fence
	// its agent, if it runs, has killed its HA VMs; the hook, if any,
	// runs now, and its success saves the margin.
	if haVMs && silent >= t.FenceTimeout {
		return Suspect
	}
	return Nothing
}
