package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// What QEMU's query-status says of a VM its guest can no longer run.
const (
	runStateInternalError = "internal-error" // e.g. KVM's "emulation failure"
	runStateGuestPanicked = "guest-panicked"
	runStateShutdown      = "shutdown"
)

// Readable reasons of state events.
const (
	reasonGuestPoweroff = "the guest powered itself off"
	reasonRequested     = "stopped as requested"
	reasonGuestPanic    = "the guest's kernel panicked"
	reasonGoneUnwatched = "qemu exited while no agent was watching it"
)

func (d *Driver) register(v *vm) {
	d.mu.Lock()
	d.vms[v.uid] = v
	delete(d.last, v.uid) // a process runs: an earlier stop is history
	d.mu.Unlock()
	go d.monitor(v)
	go d.capLogs(v)
}

// expectStop records that Polyvisor asked for the stop of h's process, so
// that its end is reported as requested rather than as a crash.
func (d *Driver) expectStop(h *hypervisor.Handle) {
	if h.PID == 0 {
		return
	}
	d.mu.Lock()
	if d.requested == nil {
		d.requested = map[string]int{}
	}
	d.requested[h.UID] = h.PID
	d.mu.Unlock()
}

// unexpectStop withdraws expectStop when the stop was given up.
func (d *Driver) unexpectStop(h *hypervisor.Handle) {
	d.mu.Lock()
	if d.requested[h.UID] == h.PID {
		delete(d.requested, h.UID)
	}
	d.mu.Unlock()
}

// noteGone records that h's process ended while no driver watched it (the
// agent was away), so the next subscription replays it as a crash. It is
// called before the handle forgets the pid.
func (d *Driver) noteGone(h *hypervisor.Handle) {
	if h.PID == 0 {
		return
	}
	d.remember(h.UID, hypervisor.StateEvent{
		State: hypervisor.StateStopped, Cause: hypervisor.CauseProcessExited,
		Reason: reasonGoneUnwatched + lastLogLine(h.Dir), PID: h.PID,
	})
}

func (d *Driver) remember(uid string, ev hypervisor.StateEvent) {
	d.mu.Lock()
	if d.last == nil {
		d.last = map[string]hypervisor.StateEvent{}
	}
	d.last[uid] = ev
	d.mu.Unlock()
}

// forget drops what the driver knows of a destroyed VM and closes its
// event subscriptions.
func (d *Driver) forget(uid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.vms, uid)
	delete(d.last, uid)
	delete(d.requested, uid)
	for ch := range d.subs[uid] {
		close(ch)
	}
	delete(d.subs, uid)
}

// monitor turns QMP events and the process's exit into StateEvents.
func (d *Driver) monitor(v *vm) {
	log := d.log.With("vm", v.uid, "pid", v.pid)
	for ev := range v.qmp.Events() {
		log.Debug("qmp event", "event", ev.Name, "data", string(ev.Data))
		switch ev.Name {
		case "MIGRATION", "MIGRATION_PASS", "JOB_STATUS_CHANGE", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR":
			v.notifyChange()
		case "STOP":
			// Paused, or halted: QEMU stops the CPUs on an internal error
			// and (with the pause action) on a guest panic too.
			if st := d.runState(v); st.State == hypervisor.StateCrashed {
				d.crash(v, st)
			} else {
				d.broadcast(v.uid, hypervisor.StateEvent{State: hypervisor.StatePaused, Reason: "paused", PID: v.pid})
			}
		case "RESUME":
			d.broadcast(v.uid, hypervisor.StateEvent{State: hypervisor.StateRunning, Reason: "resumed", PID: v.pid})
		case "GUEST_PANICKED":
			d.crash(v, hypervisor.Status{Cause: hypervisor.CauseGuestPanic, Reason: reasonGuestPanic})
		case "SHUTDOWN":
			var data struct {
				Guest  bool   `json:"guest"`
				Reason string `json:"reason"`
			}
			if json.Unmarshal(ev.Data, &data) == nil {
				if data.Reason == "" && data.Guest {
					data.Reason = "guest-shutdown" // QEMU before 4.0
				}
				v.mu.Lock()
				v.shutdown = data.Reason
				v.mu.Unlock()
			}
		}
	}
	v.mu.Lock()
	detached := v.detached
	v.mu.Unlock()
	if detached {
		return
	}
	// The connection ended: QEMU exits, or someone closed it. Wait for the
	// process; a live process means only the connection went away.
	select {
	case <-v.exited:
	case <-time.After(10 * time.Second):
		if processAlive(v.pid, v.start) {
			log.Warn("qmp connection closed but qemu still runs")
			d.mu.Lock()
			if d.vms[v.uid] == v {
				delete(d.vms, v.uid)
			}
			d.mu.Unlock()
			return
		}
	}
	v.mu.Lock()
	detached = v.detached
	v.mu.Unlock()
	if detached {
		return
	}
	ev := d.exitEvent(v)
	log.Info("qemu exited", "cause", ev.Cause, "reason", ev.Reason)
	d.mu.Lock()
	if d.vms[v.uid] == v {
		delete(d.vms, v.uid)
	}
	d.mu.Unlock()
	d.broadcast(v.uid, ev)
}

// runState asks QEMU what a VM whose CPUs stopped is doing.
func (d *Driver) runState(v *vm) hypervisor.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var st struct {
		Status string `json:"status"`
	}
	if err := v.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		return hypervisor.Status{State: hypervisor.StatePaused}
	}
	return statusOf(st.Status, v.dir)
}

// statusOf maps QEMU's run state to a power state, with the cause and
// reason of a crash; dir is the VM's directory.
func statusOf(runState, dir string) hypervisor.Status {
	switch runState {
	case "running":
		return hypervisor.Status{State: hypervisor.StateRunning}
	case runStateShutdown:
		return hypervisor.Status{State: hypervisor.StateStopped}
	case runStateInternalError:
		return hypervisor.Status{State: hypervisor.StateCrashed, Cause: hypervisor.CauseInternalError,
			Reason: "qemu halted the vm on an internal error" + internalErrorDetail(dir)}
	case runStateGuestPanicked:
		return hypervisor.Status{State: hypervisor.StateCrashed, Cause: hypervisor.CauseGuestPanic, Reason: reasonGuestPanic}
	case "io-error":
		return hypervisor.Status{State: hypervisor.StatePaused, Reason: "paused on a disk i/o error"}
	}
	// paused, prelaunch, inmigrate, ...
	return hypervisor.Status{State: hypervisor.StatePaused}
}

// crash reports, once per process, that its guest can no longer run.
func (d *Driver) crash(v *vm, st hypervisor.Status) {
	v.mu.Lock()
	seen := v.crashed
	v.crashed = true
	v.mu.Unlock()
	if seen {
		return
	}
	if st.Cause == hypervisor.CauseGuestPanic && st.Reason == "" {
		st.Reason = reasonGuestPanic
	}
	d.log.Warn("vm crashed", "vm", v.uid, "pid", v.pid, "cause", st.Cause, "reason", st.Reason)
	d.broadcast(v.uid, hypervisor.StateEvent{State: hypervisor.StateCrashed, Cause: st.Cause, Reason: st.Reason, PID: v.pid})
}

// exitEvent says why a process ended: a stop Polyvisor asked for, the
// guest's own poweroff or panic, or a crash.
func (d *Driver) exitEvent(v *vm) hypervisor.StateEvent {
	d.mu.Lock()
	requested := d.requested[v.uid] == v.pid
	if requested {
		delete(d.requested, v.uid)
	}
	d.mu.Unlock()
	v.mu.Lock()
	shutdown := v.shutdown
	v.mu.Unlock()
	ev := hypervisor.StateEvent{State: hypervisor.StateStopped, PID: v.pid}
	switch {
	case requested:
		ev.Cause, ev.Reason = hypervisor.CauseRequested, reasonRequested
	case shutdown == "guest-shutdown":
		ev.Cause, ev.Reason = hypervisor.CauseGuestPoweroff, reasonGuestPoweroff
	case shutdown == "guest-panic":
		ev.Cause, ev.Reason = hypervisor.CauseGuestPanic, reasonGuestPanic
	case shutdown == "host-signal":
		ev.Cause, ev.Reason = hypervisor.CauseProcessExited, "qemu was stopped by a signal from another program on the host"
	default:
		ev.Cause, ev.Reason = hypervisor.CauseProcessExited, "qemu exited unexpectedly"
		select {
		case <-v.exited: // reaped: its status is known
			if v.exitStatus != nil {
				ev.Reason += " (" + v.exitStatus() + ")"
			}
		default:
		}
		ev.Reason += lastLogLine(v.dir)
	}
	return ev
}

// exitText describes how a child process ended, from its Wait error.
func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("killed by signal %d, %s", int(ws.Signal()), ws.Signal())
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exit status 0"
}

func (d *Driver) broadcast(uid string, ev hypervisor.StateEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ev.State == hypervisor.StateStopped || ev.State == hypervisor.StateCrashed {
		if d.last == nil {
			d.last = map[string]hypervisor.StateEvent{}
		}
		d.last[uid] = ev
	}
	for ch := range d.subs[uid] {
		select {
		case ch <- ev:
		default:
			d.log.Warn("dropping state event for a slow reader", "vm", uid, "state", ev.State)
		}
	}
}

// Events delivers the VM's state changes (pause, resume, crash, stop and
// why) until ctx ends, across stops and starts, or until the VM is
// destroyed; the channel is then closed. Its first event replays the
// current state, with the cause of the last stop when the driver saw it
// (or found the process gone in Recover).
func (d *Driver) Events(ctx context.Context, h *hypervisor.Handle) (<-chan hypervisor.StateEvent, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	ch := make(chan hypervisor.StateEvent, 64)
	d.mu.Lock()
	if d.subs[h.UID] == nil {
		d.subs[h.UID] = map[chan hypervisor.StateEvent]bool{}
	}
	d.subs[h.UID][ch] = true
	d.mu.Unlock()
	// Subscribed first, then the state read: a change in between is
	// delivered twice rather than lost. State attaches, so events flow
	// for a VM that runs but was not yet seen.
	if ev, ok := d.replay(ctx, h); ok {
		d.mu.Lock()
		if d.subs[h.UID][ch] {
			select {
			case ch <- ev:
			default:
			}
		}
		d.mu.Unlock()
	}
	context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.subs[h.UID][ch] {
			delete(d.subs[h.UID], ch)
			if len(d.subs[h.UID]) == 0 {
				delete(d.subs, h.UID)
			}
			close(ch)
		}
	})
	return ch, nil
}

// replay is the event that tells a new subscriber the VM's state.
func (d *Driver) replay(ctx context.Context, h *hypervisor.Handle) (hypervisor.StateEvent, bool) {
	st, err := d.State(ctx, h)
	if err != nil {
		d.log.Warn("reading state for a new event subscription", "vm", h.UID, "err", err)
		return hypervisor.StateEvent{}, false
	}
	ev := hypervisor.StateEvent{State: st.State, Cause: st.Cause, Reason: st.Reason, PID: st.PID, Replay: true}
	if st.State == hypervisor.StateStopped {
		d.mu.Lock()
		last, ok := d.last[h.UID]
		d.mu.Unlock()
		if ok {
			ev.Cause, ev.Reason, ev.PID = last.Cause, last.Reason, last.PID
		}
	}
	return ev, true
}

// lastLogLine quotes the last line QEMU wrote to the VM's qemu.log after
// its start line, if any, for a reason.
func lastLogLine(dir string) string {
	lines := qemuLogLines(dir)
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("; qemu.log ends with %q", lines[len(lines)-1])
}

// internalErrorDetail returns ": " and QEMU's own words about an internal
// error ("KVM internal error. Suberror: 1", "emulation failure"), read
// from the VM's qemu.log.
func internalErrorDetail(dir string) string {
	var found []string
	for _, l := range qemuLogLines(dir) {
		low := strings.ToLower(l)
		if strings.Contains(low, "internal error") || strings.Contains(low, "emulation failure") {
			found = append(found, l)
		}
	}
	if len(found) == 0 {
		return ""
	}
	return ": " + strings.Join(found, "; ")
}

// qemuLogLines returns the lines of the last QEMU run in the VM's
// qemu.log (what follows Polyvisor's start line), at most the last 4 KiB.
// Register dumps and timestamps are left out; lines are cut to 200 bytes.
func qemuLogLines(dir string) []string {
	b, err := readTail(filepath.Join(dir, qemuLog), 4096)
	if err != nil {
		return nil
	}
	if i := bytes.LastIndex(b, []byte("--- polyvisor: starting")); i >= 0 {
		if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
			b = b[i+j+1:]
		} else {
			b = nil
		}
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(stripTimestamp(l))
		if l == "" || registerDump(l) {
			continue
		}
		if len(l) > 200 {
			l = l[:200]
		}
		out = append(out, l)
	}
	return out
}

// stripTimestamp drops the "2026-12-05T10:00:00.000000Z " that -msg
// timestamp=on puts before QEMU's messages.
func stripTimestamp(l string) string {
	if len(l) > 20 && l[4] == '-' && l[10] == 'T' {
		if _, rest, ok := strings.Cut(l, " "); ok {
			return rest
		}
	}
	return l
}

// registerDump tells the CPU register lines QEMU prints after a KVM
// internal error ("RAX=... RBX=...", "ES =0000 ...") from its messages.
func registerDump(l string) bool {
	return strings.Count(l, "=") >= 2 && !strings.Contains(l, " error")
}

// statusWithPID fills what State reports of a live process.
func statusWithPID(s hypervisor.Status, h *hypervisor.Handle) hypervisor.Status {
	s.PID = h.PID
	s.StartedAt = startedAt(h.PIDStart)
	s.Serial = h.Extra[extraSerial]
	s.VNC = h.Extra[extraVNC]
	return s
}
