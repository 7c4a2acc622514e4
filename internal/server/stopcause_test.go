package server

import (
	"context"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestStopCause: the server reacts to the typed stop cause a host
// reports, never to a reason's text. A guest that powered itself off, and
// a crash under onCrash stop, make stopped the desired state, as a stop
// would; a crash under the default policy (restart), a report for an
// older generation, or a reason without a cause change nothing.
func TestStopCause(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	pa := e.super.WithProject("pa")
	_, err := pa.CreateVM(ctx, api.VMCreate{Name: "brittle", VCPUs: 1, MemoryMiB: 128, Host: "h1",
		Disks: []api.Disk{{Image: "img"}}, OnCrash: api.OnCrashStop}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h1 := e.as("h1", "")
	report := func(name string, st api.VMStatus) *api.VM {
		t.Helper()
		vm, err := h1.PutVMStatus(ctx, "pa/"+name, st)
		if err != nil {
			t.Fatalf("reporting %s: %v", name, err)
		}
		return vm
	}
	running := func(name string) *api.VM {
		t.Helper()
		vm, err := pa.GetVM(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if vm.Spec.OnCrash == "" {
			t.Fatalf("vm %s has no crash policy: %+v", name, vm.Spec)
		}
		return report(name, api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: vm.Generation, PID: 42})
	}

	// vm1 has the default policy, restart.
	vm := running("vm1")
	if vm.Spec.OnCrash != api.OnCrashRestart {
		t.Fatalf("default crash policy %q", vm.Spec.OnCrash)
	}
	gen := vm.Generation
	for _, st := range []api.VMStatus{
		{PowerState: api.PowerCrashed, StopCause: api.StopCauseCrash, Reason: "qemu exited unexpectedly"},
		{PowerState: api.PowerCrashed, StopCause: api.StopCauseInternalError, Reason: "KVM internal error"},
		{PowerState: api.PowerStopped, Reason: "guest shut down"}, // a text is no cause
		{PowerState: api.PowerStopped, StopCause: api.StopCauseRequested},
	} {
		st.ObservedGeneration = gen
		if vm := report("vm1", st); vm.Spec.PowerState != api.PowerRunning || vm.Generation != gen {
			t.Fatalf("after %+v: desired %s generation %d", st, vm.Spec.PowerState, vm.Generation)
		}
	}
	// A poweroff reported for an older generation: an operation decides.
	if vm := report("vm1", api.VMStatus{PowerState: api.PowerStopped, StopCause: api.StopCauseGuestPoweroff, ObservedGeneration: gen - 1}); vm.Spec.PowerState != api.PowerRunning {
		t.Fatalf("a stale poweroff changed the desired state: %+v", vm.Spec)
	}
	vm = report("vm1", api.VMStatus{PowerState: api.PowerStopped, StopCause: api.StopCauseGuestPoweroff, ObservedGeneration: gen, Reason: "the guest powered itself off"})
	if vm.Spec.PowerState != api.PowerStopped || vm.Generation != gen+1 || vm.Status.ObservedGeneration != gen+1 {
		t.Fatalf("after a guest poweroff: desired %s generation %d observed %d", vm.Spec.PowerState, vm.Generation, vm.Status.ObservedGeneration)
	}

	// brittle crashes under onCrash stop.
	vm = running("brittle")
	gen = vm.Generation
	vm = report("brittle", api.VMStatus{PowerState: api.PowerCrashed, StopCause: api.StopCauseGuestPanic, ObservedGeneration: gen})
	if vm.Spec.PowerState != api.PowerStopped || vm.Generation != gen+1 || vm.Status.PowerState != api.PowerCrashed {
		t.Fatalf("after a crash under onCrash stop: %+v %+v", vm.Spec, vm.Status)
	}
	// Listed as crashed.
	vms, err := pa.ListAllVMs(ctx, api.ListOptions{State: api.PowerCrashed})
	if err != nil || len(vms) != 1 || vms[0].Name != "brittle" {
		t.Fatalf("crashed vms: %+v %v", vms, err)
	}
}
