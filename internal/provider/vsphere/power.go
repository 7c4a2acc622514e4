package vsphere

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// vmState is what a lifecycle action checks before it acts.
type vmState struct {
	power    types.VirtualMachinePowerState
	tools    bool // VMware Tools run in the guest
	template bool
}

// machine returns the client and the VM with id, and reads its state.
func (p *Provider) machine(ctx context.Context, id string) (*vim25.Client, *object.VirtualMachine, vmState, error) {
	var st vmState
	if id == "" {
		return nil, nil, st, fmt.Errorf("vm with no id: %w", provider.ErrNotFound)
	}
	c, err := p.conn()
	if err != nil {
		return nil, nil, st, err
	}
	vm := object.NewVirtualMachine(c, vmRef(id))
	m, err := props(ctx, c, vm.Reference(), "runtime.powerState", "guest.toolsRunningStatus", "config.template")
	if err != nil {
		return nil, nil, st, err
	}
	st.power = types.VirtualMachinePowerState(asString(m["runtime.powerState"]))
	st.tools = asString(m["guest.toolsRunningStatus"]) == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	st.template = asBool(m["config.template"])
	return c, vm, st, nil
}

// await returns a function that waits for the task a call started:
// await(ctx)(vm.PowerOn(ctx)).
func await(ctx context.Context) func(*object.Task, error) error {
	return func(t *object.Task, err error) error {
		if err != nil {
			return classify(err)
		}
		return classify(t.Wait(ctx))
	}
}

// badState says why an action does not fit the VM's power state.
func badState(st vmState, want string) error {
	return fmt.Errorf("%w: it is %s, it must be %s", provider.ErrBadState, powerState(st.power), want)
}

// PowerOn starts a stopped VM or resumes a suspended one; a running VM is
// left as it is.
func (p *Provider) PowerOn(ctx context.Context, id string) error {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("power on vm %s: %w", id, err)
	}
	switch {
	case st.template:
		return fmt.Errorf("power on vm %s: %w: it is a template", id, provider.ErrBadState)
	case st.power == types.VirtualMachinePowerStatePoweredOn:
		return nil
	}
	if err := await(ctx)(vm.PowerOn(ctx)); err != nil {
		return fmt.Errorf("power on vm %s: %w", id, err)
	}
	p.log.Info("vm powered on", "vm", id)
	return nil
}

// Resume continues a suspended VM: vSphere resumes by powering on.
func (p *Provider) Resume(ctx context.Context, id string) error {
	return p.PowerOn(ctx, id)
}

// PowerOff stops the VM at once; a stopped VM is left as it is.
func (p *Provider) PowerOff(ctx context.Context, id string) error {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("power off vm %s: %w", id, err)
	}
	if err := p.powerOff(ctx, vm, st); err != nil {
		return fmt.Errorf("power off vm %s: %w", id, err)
	}
	return nil
}

func (p *Provider) powerOff(ctx context.Context, vm *object.VirtualMachine, st vmState) error {
	if st.power == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	if err := await(ctx)(vm.PowerOff(ctx)); err != nil {
		// It may have stopped on its own meanwhile.
		if errors.Is(err, provider.ErrBadState) {
			if s, _ := vm.PowerState(ctx); s == types.VirtualMachinePowerStatePoweredOff {
				return nil
			}
		}
		return err
	}
	p.log.Info("vm powered off", "vm", vm.Reference().Value)
	return nil
}

// Shutdown asks VMware Tools in the guest to shut it down and waits up to
// timeout for the VM to stop, then powers it off. Without Tools running
// (or for a suspended VM) it powers off at once.
func (p *Provider) Shutdown(ctx context.Context, id string, timeout time.Duration) error {
	c, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("shut down vm %s: %w", id, err)
	}
	if st.power == types.VirtualMachinePowerStatePoweredOn && st.tools {
		if err := vm.ShutdownGuest(ctx); err != nil {
			p.log.Info("guest shutdown refused, powering off", "vm", id, "err", describe(err))
		} else {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			err := waitPower(wctx, c, vm.Reference(), types.VirtualMachinePowerStatePoweredOff)
			cancel()
			if err == nil {
				p.log.Info("vm shut down", "vm", id)
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("shut down vm %s: %w", id, ctx.Err())
			}
			p.log.Info("guest did not shut down in time, powering off", "vm", id, "timeout", timeout)
			st.power = types.VirtualMachinePowerStatePoweredOn
		}
	}
	if err := p.powerOff(ctx, vm, st); err != nil {
		return fmt.Errorf("shut down vm %s: %w", id, err)
	}
	return nil
}

// waitPower waits until the VM's power state is want, or ctx ends.
func waitPower(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference, want types.VirtualMachinePowerState) error {
	reached := false
	err := property.Wait(ctx, property.DefaultCollector(c), ref, []string{"runtime.powerState"},
		func(changes []types.PropertyChange) bool {
			for _, ch := range changes {
				if ch.Name == "runtime.powerState" && types.VirtualMachinePowerState(asString(ch.Val)) == want {
					reached = true
				}
			}
			return reached
		})
	switch {
	case reached:
		return nil
	case ctx.Err() != nil:
		// A cancelled wait returns no error of its own.
		return ctx.Err()
	case err != nil:
		return classify(err)
	}
	return fmt.Errorf("power state %s not reached", want)
}

// Reboot restarts the guest through VMware Tools when they run, and
// resets the VM otherwise.
func (p *Provider) Reboot(ctx context.Context, id string) error {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("reboot vm %s: %w", id, err)
	}
	if st.power != types.VirtualMachinePowerStatePoweredOn {
		return fmt.Errorf("reboot vm %s: %w", id, badState(st, provider.PowerRunning))
	}
	if st.tools {
		err := vm.RebootGuest(ctx)
		if err == nil {
			p.log.Info("guest rebooted", "vm", id)
			return nil
		}
		p.log.Info("guest reboot refused, resetting", "vm", id, "err", describe(err))
	}
	if err := await(ctx)(vm.Reset(ctx)); err != nil {
		return fmt.Errorf("reset vm %s: %w", id, err)
	}
	p.log.Info("vm reset", "vm", id)
	return nil
}

// Suspend suspends a running VM; a suspended one is left as it is.
func (p *Provider) Suspend(ctx context.Context, id string) error {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("suspend vm %s: %w", id, err)
	}
	switch st.power {
	case types.VirtualMachinePowerStateSuspended:
		return nil
	case types.VirtualMachinePowerStatePoweredOn:
	default:
		return fmt.Errorf("suspend vm %s: %w", id, badState(st, provider.PowerRunning))
	}
	if err := await(ctx)(vm.Suspend(ctx)); err != nil {
		return fmt.Errorf("suspend vm %s: %w", id, err)
	}
	p.log.Info("vm suspended", "vm", id)
	return nil
}

// Delete destroys a stopped VM and its disks.
func (p *Provider) Delete(ctx context.Context, id string) error {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	if st.power != types.VirtualMachinePowerStatePoweredOff {
		return fmt.Errorf("delete vm %s: %w", id, badState(st, provider.PowerStopped))
	}
	if err := await(ctx)(vm.Destroy(ctx)); err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	p.log.Info("vm deleted", "vm", id)
	return nil
}

// Reconfigure sets the CPUs and memory of a stopped VM; a zero leaves
// that one as it is.
func (p *Provider) Reconfigure(ctx context.Context, id string, vcpus int, memoryMiB int64) error {
	if vcpus < 0 || memoryMiB < 0 {
		return fmt.Errorf("reconfigure vm %s: negative cpus or memory", id)
	}
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("reconfigure vm %s: %w", id, err)
	}
	if st.power != types.VirtualMachinePowerStatePoweredOff {
		return fmt.Errorf("reconfigure vm %s: %w", id, badState(st, provider.PowerStopped))
	}
	spec := types.VirtualMachineConfigSpec{NumCPUs: int32(vcpus), MemoryMB: memoryMiB}
	if err := await(ctx)(vm.Reconfigure(ctx, spec)); err != nil {
		return fmt.Errorf("reconfigure vm %s: %w", id, err)
	}
	p.log.Info("vm reconfigured", "vm", id, "vcpus", vcpus, "memoryMiB", memoryMiB)
	return nil
}
