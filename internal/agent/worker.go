package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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

	// Owned by the worker goroutine.
	doneGen         int64 // the generation last converged (or failed)
	observedGen     int64 // the generation last converged successfully
	observedRestart int64
	primed          bool // observed* were read from the server's status
	events          <-chan hypervisor.StateEvent
	stopEvents      context.CancelFunc
	retryAt         time.Time
	backoff         time.Duration
	reason          string
}

func newWorker(a *Agent, name, uid string, h *hypervisor.Handle) *worker {
	return &worker{
		a: a, log: a.log.With("vm", name), name: name, uid: uid, handle: h,
		kick: make(chan struct{}, 1), quit: make(chan struct{}),
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
	defer w.unwatch()
	if h := w.currentHandle(); h != nil {
		if st, err := w.a.driver.State(ctx, h); err == nil && st.State != hypervisor.StateStopped {
			w.watch(ctx)
		}
	}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-ctx.Done():
			return
		case <-w.kick:
		case ev, ok := <-w.events:
			if !ok {
				w.events = nil
				continue
			}
			w.onEvent(ctx, ev)
		case <-retry.C:
		}
		w.mu.Lock()
		vm := w.latest
		w.mu.Unlock()
		if vm == nil {
			continue
		}
		if !w.primed {
			// What the server last heard from this host, possibly from
			// before an agent restart: a restart already carried out is
			// not carried out again.
			w.observedGen = vm.Status.ObservedGeneration
			w.observedRestart = vm.Status.ObservedRestartCount
			w.primed = true
		}
		due := !w.retryAt.IsZero() && !time.Now().Before(w.retryAt)
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
		if !w.retryAt.IsZero() {
			retry.Reset(max(time.Until(w.retryAt), 0))
		}
	}
}

// converge brings the VM to its desired state and reports the outcome. It
// returns true when the VM is gone and the worker should end.
func (w *worker) converge(ctx context.Context, vm *api.VM) bool {
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
	if err := w.apply(ctx, vm); err != nil {
		w.fail(ctx, vm, err)
		return false
	}
	w.retryAt, w.backoff = time.Time{}, 0
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
			return err
		}
		w.log.Info("vm created", "dir", h.Dir)
	}
	st, err := d.State(ctx, h)
	if err != nil {
		return fmt.Errorf("reading vm state: %w", err)
	}
	spec := vm.Spec
	stopOpts := hypervisor.StopOptions{Timeout: time.Duration(spec.StopTimeoutSeconds) * time.Second, Force: spec.ForceStop}
	start := func(paused bool) error {
		c, err := config()
		if err != nil {
			return err
		}
		c.StartPaused = paused
		if err := d.Start(ctx, h, c); err != nil {
			return fmt.Errorf("starting vm: %w", err)
		}
		w.reason = ""
		if err := w.persist(h); err != nil {
			return err
		}
		w.watch(ctx)
		return nil
	}
	stop := func() error {
		w.unwatch() // our own shutdown is not an event to react to
		if err := d.Stop(ctx, h, stopOpts); err != nil {
			return fmt.Errorf("stopping vm: %w", err)
		}
		w.reason = ""
		return w.persist(h)
	}
	restart := spec.RestartCount > w.observedRestart
	switch spec.PowerState {
	case api.PowerRunning:
		switch {
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
		switch st.State {
		case hypervisor.StateStopped:
			err = start(true)
		case hypervisor.StateRunning:
			err = w.pauser(func(p hypervisor.Pauser) error { return p.Pause(ctx, h) })
		}
	default:
		err = fmt.Errorf("unknown desired power state %q", spec.PowerState)
	}
	if err == nil {
		w.observedRestart = spec.RestartCount
	}
	return err
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
	w.unwatch()
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

// fail reports an error for the VM's generation and schedules a retry.
func (w *worker) fail(ctx context.Context, vm *api.VM, err error) {
	w.log.Warn("converging vm failed", "generation", vm.Generation, "err", err)
	w.backoff = min(max(2*w.backoff, 5*time.Second), 5*time.Minute)
	w.retryAt = time.Now().Add(w.backoff)
	w.report(ctx, vm, &api.VMError{Generation: vm.Generation, Message: err.Error()})
}

// report sends the VM's observed state to the server.
func (w *worker) report(ctx context.Context, vm *api.VM, verr *api.VMError) {
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
			st.PowerState = ds.State
			st.PID = ds.PID
			st.StartedAt = ds.StartedAt
			st.Console = api.Console{Serial: ds.Serial, VNC: ds.VNC}
		} else {
			st.PowerState = api.PowerError
		}
		for _, d := range h.Disks {
			st.Disks = append(st.Disks, api.DiskStatus{Name: d.Name, Path: d.Path, Format: d.Format, SizeMiB: d.SizeMiB})
		}
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

// watch follows the driver's events for the VM's current process.
func (w *worker) watch(ctx context.Context) {
	w.unwatch()
	h := w.currentHandle()
	if h == nil {
		return
	}
	ectx, cancel := context.WithCancel(ctx)
	ch, err := w.a.driver.Events(ectx, h)
	if err != nil {
		cancel()
		w.log.Warn("following vm events", "err", err)
		return
	}
	w.events, w.stopEvents = ch, cancel
}

func (w *worker) unwatch() {
	if w.stopEvents != nil {
		w.stopEvents()
	}
	w.events, w.stopEvents = nil, nil
}

// onEvent handles what the VM did by itself. A guest that shut down stays
// off (the server makes that the desired state); a VM process that died
// while it should run is started again after a pause.
func (w *worker) onEvent(ctx context.Context, ev hypervisor.StateEvent) {
	w.log.Info("vm event", "state", ev.State, "reason", ev.Reason)
	w.mu.Lock()
	vm := w.latest
	w.mu.Unlock()
	if vm == nil {
		return
	}
	w.reason = ev.Reason
	if ev.State == hypervisor.StateStopped {
		w.unwatch()
		if ev.Reason != guestShutdown && vm.Spec.PowerState != api.PowerStopped {
			w.retryAt = time.Now().Add(2 * time.Second) // crash: start it again
		}
	}
	w.report(ctx, vm, nil)
}

// convergeTimeout bounds one convergence, besides the stop timeout.
const convergeTimeout = 3 * time.Minute

// guestShutdown is the reason a driver gives when the guest powered off.
const guestShutdown = "guest shut down"
