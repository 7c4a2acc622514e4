package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// worker converges one VM. Everything that touches the VM runs in its
// goroutine, so driver calls for one VM never overlap.
type worker struct {
	a    *Agent
	log  *slog.Logger
	name string
	uid  string

	mu     sync.Mutex
	latest *api.VM
	handle *hypervisor.Handle // guarded by mu for readers outside the goroutine

	kick chan struct{}
	quit chan struct{}
	once sync.Once
	// netDue makes a failed convergence due at once: the host's network
	// changed, and a port the VM waited for may be made (network.go).
	netDue atomic.Bool

	// Owned by the worker goroutine.
	runCtx          context.Context // the worker's life: its event subscription lives under it
	doneGen         int64           // the generation last converged (or failed)
	observedGen     int64           // the generation last converged successfully
	observedRestart int64
	primed          bool // observed* were read from the server's status
	events          <-chan hypervisor.StateEvent
	stopEvents      context.CancelFunc
	retryAt         time.Time     // when a failed convergence is tried again
	backoff         time.Duration // of failed convergences
	portWaitSince   time.Time     // since when a NIC's port is awaited (network.go)
	volumeWaitSince time.Time     // since when the root volume is awaited (hotplug.go)
	reason          string        // for people: the last transition
	life            lifeState
	in              *incomingMig  // a migration this host receives
	out             *outgoingMig  // a migration this host sends
	progress        chan struct{} // a migration's progress is to be reported
}

// lifeState is what the worker knows of how the VM's last process ended,
// and what the restart policy does about it.
type lifeState struct {
	stopCause   hypervisor.Cause // why the VM last stopped; empty while it runs
	crashed     bool             // it crashed and was not started since
	crashes     int              // crashes in a row
	crashGen    int64            // the generation it last crashed under
	crashReason string           // why it last crashed
	restartAt   time.Time        // when the restart policy starts it again
	startedAt   time.Time        // when this agent last started it
	handledPID  int              // the process whose end was handled
	// settledGen is a generation whose outcome is a stopped VM although
	// its desired state is running: the guest powered itself off, or it
	// crashed under the stop policy. The server makes stopped the desired
	// state; until then the VM is not started again for that generation.
	settledGen int64
}

func newWorker(a *Agent, name string, vm *api.VM, h *hypervisor.Handle) *worker {
	return &worker{
		a: a, log: a.log.With("vm", name), name: name, uid: vm.UID, handle: h, latest: vm,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), progress: make(chan struct{}, 1),
	}
}

// update hands the worker the VM's newest version.
func (w *worker) update(vm *api.VM) {
	w.mu.Lock()
	w.latest = vm
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) stop() { w.once.Do(func() { close(w.quit) }) }

func (w *worker) currentHandle() *hypervisor.Handle {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handle == nil {
		return nil
	}
	h := *w.handle
	return &h
}

func (w *worker) setHandle(h *hypervisor.Handle) {
	w.mu.Lock()
	w.handle = h
	w.mu.Unlock()
}

func (w *worker) run(ctx context.Context) {
	w.runCtx = ctx
	defer w.unsubscribe()
	defer w.endMigrations()
	w.prime()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		// Follow the VM's events for as long as the worker has it: the
		// subscription outlives every convergence and every start.
		if w.events == nil && w.currentHandle() != nil {
			w.subscribe()
		}
		select {
		case <-w.quit:
			return
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-w.progress:
			w.mu.Lock()
			vm := w.latest
			w.mu.Unlock()
			if vm != nil && vm.Generation == w.doneGen {
				w.report(ctx, vm, nil)
			}
		case ev, ok := <-w.events:
			if !ok {
				w.events = nil // ended by the driver: subscribe again
				continue
			}
			w.onEvent(ctx, ev)
		case <-retry.C:
		}
		w.prime()
		w.mu.Lock()
		vm := w.latest
		w.mu.Unlock()
		if vm == nil {
			continue
		}
		w.drainEvents(ctx)
		now := time.Now()
		due := (!w.retryAt.IsZero() && !now.Before(w.retryAt)) || (!w.life.restartAt.IsZero() && !now.Before(w.life.restartAt)) ||
			(w.netDue.Swap(false) && !w.retryAt.IsZero())
		switch {
		case vm.Generation != w.doneGen || due:
			if done := w.converge(ctx, vm); done {
				return
			}
		case vm.Status.PowerState == api.PowerUnknown:
			// The server lost track of this host for a while: tell it
			// again what it missed.
			w.report(ctx, vm, vm.Status.Error)
		}
		if next := w.nextWake(); !next.IsZero() {
			retry.Reset(max(time.Until(next), 0))
		}
	}
}

// prime reads what the server last heard from this host, possibly from
// before an agent restart: a restart already carried out is not carried
// out again, and no report goes back to an older generation.
func (w *worker) prime() {
	w.mu.Lock()
	vm := w.latest
	w.mu.Unlock()
	if w.primed || vm == nil {
		return
	}
	w.observedGen = vm.Status.ObservedGeneration
	w.observedRestart = vm.Status.ObservedRestartCount
	w.primed = true
}

// nextWake is the earliest of the pending retry and restart, or zero.
func (w *worker) nextWake() time.Time {
	a, b := w.retryAt, w.life.restartAt
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// converge brings the VM to its desired state and reports the outcome. It
// returns true when the VM is gone and the worker should end.
func (w *worker) converge(ctx context.Context, vm *api.VM) bool {
	if vm.Generation != w.doneGen && vm.Generation != w.life.crashGen && w.life.crashGen != 0 {
		// Someone acted on the VM since it crashed: their wish goes
		// first, without waiting out the crash backoff.
		w.life.restartAt, w.life.crashes, w.life.crashGen = time.Time{}, 0, 0
	}
	if !w.life.restartAt.IsZero() && !time.Now().Before(w.life.restartAt) {
		w.life.restartAt = time.Time{} // due: this convergence starts it
	}
	w.doneGen = vm.Generation
	// A hypervisor that stops answering must not hold the VM forever.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(vm.Spec.StopTimeoutSeconds)*time.Second+convergeTimeout)
	defer cancel()
	if vm.Spec.Deletion != nil {
		if err := w.remove(ctx, vm.Spec.Deletion.KeepDisks); err != nil {
			w.fail(ctx, vm, err)
			return false
		}
		w.a.forgetWorker(w)
		return true
	}
	if vm.Spec.Host != w.a.cfg.Host {
		// Not placed here: the VM migrates here.
		if m := vm.Spec.Migration; m != nil && m.Target == w.a.cfg.Host {
			if err := w.receive(ctx, vm); err != nil {
				w.log.Warn("receiving vm failed", "err", err)
			}
		}
		return false
	}
	if w.in != nil {
		w.in = nil // received: the VM is placed here now
	}
	if w.out != nil && w.out.succeeded() {
		if m := vm.Spec.Migration; m != nil && m.Operation == w.out.op {
			// Migrated: the VM runs on its target, and this host's
			// copy, paused for good, goes once the server moves it.
			w.report(ctx, vm, nil)
			return false
		}
		// The server ended the migration (cancelled, timed out) with
		// the VM kept here: the guest resumes here, the target removes
		// its copy.
		w.log.Warn("the migration completed but the server kept the vm here: resuming it")
		w.out = nil
	}
	if w.out != nil && (vm.Spec.Migration == nil || vm.Spec.Migration.Operation != w.out.op) {
		w.endOutgoing() // cancelled or failed: the guest runs here again
	}
	if err := w.apply(ctx, vm); err != nil {
		var volPending *volumePendingError
		if errors.As(err, &volPending) {
			if w.volumeWaitSince.IsZero() {
				w.volumeWaitSince = time.Now()
			}
			if time.Since(w.volumeWaitSince) < volumeWait {
				w.log.Debug("waiting for the root volume", "generation", vm.Generation, "err", err)
				w.retryAt = time.Now().Add(time.Second)
				return false
			}
		}
		w.volumeWaitSince = time.Time{}
		var pending *portPendingError
		if errors.As(err, &pending) {
			if w.portWaitSince.IsZero() {
				w.portWaitSince = time.Now()
			}
			if until := w.portWaitSince.Add(portWait); time.Now().Before(until) {
				// Not a failure yet: tried again when the network
				// changes (netDue), failed when the wait is over.
				w.log.Debug("waiting for a port", "generation", vm.Generation, "err", err)
				w.retryAt = until
				return false
			}
		}
		w.portWaitSince = time.Time{}
		w.fail(ctx, vm, err)
		return false
	}
	if m := vm.Spec.Migration; m != nil && (vm.Spec.PowerState == api.PowerRunning || (m.Offline && vm.Spec.PowerState == api.PowerStopped)) {
		w.send(vm)
	}
	w.retryAt, w.backoff, w.portWaitSince, w.volumeWaitSince = time.Time{}, 0, time.Time{}, time.Time{}
	w.observedGen = vm.Generation
	w.report(ctx, vm, nil)
	return false
}

// apply makes the VM (if needed) and drives its power state.
func (w *worker) apply(ctx context.Context, vm *api.VM) error {
	d := w.a.driver
	h := w.currentHandle()
	var cfg *hypervisor.VMConfig
	config := func() (hypervisor.VMConfig, error) {
		if cfg == nil {
			c, err := w.a.vmConfig(ctx, vm)
			if err != nil {
				return c, err
			}
			cfg = &c
		}
		return *cfg, nil
	}
	if h == nil {
		if b, ok := w.a.badHandleOf(vm.UID); ok {
			return fmt.Errorf("this host has an unusable handle for the vm (%s: %v); the vm is not made again, so that it never runs twice: repair or remove the file and restart the agent", b.Path, b.Err)
		}
		c, err := config()
		if err != nil {
			return err
		}
		h, err = d.Create(ctx, c)
		if err != nil {
			return fmt.Errorf("creating vm: %w", err)
		}
		if err := w.persist(h); err != nil {
			_ = d.Destroy(ctx, h, false)
			w.setHandle(nil)
			return err
		}
		w.log.Info("vm created", "dir", h.Dir)
		w.subscribe()
	}
	st, err := d.State(ctx, h)
	if err != nil {
		return fmt.Errorf("reading vm state: %w", err)
	}
	spec := vm.Spec
	stopOpts := hypervisor.StopOptions{Timeout: time.Duration(spec.StopTimeoutSeconds) * time.Second, Force: spec.ForceStop}
	start := func(paused bool) error {
		if spec.HA == api.HARestart && w.a.fence.isFenced() {
			return errors.New("this host fenced itself (the control plane did not answer for T_fence): its HA vms start again once the server says where they run")
		}
		c, err := config()
		if err != nil {
			return err
		}
		c.StartPaused = paused
		if err := d.Start(ctx, h, c); err != nil {
			return fmt.Errorf("starting vm: %w", err)
		}
		w.started()
		return w.persist(h)
	}
	stop := func() error {
		// Our own stop comes back as an event with the cause requested,
		// which is no reason to act.
		if err := d.Stop(ctx, h, stopOpts); err != nil {
			return fmt.Errorf("stopping vm: %w", err)
		}
		w.stopped(hypervisor.CauseRequested)
		return w.persist(h)
	}
	if st.State == hypervisor.StateCrashed {
		if spec.PowerState == api.PowerStopped {
			return stop()
		}
		w.onCrash(ctx, vm, hypervisor.StateEvent{State: st.State, Cause: st.Cause, Reason: st.Reason, PID: st.PID})
		return nil
	}
	restart := spec.RestartCount > w.observedRestart
	switch spec.PowerState {
	case api.PowerRunning:
		switch {
		case st.State == hypervisor.StateStopped && w.holdStopped(vm):
			// Stopped by the guest or by the crash policy: stays so.
		case st.State == hypervisor.StateStopped:
			err = start(false)
		case restart:
			if err = stop(); err == nil {
				err = start(false)
			}
		case st.State == hypervisor.StatePaused:
			err = w.pauser(func(p hypervisor.Pauser) error { return p.Resume(ctx, h) })
		}
	case api.PowerStopped:
		if st.State != hypervisor.StateStopped {
			err = stop()
		}
	case api.PowerPaused:
		switch {
		case st.State == hypervisor.StateStopped && w.holdStopped(vm):
		case st.State == hypervisor.StateStopped:
			err = start(true)
		case st.State == hypervisor.StateRunning:
			err = w.pauser(func(p hypervisor.Pauser) error { return p.Pause(ctx, h) })
		}
	default:
		err = fmt.Errorf("unknown desired power state %q", spec.PowerState)
	}
	if err != nil {
		return err
	}
	w.observedRestart = spec.RestartCount
	// NICs and volumes added to or removed from a VM that runs: each
	// kind is plugged whatever became of the other.
	var nicErr error
	if spec.PowerState == api.PowerRunning || spec.PowerState == api.PowerPaused {
		var nics []hypervisor.NICConfig
		if nics, nicErr = w.a.nicConfigs(vm); nicErr == nil {
			nicErr = w.syncNICs(ctx, h, nics)
		}
	}
	return errors.Join(nicErr, w.syncVolumes(ctx, h, vm))
}

func (w *worker) pauser(f func(hypervisor.Pauser) error) error {
	p, ok := w.a.driver.(hypervisor.Pauser)
	if !ok {
		return fmt.Errorf("driver %s cannot pause or resume: %w", w.a.driver.Name(), hypervisor.ErrNotSupported)
	}
	return f(p)
}

// remove destroys the VM and tells the server it is gone.
func (w *worker) remove(ctx context.Context, keepDisks bool) error {
	w.unsubscribe()
	if h := w.currentHandle(); h != nil {
		if err := w.a.driver.Destroy(ctx, h, keepDisks); err != nil {
			return fmt.Errorf("destroying vm: %w", err)
		}
		removeHandle(w.a.cfg.StateDir, h.UID)
		w.setHandle(nil)
	}
	if err := w.a.c.VMRemoved(ctx, w.name); err != nil && !client.IsNotFound(err) {
		return fmt.Errorf("reporting vm removed: %w", err)
	}
	w.log.Info("vm removed", "keepDisks", keepDisks)
	return nil
}

// unavailableRetry is how soon a VM converges again after the control
// plane could not be reached.
const unavailableRetry = time.Second

// fail reports an error for the VM's generation and schedules a retry.
func (w *worker) fail(ctx context.Context, vm *api.VM, err error) {
	w.log.Warn("converging vm failed", "generation", vm.Generation, "err", err)
	if client.IsUnavailable(err) {
		// The control plane could not be reached (a server restarting,
		// its store electing a leader): no fault of the VM's to report,
		// which would fail its operation; tried again shortly.
		w.retryAt = time.Now().Add(unavailableRetry)
		return
	}
	w.backoff = min(max(2*w.backoff, 5*time.Second), 5*time.Minute)
	w.retryAt = time.Now().Add(w.backoff)
	w.report(ctx, vm, &api.VMError{Generation: vm.Generation, Message: err.Error()})
}

// report sends the VM's observed state to the server.
func (w *worker) report(ctx context.Context, vm *api.VM, verr *api.VMError) {
	if vm.Spec.Host != w.a.cfg.Host {
		return // migrating here: its host reports
	}
	st := api.VMStatus{
		PowerState:           api.PowerPending,
		ObservedGeneration:   w.observedGen,
		ObservedRestartCount: w.observedRestart,
		Error:                verr,
		Driver:               w.a.driver.Name(),
		Reason:               w.reason,
	}
	if h := w.currentHandle(); h != nil {
		if ds, err := w.a.driver.State(ctx, h); err == nil {
			st.PowerState = powerState(ds.State)
			st.PID = ds.PID
			st.StartedAt = ds.StartedAt
			st.Console = api.Console{Serial: ds.Serial, VNC: ds.VNC}
			switch {
			case ds.State == hypervisor.StateCrashed:
				// Seen before its event: the driver says why.
				st.StopCause = string(ds.Cause)
				if w.reason == "" || !w.life.crashed {
					st.Reason = ds.Reason
				}
			case ds.State == hypervisor.StateStopped:
				st.StopCause = string(w.life.stopCause)
				if w.life.crashed {
					st.PowerState = api.PowerCrashed
				}
			}
		} else {
			st.PowerState = api.PowerError
			st.Reason = "reading its state: " + err.Error()
		}
		for _, d := range h.Disks {
			st.Disks = append(st.Disks, api.DiskStatus{Name: d.Name, Path: d.Path, Format: d.Format, SizeMiB: d.SizeMiB})
		}
		st.Volumes = w.pluggedVolumes(ctx, h, vm)
	}
	if w.out != nil {
		ms, _ := w.out.get()
		st.Migration = &ms
	}
	if verr != nil && st.PowerState == api.PowerPending {
		st.PowerState = api.PowerError
	}
	if _, err := w.a.c.PutVMStatus(ctx, w.name, st); err != nil && ctx.Err() == nil && !client.IsNotFound(err) {
		// An unreported convergence leaves its operation waiting: go
		// round again soon (converging again is a no-op, then reports).
		w.log.Warn("reporting vm status", "err", err)
		w.doneGen = 0
		if w.retryAt.IsZero() || time.Until(w.retryAt) > 2*time.Second {
			w.retryAt = time.Now().Add(2 * time.Second)
		}
	}
}

// powerState maps a driver's state to the API's.
func powerState(s string) string {
	switch s {
	case hypervisor.StateRunning:
		return api.PowerRunning
	case hypervisor.StatePaused:
		return api.PowerPaused
	case hypervisor.StateStopped:
		return api.PowerStopped
	case hypervisor.StateCrashed:
		return api.PowerCrashed
	}
	return api.PowerError
}

// convergeTimeout bounds one convergence, besides the stop timeout.
const convergeTimeout = 3 * time.Minute
