package vsphere

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

func TestLifecycle(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	ctx := testCtx(t)
	id := e.vmByName(t, "DC0_C0_RP0_VM0").Reference().Value
	expect := func(want types.VirtualMachinePowerState) {
		t.Helper()
		if got := e.power(t, id); got != want {
			t.Fatalf("govmomi sees %s, want %s", got, want)
		}
	}
	bad := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, provider.ErrBadState) {
			t.Fatalf("%s: err = %v, want ErrBadState", what, err)
		}
	}

	expect(types.VirtualMachinePowerStatePoweredOn)
	must(t, p.PowerOn(ctx, id)) // already running: nothing to do
	must(t, p.Suspend(ctx, id))
	expect(types.VirtualMachinePowerStateSuspended)
	must(t, p.Suspend(ctx, id))
	bad("reconfigure while suspended", p.Reconfigure(ctx, id, 2, 2048))
	must(t, p.Resume(ctx, id))
	expect(types.VirtualMachinePowerStatePoweredOn)

	// No VMware Tools in vcsim's guests: reboot resets, shutdown powers off
	// without waiting.
	must(t, p.Reboot(ctx, id))
	expect(types.VirtualMachinePowerStatePoweredOn)
	start := time.Now()
	must(t, p.Shutdown(ctx, id, time.Minute))
	expect(types.VirtualMachinePowerStatePoweredOff)
	// A liveness bound, not a speed one: without tools there is nothing to
	// wait for, and half the minute's timeout tells that from a wait.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("shutdown without tools took %v: it waited for the guest", d)
	}
	must(t, p.Shutdown(ctx, id, time.Minute)) // already off
	must(t, p.PowerOff(ctx, id))
	bad("reboot while off", p.Reboot(ctx, id))
	bad("suspend while off", p.Suspend(ctx, id))

	must(t, p.Reconfigure(ctx, id, 3, 3072))
	hw := e.vm(t, id, "config.hardware").Config.Hardware
	if hw.NumCPU != 3 || hw.MemoryMB != 3072 {
		t.Fatalf("after reconfigure govmomi sees %d cpus, %d MiB", hw.NumCPU, hw.MemoryMB)
	}

	must(t, p.PowerOn(ctx, id))
	expect(types.VirtualMachinePowerStatePoweredOn)
	bad("reconfigure while running", p.Reconfigure(ctx, id, 1, 1024))
	bad("delete while running", p.Delete(ctx, id))
	must(t, p.PowerOff(ctx, id))
	expect(types.VirtualMachinePowerStatePoweredOff)
	must(t, p.Delete(ctx, id))
	for _, vm := range e.vms(t) {
		if vm.Self.Value == id {
			t.Fatalf("govmomi still sees %s after delete", id)
		}
	}
	if err := p.PowerOn(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("power on a deleted vm: err = %v, want ErrNotFound", err)
	}
	if err := p.Delete(ctx, "vm-nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("delete an unknown vm: err = %v, want ErrNotFound", err)
	}
}

// guestVM is a vcsim VM with VMware Tools in its guest: it counts guest
// shutdowns and reboots, can ignore shutdown requests (deaf), and hands
// out WebMKS tickets, which vcsim does not.
type guestVM struct {
	*simulator.VirtualMachine
	deaf      bool
	shutdowns atomic.Int32
	reboots   atomic.Int32
}

func (vm *guestVM) ShutdownGuest(ctx *simulator.Context, req *types.ShutdownGuest) soap.HasFault {
	vm.shutdowns.Add(1)
	if vm.deaf {
		return &methods.ShutdownGuestBody{Res: new(types.ShutdownGuestResponse)}
	}
	return vm.VirtualMachine.ShutdownGuest(ctx, req)
}

func (vm *guestVM) RebootGuest(ctx *simulator.Context, req *types.RebootGuest) soap.HasFault {
	vm.reboots.Add(1)
	return vm.VirtualMachine.RebootGuest(ctx, req)
}

func (vm *guestVM) AcquireTicket(req *types.AcquireTicket) soap.HasFault {
	body := new(methods.AcquireTicketBody)
	if req.TicketType != string(types.VirtualMachineTicketTypeWebmks) {
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "ticketType"})
		return body
	}
	body.Res = &types.AcquireTicketResponse{Returnval: types.VirtualMachineTicket{
		Ticket: "ticket-for-" + vm.Name, Host: "esx-7.example", Port: 443}}
	return body
}

// withGuest gives the VM named name VMware Tools.
func (e *simEnv) withGuest(t *testing.T, name string, deaf bool) (string, *guestVM) {
	t.Helper()
	ref := e.vmByName(t, name).Reference()
	reg := e.model.Service.Context.Map
	g := &guestVM{VirtualMachine: reg.Get(ref).(*simulator.VirtualMachine), deaf: deaf}
	reg.Put(g)
	e.setTools(t, ref.Value, true)
	return ref.Value, g
}

func TestGuestActions(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	ctx := testCtx(t)

	t.Run("shutdown", func(t *testing.T) {
		id, g := e.withGuest(t, "DC0_C0_RP0_VM0", false)
		must(t, p.Shutdown(ctx, id, time.Minute))
		if g.shutdowns.Load() != 1 || e.power(t, id) != types.VirtualMachinePowerStatePoweredOff {
			t.Fatalf("%d guest shutdowns, power %s", g.shutdowns.Load(), e.power(t, id))
		}
	})

	t.Run("shutdown ignored", func(t *testing.T) {
		id, g := e.withGuest(t, "DC0_C0_RP0_VM1", true)
		start := time.Now()
		must(t, p.Shutdown(ctx, id, time.Second))
		took := time.Since(start)
		if g.shutdowns.Load() != 1 || e.power(t, id) != types.VirtualMachinePowerStatePoweredOff {
			t.Fatalf("%d guest shutdowns, power %s", g.shutdowns.Load(), e.power(t, id))
		}
		// At least the timeout: it did wait. At most a generous liveness
		// bound (the test's context would end a wait for ever).
		if took < time.Second || took > 30*time.Second {
			t.Errorf("shutdown took %v, want the 1 s timeout and a power-off", took)
		}
	})

	t.Run("reboot", func(t *testing.T) {
		id, g := e.withGuest(t, "DC0_C1_RP0_VM0", false)
		must(t, p.Reboot(ctx, id))
		if g.reboots.Load() != 1 || e.power(t, id) != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("%d guest reboots, power %s", g.reboots.Load(), e.power(t, id))
		}
	})

	t.Run("console", func(t *testing.T) {
		id, _ := e.withGuest(t, "DC0_C1_RP0_VM1", false)
		con, err := p.Console(ctx, id)
		must(t, err)
		want := provider.Console{Type: "webmks", Host: "esx-7.example", Port: 443,
			Ticket: "ticket-for-DC0_C1_RP0_VM1", URL: "wss://esx-7.example:443/ticket/ticket-for-DC0_C1_RP0_VM1"}
		if *con != want {
			t.Fatalf("console %+v, want %+v", *con, want)
		}
		must(t, p.PowerOff(ctx, id))
		if _, err := p.Console(ctx, id); !errors.Is(err, provider.ErrBadState) {
			t.Fatalf("console of a stopped vm: err = %v, want ErrBadState", err)
		}
	})

	t.Run("console unsupported by vcsim", func(t *testing.T) {
		id := e.vmByName(t, "DC1_H0_VM0").Reference().Value
		_, err := p.Console(ctx, id)
		if !errors.Is(err, provider.ErrUnsupported) {
			t.Fatalf("err = %v, want ErrUnsupported (vcsim has no AcquireTicket)", err)
		}
		t.Log(err)
	})
}
