package estate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
)

// kick converges a provider VM in the background; one goroutine per VM at
// a time, going round again if the VM changed meanwhile.
func (m *Manager) kick(ctx context.Context, name string) {
	m.mu.Lock()
	if _, running := m.work[name]; running {
		m.work[name] = true
		m.mu.Unlock()
		return
	}
	m.work[name] = false
	m.mu.Unlock()
	go func() {
		for {
			m.converge(ctx, name)
			m.mu.Lock()
			again := m.work[name]
			if !again {
				delete(m.work, name)
				m.mu.Unlock()
				return
			}
			m.work[name] = false
			m.mu.Unlock()
		}
	}()
}

// converge makes the provider match a VM's desired state and records the
// outcome for the VM's generation.
func (m *Manager) converge(ctx context.Context, name string) {
	vm, ok := m.cfg.VMs.Get(name)
	if !ok || vm.Spec.Provider == nil || !needsWork(vm) {
		return
	}
	c, ok := m.conn(vm.Spec.Provider.Name)
	if !ok {
		m.reportOrLog(ctx, name, vm.Generation, fmt.Errorf("provider %q does not exist", vm.Spec.Provider.Name))
		return
	}
	p := c.provider()
	if p == nil {
		m.reportOrLog(ctx, name, vm.Generation, fmt.Errorf("provider %q is disconnected", c.name))
		return
	}
	created, err := c.carryOut(ctx, p, vm)
	c.mu.Lock()
	if vm.Spec.Provider.ID != "" {
		c.acted[vm.Spec.Provider.ID] = time.Now()
	}
	if created != nil {
		c.acted[created.ID] = time.Now()
	}
	c.mu.Unlock()
	if vm.Spec.Deletion != nil && err == nil {
		c.mu.Lock()
		delete(c.vmIDs, vm.Spec.Provider.ID)
		c.mu.Unlock()
		if err := m.write(ctx, m.cfg.VMs.OpDelete(name, 0)); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Warn("removing a deleted provider vm", "vm", name, "err", err)
		}
		return
	}
	if rerr := m.report(ctx, name, vm.Generation, created, err); rerr != nil && ctx.Err() == nil {
		// The operation waiting for this generation fails at its
		// deadline; what the provider did is mirrored by the next sync.
		m.log.Warn("recording what was done to a provider vm", "vm", name, "generation", vm.Generation, "outcome", err, "err", rerr)
	}
}

// carryOut does what the spec asks of the provider.
func (c *conn) carryOut(ctx context.Context, p provider.Provider, vm *api.VM) (*provider.VM, error) {
	spec := vm.Spec
	id := spec.Provider.ID
	if spec.Deletion != nil {
		if id == "" {
			return nil, nil
		}
		if vm.Status.PowerState != api.PowerStopped {
			if err := p.PowerOff(ctx, id); err != nil && !errors.Is(err, provider.ErrBadState) && !errors.Is(err, provider.ErrNotFound) {
				return nil, fmt.Errorf("powering off before delete: %w", err)
			}
		}
		if err := p.Delete(ctx, id); err != nil && !errors.Is(err, provider.ErrNotFound) {
			return nil, fmt.Errorf("deleting: %w", err)
		}
		return nil, nil
	}
	if id == "" {
		return c.create(ctx, p, vm)
	}
	c.mu.Lock()
	seen, known := c.seen[id]
	c.mu.Unlock()
	observed := vm.Status.PowerState
	if known && (seen.VCPUs != spec.VCPUs || seen.MemoryMiB != spec.MemoryMiB) {
		if observed != api.PowerStopped {
			return nil, fmt.Errorf("changing cpus or memory needs the vm stopped: %w", provider.ErrBadState)
		}
		if err := p.Reconfigure(ctx, id, spec.VCPUs, spec.MemoryMiB); err != nil {
			return nil, fmt.Errorf("reconfiguring: %w", err)
		}
	}
	var err error
	switch spec.PowerState {
	case api.PowerRunning:
		switch {
		case observed == api.PowerStopped || observed == api.PowerPaused:
			err = p.PowerOn(ctx, id)
		case spec.RestartCount > vm.Status.ObservedRestartCount:
			err = p.Reboot(ctx, id)
		}
	case api.PowerStopped:
		if observed != api.PowerStopped {
			if spec.ForceStop {
				err = p.PowerOff(ctx, id)
			} else {
				err = p.Shutdown(ctx, id, time.Duration(spec.StopTimeoutSeconds)*time.Second)
			}
		}
	case api.PowerPaused:
		if observed == api.PowerStopped {
			err = p.PowerOn(ctx, id)
		}
		if err == nil && observed != api.PowerPaused {
			err = p.Suspend(ctx, id)
		}
	}
	return nil, err
}

// create makes a VM Polyvisor was asked to create in the provider.
func (c *conn) create(ctx context.Context, p provider.Provider, vm *api.VM) (*provider.VM, error) {
	spec := vm.Spec
	cs := provider.CreateSpec{
		Name: vm.Name, VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, Template: spec.Provider.Template,
		Datacenter: spec.Provider.Datacenter, Cluster: spec.Provider.Cluster, Datastore: spec.Provider.Datastore,
		PowerOn: spec.PowerState == api.PowerRunning,
	}
	if len(spec.NICs) > 0 {
		cs.Network = spec.NICs[0].Network
	}
	if h, ok := c.m.cfg.Hosts.Get(spec.Host); ok && h.Provider != nil && h.Provider.Name == c.name {
		cs.Host = h.Provider.ID
	}
	created, err := p.CreateVM(ctx, cs)
	if err != nil {
		return nil, fmt.Errorf("creating in %s: %w", c.name, err)
	}
	c.mu.Lock()
	c.vmIDs[created.ID] = vm.Key()
	c.seen[created.ID] = *created
	c.mu.Unlock()
	return created, nil
}

// reportOrLog reports a failure to converge a VM, logging when even that
// cannot be recorded.
func (m *Manager) reportOrLog(ctx context.Context, name string, gen int64, cause error) {
	if err := m.report(ctx, name, gen, nil, cause); err != nil && ctx.Err() == nil {
		m.log.Warn("recording a failure of a provider vm", "vm", name, "generation", gen, "failure", cause, "err", err)
	}
}

// report records the outcome of converging a VM's generation, on the VM's
// newest version.
func (m *Manager) report(ctx context.Context, name string, gen int64, created *provider.VM, cause error) error {
	return update(ctx, m.writer(), m.cfg.VMs, name, vmVersion, func(cur *api.VM) (*api.VM, error) {
		if cur.Generation != gen {
			return nil, errGone // a newer generation will be converged and reported
		}
		next := store.Clone(cur)
		if created != nil {
			c, _ := m.conn(cur.Spec.Provider.Name)
			ref := *next.Spec.Provider
			ref.ID, ref.Path, ref.Datacenter, ref.Cluster, ref.GuestOS = created.ID, created.Path, created.Datacenter, created.Cluster, created.GuestOS
			next.Spec.Provider = &ref
			if c != nil {
				if h := c.knownHost(created.Host); h != "" {
					next.Spec.Host = h
				}
				next.Status = c.observedStatus(created, next.Status)
			}
		}
		if cause != nil {
			next.Status.Error = &api.VMError{Generation: gen, Message: cause.Error()}
		} else {
			next.Status.Error = nil
			next.Status.ObservedGeneration = gen
			next.Status.ObservedRestartCount = next.Spec.RestartCount
			if created == nil {
				next.Status.PowerState = next.Spec.PowerState
			}
		}
		next.Status.UpdatedAt = time.Now().UTC()
		return next, nil
	})
}

// providerOf returns the connected provider and native id of a VM.
func (m *Manager) providerOf(vm *api.VM) (provider.Provider, string, error) {
	if vm.Spec.Provider == nil {
		return nil, "", fmt.Errorf("vm %q is not a provider vm", vm.Name)
	}
	c, ok := m.conn(vm.Spec.Provider.Name)
	if !ok {
		return nil, "", fmt.Errorf("provider %q does not exist", vm.Spec.Provider.Name)
	}
	p := c.provider()
	if p == nil {
		return nil, "", &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("provider %q is disconnected", c.name)}
	}
	if vm.Spec.Provider.ID == "" {
		return nil, "", api.Conflict("vm %q is not created yet", vm.Name)
	}
	return p, vm.Spec.Provider.ID, nil
}

// Snapshots lists a provider VM's snapshots.
func (m *Manager) Snapshots(ctx context.Context, vm *api.VM) ([]api.Snapshot, error) {
	p, id, err := m.providerOf(vm)
	if err != nil {
		return nil, err
	}
	snaps, err := p.Snapshots(ctx, id)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]api.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, api.Snapshot{Name: s.Name, Description: s.Description, CreatedAt: s.CreatedAt, Current: s.Current})
	}
	return out, nil
}

// Exec carries out an operation that is not a change of desired state
// (snapshots) on a provider VM.
func (m *Manager) Exec(ctx context.Context, vm *api.VM, kind string, snap api.SnapshotCreate) error {
	p, id, err := m.providerOf(vm)
	if err != nil {
		return err
	}
	switch kind {
	case api.OpVMSnapshotCreate:
		err = p.CreateSnapshot(ctx, id, snap.Name, snap.Description)
	case api.OpVMSnapshotRevert:
		err = p.RevertSnapshot(ctx, id, snap.Name)
	case api.OpVMSnapshotDelete:
		err = p.DeleteSnapshot(ctx, id, snap.Name)
	default:
		return fmt.Errorf("unknown operation %q", kind)
	}
	return mapErr(err)
}

// Console returns how to reach a provider VM's console.
func (m *Manager) Console(ctx context.Context, vm *api.VM) (*provider.Console, error) {
	p, id, err := m.providerOf(vm)
	if err != nil {
		return nil, err
	}
	con, err := p.Console(ctx, id)
	return con, mapErr(err)
}

// Capabilities returns what a provider can do, once connected.
func (m *Manager) Capabilities(name string) (provider.Capabilities, bool) {
	c, ok := m.conn(name)
	if !ok {
		return provider.Capabilities{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caps, c.prov != nil
}

// mapErr gives provider errors their API meaning.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, provider.ErrNotFound):
		return &api.Error{Code: api.CodeNotFound, Message: err.Error()}
	case errors.Is(err, provider.ErrExists), errors.Is(err, provider.ErrBadState):
		return &api.Error{Code: api.CodeConflict, Message: err.Error()}
	case errors.Is(err, provider.ErrUnsupported):
		return &api.Error{Code: api.CodeUnprocessable, Message: err.Error()}
	case errors.Is(err, provider.ErrAuth), errors.Is(err, provider.ErrCertificate):
		return &api.Error{Code: api.CodeInvalid, Message: err.Error()}
	case errors.Is(err, provider.ErrUnreachable):
		return &api.Error{Code: api.CodeUnavailable, Message: err.Error()}
	}
	return err
}

// MapError is mapErr for the server: a provider error with its API meaning.
func MapError(err error) error { return mapErr(err) }
