package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// A VM that ran this long before it crashed starts its crash count afresh.
const crashResetAfter = 10 * time.Minute

// subscribe follows the driver's events for the VM for the rest of the
// worker's life, across stops and starts. The driver replays the current
// state first, so nothing between a start (or an agent restart) and the
// subscription is lost.
func (w *worker) subscribe() {
	w.unsubscribe()
	h := w.currentHandle()
	if h == nil {
		return
	}
	ctx, cancel := context.WithCancel(w.runCtx)
	ch, err := w.a.driver.Events(ctx, h)
	if err != nil {
		cancel()
		w.log.Warn("following vm events", "err", err)
		return
	}
	w.events, w.stopEvents = ch, cancel
}

func (w *worker) unsubscribe() {
	if w.stopEvents != nil {
		w.stopEvents()
	}
	w.events, w.stopEvents = nil, nil
}

// onEvent handles what the VM did. A guest that powered itself off stays
// off (the server makes that the desired state); a crash is handled by the
// VM's restart policy; anything else is reported.
func (w *worker) onEvent(ctx context.Context, ev hypervisor.StateEvent) {
	w.log.Info("vm event", "state", ev.State, "cause", ev.Cause, "reason", ev.Reason, "pid", ev.PID, "replay", ev.Replay)
	w.mu.Lock()
	vm := w.latest
	w.mu.Unlock()
	if vm == nil {
		return
	}
	h := w.currentHandle()
	if h == nil {
		return
	}
	if h.PID != 0 && ev.PID != h.PID {
		return // about an earlier process: a newer one runs
	}
	ended := ev.State == hypervisor.StateStopped || ev.State == hypervisor.StateCrashed
	if ended && ev.PID != 0 && ev.PID == w.life.handledPID {
		return // told twice (the replay may repeat a change)
	}
	switch {
	case ev.State == hypervisor.StateCrashed || (ev.State == hypervisor.StateStopped && ev.Cause.Crash()):
		w.onCrash(ctx, vm, ev)
		return
	case ev.State == hypervisor.StateStopped && ev.Cause == hypervisor.CauseGuestPoweroff:
		w.life.handledPID = ev.PID
		w.stopped(ev.Cause)
		w.life.settledGen = vm.Generation
		w.reason = ev.Reason
	case ev.State == hypervisor.StateStopped:
		// Requested (ours), or a replay of a VM that was not running.
		if ev.PID != 0 {
			w.life.handledPID = ev.PID
		}
	case !ev.Replay:
		w.reason = ev.Reason // paused, resumed
	}
	w.report(ctx, vm, nil)
}

// onCrash applies the VM's restart policy to a crash: its process died
// unasked, or its guest can no longer run (then its process is stopped
// first). Under "restart" it is started again after a pause that doubles
// with each crash in a row; under "stop" it stays stopped and the server
// makes stopped its desired state.
func (w *worker) onCrash(ctx context.Context, vm *api.VM, ev hypervisor.StateEvent) {
	h := w.currentHandle()
	w.life.handledPID = ev.PID
	if ev.State == hypervisor.StateCrashed && h != nil {
		sctx, cancel := context.WithTimeout(ctx, convergeTimeout)
		if err := w.a.driver.Stop(sctx, h, hypervisor.StopOptions{Force: true}); err != nil {
			w.log.Error("stopping a crashed vm", "err", err)
		}
		cancel()
		w.persistQuietly(h)
	}
	if !w.life.startedAt.IsZero() && time.Since(w.life.startedAt) > crashResetAfter {
		w.life.crashes = 0
	}
	w.life.crashes++
	w.life.crashed = true
	w.life.stopCause = ev.Cause
	w.life.crashGen = vm.Generation
	reason := ev.Reason
	if reason == "" {
		reason = string(ev.Cause)
	}
	w.life.crashReason = reason
	policy := vm.Spec.OnCrash
	if policy == "" {
		policy = api.OnCrashRestart
	}
	switch {
	case vm.Spec.PowerState == api.PowerStopped:
		w.life.restartAt = time.Time{}
		w.reason = reason
	case policy == api.OnCrashStop:
		w.life.restartAt = time.Time{}
		w.life.settledGen = vm.Generation
		w.reason = reason + "; left stopped (onCrash: stop)"
	default:
		delay := w.restartDelay(w.life.crashes)
		w.life.restartAt = time.Now().Add(delay)
		w.reason = fmt.Sprintf("%s; restarting in %s (crash %d in a row, onCrash: restart)", reason, delay, w.life.crashes)
	}
	w.log.Warn("vm crashed", "cause", ev.Cause, "reason", w.reason)
	w.report(ctx, vm, nil)
}

// restartDelay is the pause before the restart that follows the n-th
// crash in a row: RestartDelay, doubled for each crash before, at most
// MaxRestartDelay.
func (w *worker) restartDelay(n int) time.Duration {
	d := w.a.cfg.RestartDelay
	for i := 1; i < n && d < w.a.cfg.MaxRestartDelay; i++ {
		d *= 2
	}
	return min(d, w.a.cfg.MaxRestartDelay)
}

// holdStopped tells whether a stopped VM whose desired state is running
// stays stopped: its guest powered off, or it crashed under the stop
// policy, in this generation; or its restart after a crash is not due.
func (w *worker) holdStopped(vm *api.VM) bool {
	if w.life.settledGen != 0 && w.life.settledGen == vm.Generation {
		return true
	}
	return w.life.crashed && !w.life.restartAt.IsZero() && time.Now().Before(w.life.restartAt)
}

// started records a start the worker made.
func (w *worker) started() {
	if w.life.crashed {
		w.reason = fmt.Sprintf("started again after a crash (%d in a row): %s", w.life.crashes, w.life.crashReason)
	} else {
		w.reason = ""
	}
	w.life.crashed = false
	w.life.stopCause = ""
	w.life.restartAt = time.Time{}
	w.life.settledGen = 0
	w.life.startedAt = time.Now()
}

// stopped records a stop and its cause.
func (w *worker) stopped(cause hypervisor.Cause) {
	w.life.stopCause = cause
	w.life.crashed = false
	w.life.restartAt = time.Time{}
	if cause == hypervisor.CauseRequested {
		w.reason = ""
	}
}

// drainEvents handles the events already waiting, such as the replay of
// a new subscription, so that a convergence never acts on a state older
// than what the driver already said.
func (w *worker) drainEvents(ctx context.Context) {
	for w.events != nil {
		select {
		case ev, ok := <-w.events:
			if !ok {
				w.events = nil
				return
			}
			w.onEvent(ctx, ev)
		default:
			return
		}
	}
}

// persistQuietly saves a handle the driver changed outside a convergence.
func (w *worker) persistQuietly(h *hypervisor.Handle) {
	if err := w.persist(h); err != nil {
		w.log.Error("saving vm handle", "err", err)
	}
}
