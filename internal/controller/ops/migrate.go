package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// deadlineMigrate bounds a migration: disks and memory copied, the guest
// running on the target.
const deadlineMigrate = 15 * time.Minute

// applyMigrate asks the VM's host to migrate it to the target the
// operation names: a running VM live, a stopped one offline (its disks
// copied). A paused VM does not move.
func applyMigrate(vm *api.VM, op *api.Operation) error {
	var m api.VMMigrate
	if err := json.Unmarshal(op.Params, &m); err != nil {
		return fmt.Errorf("decoding migrate parameters: %w", err)
	}
	switch {
	case m.Host == "":
		return errors.New("migrate operation names no target host")
	case vm.Spec.PowerState != api.PowerRunning && vm.Spec.PowerState != api.PowerStopped:
		return api.Unprocessable("vm %q is %s: only a running vm migrates live, and a stopped one offline", vm.Name, vm.Spec.PowerState)
	case m.Host == vm.Spec.Host:
		return api.Unprocessable("vm %q already runs on host %q", vm.Name, m.Host)
	}
	vm.Spec.Migration = &api.Migration{Operation: op.ID, Target: m.Host, Offline: vm.Spec.PowerState == api.PowerStopped}
	return nil
}

// stepMigrate completes a running migration once the target reports the
// VM running there (the VM's host becomes the target), or fails it once
// either side reports a failure, a host is lost or the deadline passes
// (the VM stays where it was). It reports whether the queue may advance.
func (c *Controller) stepMigrate(ctx context.Context, t *term, vm *api.VM, op *api.Operation) (bool, error) {
	spec := vm.Spec.Migration
	if spec == nil || spec.Operation != op.ID {
		return true, c.finishLocked(ctx, t.w, op, api.OpFailed, api.Conflict("vm %q is no longer migrating", vm.Name))
	}
	var rec *api.AgentMigration
	if c.migrations != nil {
		rec, _ = c.migrations.Get(op.ID)
	}
	st := vm.Status.Migration
	switch {
	case rec != nil && rec.State == api.IncomingRunning:
		return true, c.endMigrationLocked(ctx, t.w, vm, op, api.OpSucceeded, nil)
	case rec != nil && rec.State == api.IncomingFailed:
		return true, c.endMigrationLocked(ctx, t.w, vm, op, api.OpFailed, fmt.Errorf("host %q could not receive vm %q: %s", spec.Target, vm.Name, rec.Error))
	case st != nil && st.Operation == op.ID && st.Phase == api.MigrationFailed:
		return true, c.endMigrationLocked(ctx, t.w, vm, op, api.OpFailed, fmt.Errorf("host %q could not migrate vm %q: %s", vm.Spec.Host, vm.Name, st.Error))
	case !op.Deadline.IsZero() && time.Now().After(op.Deadline):
		return true, c.endMigrationLocked(ctx, t.w, vm, op, api.OpFailed, fmt.Errorf("timed out: vm %q did not reach host %q by %s", vm.Name, spec.Target, op.Deadline.Format(time.RFC3339)))
	}
	for _, name := range []string{vm.Spec.Host, spec.Target} {
		if h, ok := c.hosts.Get(name); !ok || h.Status.State == api.HostNotReady {
			return true, c.endMigrationLocked(ctx, t.w, vm, op, api.OpFailed, api.Unprocessable("host %q is not ready", name))
		}
	}
	return false, nil
}

// endMigrationLocked records a migration's outcome with the VM's spec:
// on success the VM's host is the target; otherwise the VM stays on its
// host, which cancels what it started and resumes the guest, and the
// target removes what it made. The destination's record goes.
func (c *Controller) endMigrationLocked(ctx context.Context, w store.Writer, vm *api.VM, op *api.Operation, status string, cause error) error {
	nv := store.Clone(vm)
	if status == api.OpSucceeded {
		nv.Spec.Host = vm.Spec.Migration.Target
		// What the old host observed says nothing of the new one.
		nv.Status.ObservedGeneration, nv.Status.PID, nv.Status.Console = 0, 0, api.Console{}
	}
	nv.Spec.Migration = nil
	nv.Generation++
	nv.UpdatedAt = time.Now().UTC()
	extra := []store.Op{c.vms.OpUpdate(vm.Key(), nv, vm.Version)}
	if c.migrations != nil {
		if rec, ok := c.migrations.Get(op.ID); ok {
			extra = append(extra, c.migrations.OpDelete(op.ID, rec.Version))
		}
	}
	return c.finishLocked(ctx, w, op, status, cause, extra...)
}

// cancelMigration cancels a running migration: the VM stays on its host.
// The caller holds the VM's lock.
func (c *Controller) cancelMigrationLocked(ctx context.Context, op *api.Operation) error {
	vm, ok := c.vms.Get(TargetKey(op.Target))
	if !ok || vm.Spec.Migration == nil || vm.Spec.Migration.Operation != op.ID {
		return c.finishLocked(ctx, c.w, op, api.OpCancelled, nil)
	}
	return c.endMigrationLocked(ctx, c.w, vm, op, api.OpCancelled, nil)
}
