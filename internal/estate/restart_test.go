package estate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// TestManagerRestart: a manager started again over the same store, as
// after a server restart, knows every VM it mirrored by the key it is
// stored under ("<project>/<name>"): no VM is mirrored a second time, a VM
// removed from the provider meanwhile leaves the store, a create asked for
// meanwhile is carried out, and a VM created through Polyvisor afterwards
// is mirrored once.
func TestManagerRestart(t *testing.T) {
	ctx := context.Background()
	sim := benchNewSim(t, simulator.VPX())
	env := benchOpenEnv(t, t.TempDir())
	env.addProvider(t, "vc", sim.spec(), benchSimPass)
	env.start(t)
	vms := sim.vms(t, "name")
	restartEventually(t, "the first sync", func() error { return restartMirrored(env, len(vms)) })
	env.stop()

	// While the manager is stopped: a VM goes away from vCenter, and a
	// user asks for a new one.
	gone := vms[0]
	vm := object.NewVirtualMachine(sim.c, gone.Self)
	if task, err := vm.PowerOff(ctx); err == nil {
		_ = task.Wait(ctx)
	}
	task, err := vm.Destroy(ctx)
	benchMust(t, err)
	benchMust(t, task.Wait(ctx))
	restartCreate(t, env, "queued")

	restarted := time.Now()
	env.start(t)
	restartEventually(t, "the sync after the restart", func() error {
		p, _ := env.providers.Get("vc")
		if p.Status.State != api.ProviderConnected || p.Status.LastSync.Before(restarted) {
			return fmt.Errorf("provider %s, last synced %v", p.Status.State, p.Status.LastSync)
		}
		if err := restartMirrored(env, len(vms)); err != nil {
			return err
		}
		if vm, ok := env.vms.Get("default/queued"); !ok || vm.Spec.Provider.ID == "" {
			return fmt.Errorf("the create asked for while the manager was stopped is not carried out: %+v", vm)
		}
		return nil
	})
	for _, vm := range env.providerVMs("vc") {
		if vm.Spec.Provider.ID == gone.Self.Value {
			t.Errorf("vm %s, removed from the provider, is still in the store", vm.Key())
		}
	}

	restartCreate(t, env, "made")
	restartEventually(t, "the create through Polyvisor", func() error {
		vm, ok := env.vms.Get("default/made")
		if !ok || vm.Spec.Provider.ID == "" || vm.Status.ObservedGeneration != vm.Generation {
			return fmt.Errorf("vm made: %+v", vm)
		}
		return nil
	})
	benchMust(t, env.mgr.Refresh(ctx, "vc"))
	if err := restartMirrored(env, len(vms)+1); err != nil {
		t.Error(err)
	}
}

// restartMirrored checks that the store holds n VMs of provider vc, each
// once, each in project default under its key.
func restartMirrored(env *benchEnv, n int) error {
	items, _, _ := env.vms.List(store.ListOptions[api.VM]{})
	ids := map[string]string{}
	for _, vm := range items {
		ref := vm.Spec.Provider
		if ref == nil || ref.Name != "vc" {
			continue
		}
		if vm.Project != api.DefaultProject {
			return fmt.Errorf("vm %q of the provider is in project %q", vm.Key(), vm.Project)
		}
		if prev, dup := ids[ref.ID]; dup && ref.ID != "" {
			return fmt.Errorf("native vm %s is mirrored twice: %s and %s", ref.ID, prev, vm.Key())
		}
		ids[ref.ID] = vm.Key()
	}
	if len(ids) != n {
		return fmt.Errorf("the store holds %d vms of the provider, want %d", len(ids), n)
	}
	return nil
}

// restartCreate stores a VM to create in the provider, as POST /v1/vms
// does.
func restartCreate(t *testing.T, env *benchEnv, name string) {
	t.Helper()
	now := time.Now().UTC()
	vm := &api.VM{
		Meta: api.Meta{Name: name, Project: api.DefaultProject, UID: "restart-" + name, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.VMSpec{VCPUs: 1, MemoryMiB: 64, PowerState: api.PowerRunning, StopTimeoutSeconds: 30,
			Provider: &api.ProviderRef{Name: "vc", Type: "vsphere", Template: "DC0_C0_RP0_VM1"}},
		Status: api.VMStatus{PowerState: api.PowerPending},
	}
	if _, err := env.vms.Create(context.Background(), vm.Key(), vm); err != nil {
		t.Fatalf("storing vm %s: %v", name, err)
	}
}

func restartEventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
