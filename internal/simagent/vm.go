package simagent

import (
	"context"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// simVM is a VM placed on a simulated host. It converges as the real
// agent's worker does, with the same requests to the server (the image
// look-ups before it is made, one status report per convergence, the
// removal), but holds no goroutine while there is nothing to do: a
// convergence runs in a goroutine of its own, one at a time per VM,
// within the fleet's bound on VMs converging at once.
//
// Every field is guarded by its host's mu.
type simVM struct {
	key, name, uid string
	spec           vmSpec

	primed          bool // observed* were read from the server's status
	observedGen     int64
	observedRestart int64

	busy, dirty bool
	gone        bool
	doneGen     int64
	retryAt     time.Time
	backoff     time.Duration
	hd          *hypervisor.Handle
	running     bool
}

// vmSpec is what the host needs of a VM's spec.
type vmSpec struct {
	gen         int64
	power       string
	restart     int64
	deleting    bool
	keepDisks   bool
	force       bool
	stopTimeout time.Duration
	unknown     bool // the server lost track of the host: report again
	cfg         hypervisor.VMConfig
	images      []imageRef
}

type imageRef struct{ ref, kind string }

func specOf(vm *api.VM) vmSpec {
	s := vm.Spec
	sp := vmSpec{
		gen: vm.Generation, power: s.PowerState, restart: s.RestartCount, deleting: s.Deletion != nil,
		force: s.ForceStop, stopTimeout: time.Duration(s.StopTimeoutSeconds) * time.Second,
		unknown: vm.Status.PowerState == api.PowerUnknown,
		cfg:     hypervisor.VMConfig{Name: vm.Name, UID: vm.UID, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, Cmdline: s.Boot.Cmdline},
	}
	if s.Deletion != nil {
		sp.keepDisks = s.Deletion.KeepDisks
	}
	for _, d := range s.Disks {
		sp.cfg.Disks = append(sp.cfg.Disks, hypervisor.DiskConfig{Name: d.Name, SizeMiB: d.SizeMiB, BackingFile: d.Image})
		if d.Image != "" {
			sp.images = append(sp.images, imageRef{d.Image, api.ImageDisk})
		}
	}
	for _, n := range s.NICs {
		sp.cfg.NICs = append(sp.cfg.NICs, hypervisor.NICConfig{Network: n.Network, MAC: n.MAC})
	}
	if s.Boot.Kernel != "" {
		sp.images = append(sp.images, imageRef{s.Boot.Kernel, api.ImageKernel})
	}
	if s.Boot.Initrd != "" {
		sp.images = append(sp.images, imageRef{s.Boot.Initrd, api.ImageInitrd})
	}
	return sp
}

// update takes a VM's newest version from the watch.
func (h *simHost) update(ctx context.Context, vm *api.VM) {
	key := vm.Key()
	h.mu.Lock()
	v := h.vms[key]
	if v == nil || v.uid != vm.UID {
		if v != nil {
			v.gone = true // the name now belongs to another VM
		}
		v = &simVM{key: key, name: vm.Name, uid: vm.UID}
		h.vms[key] = v
	}
	if !v.primed {
		v.observedGen, v.observedRestart, v.primed = vm.Status.ObservedGeneration, vm.Status.ObservedRestartCount, true
	}
	v.spec = specOf(vm)
	h.kickLocked(ctx, v)
	h.mu.Unlock()
}

// removed forgets a VM the server no longer has; a machine VM left behind
// is removed at the next sync, as an orphan.
func (h *simHost) removed(key string) {
	h.mu.Lock()
	if v := h.vms[key]; v != nil {
		v.gone = true
		delete(h.vms, key)
	}
	h.mu.Unlock()
}

func (h *simHost) vm(key string) *simVM {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.vms[key]
}

// handle is a copy of the VM's handle, or nil.
func (v *simVM) handle() *hypervisor.Handle {
	if v.hd == nil {
		return nil
	}
	c := *v.hd
	return &c
}

// needsLocked tells whether the VM has something to converge or report.
func (v *simVM) needsLocked() bool {
	due := !v.retryAt.IsZero() && !time.Now().Before(v.retryAt)
	return !v.gone && (v.spec.gen != v.doneGen || due || v.spec.unknown)
}

// kickLocked starts the VM's convergence unless one runs (which then goes
// round again) or there is nothing to do.
func (h *simHost) kickLocked(ctx context.Context, v *simVM) {
	switch {
	case v.busy:
		v.dirty = true
	case v.needsLocked():
		v.busy = true
		go h.run(ctx, v)
	}
}

// run converges v until nothing is left to do.
func (h *simHost) run(ctx context.Context, v *simVM) {
	select {
	case h.f.work <- struct{}{}:
	case <-ctx.Done():
		h.mu.Lock()
		v.busy = false
		h.mu.Unlock()
		return
	}
	defer func() { <-h.f.work }()
	for {
		h.mu.Lock()
		v.dirty = false
		spec, hd := v.spec, v.handle()
		due := !v.retryAt.IsZero() && !time.Now().Before(v.retryAt)
		converge := !v.gone && (spec.gen != v.doneGen || due)
		report := !v.gone && !converge && spec.unknown
		if converge {
			v.doneGen = spec.gen
		}
		h.mu.Unlock()
		switch {
		case converge:
			h.converge(ctx, v, spec, hd)
		case report:
			h.report(ctx, v, hd, nil)
		}
		h.mu.Lock()
		if ctx.Err() != nil || !v.dirty {
			v.busy = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// converge brings the VM to its desired state and reports the outcome.
func (h *simHost) converge(ctx context.Context, v *simVM, spec vmSpec, hd *hypervisor.Handle) {
	h.f.c.converging.Add(1)
	defer h.f.c.converging.Add(-1)
	cctx, cancel := context.WithTimeout(ctx, spec.stopTimeout+3*time.Minute)
	defer cancel()
	if spec.deleting {
		if err := h.remove(cctx, v, spec, hd); err != nil {
			h.fail(ctx, v, spec, hd, err)
		}
		return
	}
	hd, err := h.apply(cctx, v, spec, hd)
	if err != nil {
		h.fail(ctx, v, spec, hd, err)
		return
	}
	h.mu.Lock()
	v.retryAt, v.backoff = time.Time{}, 0
	v.observedGen = spec.gen
	h.mu.Unlock()
	h.report(ctx, v, hd, nil)
}

// apply makes the VM on the machine if needed and drives its power state,
// as the real agent's worker does.
func (h *simHost) apply(ctx context.Context, v *simVM, spec vmSpec, hd *hypervisor.Handle) (*hypervisor.Handle, error) {
	d := h.driver
	if hd == nil {
		for _, img := range spec.images {
			if err := h.lookUpImage(ctx, img); err != nil {
				return nil, err
			}
		}
		var err error
		if hd, err = d.Create(ctx, spec.cfg); err != nil {
			return nil, fmt.Errorf("creating vm: %w", err)
		}
		h.setHandle(v, hd)
	}
	st, err := d.State(ctx, hd)
	if err != nil {
		return hd, fmt.Errorf("reading vm state: %w", err)
	}
	stopOpts := hypervisor.StopOptions{Timeout: spec.stopTimeout, Force: spec.force}
	start := func(paused bool) error {
		cfg := spec.cfg
		cfg.StartPaused = paused
		if err := d.Start(ctx, hd, cfg); err != nil {
			return fmt.Errorf("starting vm: %w", err)
		}
		h.f.c.starts.Add(1)
		h.setHandle(v, hd)
		return nil
	}
	stop := func() error {
		if err := d.Stop(ctx, hd, stopOpts); err != nil {
			return fmt.Errorf("stopping vm: %w", err)
		}
		h.setHandle(v, hd)
		return nil
	}
	h.mu.Lock()
	restart := spec.restart > v.observedRestart
	h.mu.Unlock()
	switch spec.power {
	case api.PowerRunning:
		switch {
		case st.State == hypervisor.StateStopped:
			err = start(false)
		case restart:
			if err = stop(); err == nil {
				err = start(false)
			}
		case st.State == hypervisor.StatePaused:
			err = d.Resume(ctx, hd)
		}
	case api.PowerStopped:
		if st.State != hypervisor.StateStopped {
			err = stop()
		}
	case api.PowerPaused:
		switch {
		case st.State == hypervisor.StateStopped:
			err = start(true)
		case st.State == hypervisor.StateRunning:
			err = d.Pause(ctx, hd)
		}
	default:
		err = fmt.Errorf("unknown desired power state %q", spec.power)
	}
	if err == nil {
		h.mu.Lock()
		v.observedRestart = spec.restart
		h.mu.Unlock()
	}
	return hd, err
}

// lookUpImage asks the server about an image, as the real agent does
// before it makes a VM (its content is not fetched: the simulated machine
// needs none).
func (h *simHost) lookUpImage(ctx context.Context, img imageRef) error {
	got, err := h.client().AgentImage(ctx, img.ref)
	if err != nil {
		return fmt.Errorf("looking up image %q: %w", img.ref, err)
	}
	if got.Kind != img.kind {
		return fmt.Errorf("image %q is a %s image, not %s", img.ref, got.Kind, img.kind)
	}
	if got.State != api.ImageReady {
		return fmt.Errorf("image %q is not ready", img.ref)
	}
	return nil
}

func (h *simHost) setHandle(v *simVM, hd *hypervisor.Handle) {
	c := *hd
	h.mu.Lock()
	v.hd = &c
	h.mu.Unlock()
}

// remove destroys the VM and tells the server it is gone.
func (h *simHost) remove(ctx context.Context, v *simVM, spec vmSpec, hd *hypervisor.Handle) error {
	if hd != nil {
		if err := h.driver.Destroy(ctx, hd, spec.keepDisks); err != nil {
			return fmt.Errorf("destroying vm: %w", err)
		}
		h.mu.Lock()
		v.hd, v.running = nil, false
		h.mu.Unlock()
	}
	if err := h.client().VMRemoved(ctx, v.key); err != nil && !client.IsNotFound(err) {
		return fmt.Errorf("reporting vm removed: %w", err)
	}
	h.mu.Lock()
	v.gone = true
	if h.vms[v.key] == v {
		delete(h.vms, v.key)
	}
	h.mu.Unlock()
	return nil
}

// fail reports an error for the VM's generation and schedules a retry.
func (h *simHost) fail(ctx context.Context, v *simVM, spec vmSpec, hd *hypervisor.Handle, err error) {
	h.f.c.convErr.Add(1)
	h.f.warn.warn("converging vm failed", h.name, fmt.Errorf("vm %s generation %d: %w", v.key, spec.gen, err))
	if client.IsUnavailable(err) {
		// The control plane could not be reached (a server restarting,
		// its store electing a leader): no fault of the VM's to report,
		// which would fail its operation; tried again shortly.
		h.mu.Lock()
		h.retryLocked(ctx, v, unavailableRetry)
		h.mu.Unlock()
		return
	}
	h.mu.Lock()
	v.backoff = min(max(2*v.backoff, 5*time.Second), 5*time.Minute)
	h.retryLocked(ctx, v, v.backoff)
	h.mu.Unlock()
	h.report(ctx, v, hd, &api.VMError{Generation: spec.gen, Message: err.Error()})
}

// unavailableRetry is how soon a VM converges again after the control
// plane could not be reached.
const unavailableRetry = time.Second

// retryLocked has the VM converge again after d.
func (h *simHost) retryLocked(ctx context.Context, v *simVM, d time.Duration) {
	at := time.Now().Add(d)
	if !v.retryAt.IsZero() && v.retryAt.Before(at) && v.retryAt.After(time.Now()) {
		return // an earlier retry is already due
	}
	v.retryAt = at
	time.AfterFunc(d, func() {
		h.mu.Lock()
		h.kickLocked(ctx, v)
		h.mu.Unlock()
	})
}

// report sends the VM's observed state to the server.
func (h *simHost) report(ctx context.Context, v *simVM, hd *hypervisor.Handle, verr *api.VMError) {
	h.mu.Lock()
	st := api.VMStatus{
		PowerState:           api.PowerPending,
		ObservedGeneration:   v.observedGen,
		ObservedRestartCount: v.observedRestart,
		Error:                verr,
		Driver:               h.driver.Name(),
	}
	h.mu.Unlock()
	running := false
	if hd != nil {
		if ds, err := h.driver.State(ctx, hd); err == nil {
			st.PowerState = powerState(ds.State)
			st.PID = ds.PID
			running = ds.State == hypervisor.StateRunning
			if ds.State == hypervisor.StateStopped {
				st.StopCause = string(hypervisor.CauseRequested)
			}
		} else {
			st.PowerState = api.PowerError
			st.Reason = "reading its state: " + err.Error()
		}
		for _, d := range hd.Disks {
			st.Disks = append(st.Disks, api.DiskStatus{Name: d.Name, Path: d.Path, Format: d.Format, SizeMiB: d.SizeMiB})
		}
	}
	if verr != nil && st.PowerState == api.PowerPending {
		st.PowerState = api.PowerError
	}
	h.mu.Lock()
	v.running = running
	h.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := h.client().PutVMStatus(rctx, v.key, st)
	h.f.c.report.add(time.Since(t0))
	if err == nil || ctx.Err() != nil || client.IsNotFound(err) {
		if err == nil {
			h.f.c.reports.Add(1)
		}
		return
	}
	// An unreported convergence leaves its operation waiting: go round
	// again soon (converging again changes nothing, then reports).
	h.f.c.reportErrors.Add(1)
	h.f.warn.warn("reporting vm status", h.name, err)
	h.mu.Lock()
	v.doneGen = 0
	h.retryLocked(ctx, v, 2*time.Second)
	h.mu.Unlock()
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
