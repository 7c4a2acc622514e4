package ops

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Operation deadlines: a VM operation fails when its host has not
// converged by then.
const (
	deadlineCreate = 10 * time.Minute // includes fetching images to the host
	deadlineAction = 3 * time.Minute
)

// DeadlineFor is how long an operation of kind on vm may take.
func DeadlineFor(kind string, vm *api.VM) time.Duration {
	switch kind {
	case api.OpVMCreate:
		return deadlineCreate
	case api.OpVMStop, api.OpVMRestart, api.OpVMDelete:
		return deadlineAction + time.Duration(vm.Spec.StopTimeoutSeconds)*time.Second
	}
	return deadlineAction
}

// Direct tells whether an operation is carried out by the server itself
// (through the VM's provider) rather than through the VM's desired state.
func Direct(kind string) bool {
	switch kind {
	case api.OpVMSnapshotCreate, api.OpVMSnapshotRevert, api.OpVMSnapshotDelete:
		return true
	}
	return false
}

// applyAction changes a VM's desired state for an operation. It refuses
// (409) an action that makes no sense for the VM's desired state.
func applyAction(vm *api.VM, op *api.Operation) error {
	spec := &vm.Spec
	if spec.Deletion != nil {
		return api.Conflict("vm %q is being deleted", vm.Name)
	}
	var stop api.VMStop
	if len(op.Params) > 0 && (op.Kind == api.OpVMStop || op.Kind == api.OpVMRestart) {
		if err := json.Unmarshal(op.Params, &stop); err != nil {
			return fmt.Errorf("decoding %s parameters: %w", op.Kind, err)
		}
	}
	applyStop := func() {
		if stop.TimeoutSeconds > 0 {
			spec.StopTimeoutSeconds = stop.TimeoutSeconds
		}
		spec.ForceStop = stop.Force
	}
	switch op.Kind {
	case api.OpVMStart:
		spec.PowerState = api.PowerRunning
		spec.ForceStop = false
	case api.OpVMStop:
		spec.PowerState = api.PowerStopped
		applyStop()
	case api.OpVMRestart:
		if spec.PowerState == api.PowerStopped {
			return api.Conflict("vm %q is stopped: start it instead of restarting it", vm.Name)
		}
		applyStop()
		spec.PowerState = api.PowerRunning
		spec.RestartCount++
	case api.OpVMPause:
		if spec.PowerState == api.PowerStopped {
			return api.Conflict("vm %q is stopped: only a running vm can be paused", vm.Name)
		}
		spec.PowerState = api.PowerPaused
	case api.OpVMResume:
		if spec.PowerState == api.PowerStopped {
			return api.Conflict("vm %q is stopped: start it instead of resuming it", vm.Name)
		}
		spec.PowerState = api.PowerRunning
	case api.OpVMReconfigure:
		if spec.PowerState != api.PowerStopped {
			return api.Conflict("vm %q is %s: cpus and memory change while it is stopped", vm.Name, spec.PowerState)
		}
		var rc api.VMReconfigure
		if err := json.Unmarshal(op.Params, &rc); err != nil {
			return fmt.Errorf("decoding reconfigure parameters: %w", err)
		}
		if rc.VCPUs > 0 {
			spec.VCPUs = rc.VCPUs
		}
		if rc.MemoryMiB > 0 {
			spec.MemoryMiB = rc.MemoryMiB
		}
	case api.OpVMSnapshotCreate, api.OpVMSnapshotRevert, api.OpVMSnapshotDelete:
		// Carried out directly by the VM's provider; no desired state.
	case api.OpVMDelete:
		var p struct {
			KeepDisks bool `json:"keepDisks"`
		}
		if len(op.Params) > 0 {
			if err := json.Unmarshal(op.Params, &p); err != nil {
				return fmt.Errorf("decoding delete parameters: %w", err)
			}
		}
		spec.Deletion = &api.Deletion{KeepDisks: p.KeepDisks, RequestedAt: time.Now().UTC()}
	default:
		return fmt.Errorf("unknown vm operation %q", op.Kind)
	}
	return nil
}
