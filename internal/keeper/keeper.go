// Package keeper is a host's HA watchdog, a process apart from the agent
// (`polyvisor keeper`), as Proxmox's watchdog-mux is for its HA manager
// (docs/HA.md). The agent feeds it through a unix socket in its state
// directory: T_fence and the time it sent each heartbeat the server
// answered, and the processes of its HA VMs. When no answered heartbeat
// was sent in the last T_fence (the agent is dead, hung or cut off) the
// keeper kills those processes, all in one pass, through pidfds opened
// when it was told of them (so a reused PID is never signalled), and
// records it. It times on CLOCK_BOOTTIME, the same clock the agent stamps
// its heartbeats with, which also runs while the host is suspended.
//
// The agent reports in each heartbeat whether its keeper is armed; the
// leader restarts a silent host's HA VMs on its silence alone only when
// the last heartbeat said so.
package keeper

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Proc is one HA VM's process, as the agent knows it.
type Proc struct {
	UID  string `json:"uid"`
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid"`
	// Start is the process's start time in clock ticks since boot (field
	// 22 of /proc/<pid>/stat): with the PID, it names one process.
	Start uint64 `json:"start"`
}

func (p Proc) String() string { return fmt.Sprintf("%s (pid %d)", p.Name, p.PID) }

// Feed is one message from the agent to its keeper.
type Feed struct {
	// Contact, when not zero, is when the agent sent a heartbeat the
	// server answered, in nanoseconds of CLOCK_BOOTTIME; TimeoutMS is
	// T_fence as that answer said (0: HA is off, the keeper disarms).
	Contact   int64 `json:"contact,omitempty"`
	TimeoutMS int64 `json:"timeoutMS,omitempty"`
	// Known says VMs is the whole set of the host's HA VMs' processes;
	// without it the keeper keeps the set it had (an agent that just
	// started does not know which VMs are HA until its watch synced).
	Known bool   `json:"known,omitempty"`
	VMs   []Proc `json:"vms,omitempty"`
}

// State is the keeper's answer to each feed.
type State struct {
	// Armed: the keeper knows T_fence, a recent contact and the set of
	// HA VMs, and kills them if no newer contact comes by the deadline.
	Armed bool `json:"armed"`
	// Message says why it is not armed, or what it guards.
	Message string `json:"message,omitempty"`
	// Guarded is how many HA VM processes it holds.
	Guarded int `json:"guarded"`
	// DeadlineInMS is how long until it fires (armed only).
	DeadlineInMS int64 `json:"deadlineInMS,omitempty"`
	// Fired is its last firing since it started, if any.
	Fired *Firing `json:"fired,omitempty"`
	// Refused names the processes of the last set it could not take
	// (gone, or not the process the agent named).
	Refused []string `json:"refused,omitempty"`
}

// Firing is one time the keeper killed the HA VMs.
type Firing struct {
	At time.Time `json:"at"`
	// Silent is how long after the last contact it fired.
	SilentMS int64    `json:"silentMS"`
	Killed   []string `json:"killed,omitempty"`
	Failed   []string `json:"failed,omitempty"`
}

// Watch is the keeper's decisions, on a clock its caller gives (CLOCK_BOOTTIME
// since boot): no I/O, so that they are tested on a fake one.
type Watch struct {
	timeout time.Duration // T_fence; 0: unknown or off
	contact time.Duration // when the last answered heartbeat was sent; 0: none
	known   bool          // the set of HA VMs was told at least once
	procs   map[string]Proc
	fired   bool // fired for the current contact
	last    *Firing
}

// NewWatch is a keeper that knows nothing yet: unarmed.
func NewWatch() *Watch { return &Watch{procs: map[string]Proc{}} }

// Contact records an answered heartbeat sent at sent with T_fence timeout.
// An older contact than the one held never moves the deadline back.
func (w *Watch) Contact(sent, timeout time.Duration) {
	w.timeout = max(timeout, 0)
	if sent > w.contact {
		w.contact = sent
		w.fired = false
	}
}

// SetProcs replaces the set of HA VM processes.
func (w *Watch) SetProcs(procs []Proc) {
	w.known = true
	w.procs = make(map[string]Proc, len(procs))
	for _, p := range procs {
		w.procs[p.UID] = p
	}
}

// Procs are the HA VM processes held, by UID order.
func (w *Watch) Procs() []Proc {
	out := make([]Proc, 0, len(w.procs))
	for _, p := range w.procs {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Proc) int { return strings.Compare(a.UID, b.UID) })
	return out
}

// Drop forgets one process (gone, or killed).
func (w *Watch) Drop(uid string) { delete(w.procs, uid) }

// deadline is when the keeper fires; ok false when it cannot.
func (w *Watch) deadline() (time.Duration, bool) {
	if w.timeout <= 0 || w.contact <= 0 {
		return 0, false
	}
	return w.contact + w.timeout, true
}

// Due tells whether the keeper must fire at now: T_fence has passed since
// the last answered heartbeat was sent, and it has not fired for it.
// It fires even with no process held, so that its record says when the
// host lost contact.
func (w *Watch) Due(now time.Duration) bool {
	d, ok := w.deadline()
	return ok && !w.fired && now >= d
}

// Fired records a firing at now (wall time at): the processes killed
// are dropped, those that could not be killed kept for the next check.
func (w *Watch) Fired(now time.Duration, at time.Time, killed, failed []Proc) Firing {
	w.fired = true
	f := Firing{At: at.UTC(), SilentMS: (now - w.contact).Milliseconds()}
	for _, p := range killed {
		f.Killed = append(f.Killed, p.String())
		delete(w.procs, p.UID)
	}
	for _, p := range failed {
		f.Failed = append(f.Failed, p.String())
	}
	if len(failed) > 0 {
		w.fired = false // try again at the next check
	}
	w.last = &f
	return f
}

// State is what the keeper says at now.
func (w *Watch) State(now time.Duration) State {
	st := State{Guarded: len(w.procs), Fired: w.last}
	d, ok := w.deadline()
	switch {
	case w.timeout <= 0 && w.contact > 0:
		st.Message = "HA is off on the server (T_fence 0)"
	case !ok:
		st.Message = "waiting for an answered heartbeat"
	case !w.known:
		st.Message = "waiting for the agent's list of HA vms"
	case w.fired || now >= d:
		st.Message = "fired: the control plane has not answered for T_fence"
	default:
		st.Armed = true
		st.DeadlineInMS = (d - now).Milliseconds()
		st.Message = fmt.Sprintf("armed: kills %d HA vm process(es) T_fence (%v) after the last answered heartbeat", len(w.procs), w.timeout)
	}
	return st
}
