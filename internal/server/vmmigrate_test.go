package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestMigrateThroughTheAPI plays both hosts' agents with their host
// tokens: refusals (422) for an unknown, the same, a cordoned or a full
// target and a stopped VM; then a migration whose room is held on the
// target, whose listening record only the two hosts see, and which moves
// the VM's host once the target reports it running.
func TestMigrateThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pa := e.super.WithProject("pa")
	h1, h2 := e.as("h1", ""), e.as("h2", "")

	op, err := pa.CreateVM(ctx, api.VMCreate{Name: "mover", VCPUs: 32, MemoryMiB: 128, Host: "h1", Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := pa.GetVM(ctx, "mover")
	if _, err := h1.PutVMStatus(ctx, "pa/mover", api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: vm.Generation}); err != nil {
		t.Fatal(err)
	}
	if done, err := pa.WaitOperation(ctx, op.ID, nil); err != nil || done.Status != api.OpSucceeded {
		t.Fatalf("create: %+v, %v", done, err)
	}

	refused := func(host, want string) {
		t.Helper()
		_, err := pa.MigrateVM(ctx, "mover", api.VMMigrate{Host: host})
		if client.HTTPStatus(err) != 422 || !strings.Contains(err.Error(), want) {
			t.Errorf("migrating to %q: %v, want 422 saying %q", host, err, want)
		}
	}
	refused("h7", "does not exist")
	refused("h1", "already runs on")
	if _, err := e.super.CordonHost(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	refused("h2", "cordoned")
	refused("", "unschedulable") // the scheduler has only h2 to pick
	if _, err := e.super.UncordonHost(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	// Fill h2's memory but for 64 MiB: the 128 MiB VM does not fit.
	h, _ := e.super.GetHost(ctx, "h2")
	free := h.Status.Capacity.MemoryMiB - h.Status.Allocated.MemoryMiB
	if _, err := pa.CreateVM(ctx, api.VMCreate{Name: "filler", VCPUs: 1, MemoryMiB: free - 64, Host: "h2",
		Disks: []api.Disk{{Image: "img"}}, PowerState: api.PowerStopped}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	refused("h2", "cannot take the vm")
	// As h2's agent would: the filler made, then removed.
	f, _ := pa.GetVM(ctx, "filler")
	if _, err := h2.PutVMStatus(ctx, "pa/filler", api.VMStatus{PowerState: api.PowerStopped, ObservedGeneration: f.Generation}); err != nil {
		t.Fatal(err)
	}
	if _, err := pa.DeleteVM(ctx, "filler", false); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := pa.GetVM(ctx, "filler"); client.IsNotFound(err) {
			break
		} else if ctx.Err() != nil {
			t.Fatal("filler not gone")
		}
		// No agent runs here: report it removed as its host would.
		e.as("h2", "").VMRemoved(ctx, "pa/filler")
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := pa.CreateVM(ctx, api.VMCreate{Name: "resting", VCPUs: 1, MemoryMiB: 128, Host: "h1",
		Disks: []api.Disk{{Image: "img"}}, PowerState: api.PowerStopped}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A stopped VM moves offline: h2 pulls its disks, then takes it,
	// still stopped.
	rv, _ := pa.GetVM(ctx, "resting")
	if _, err := h1.PutVMStatus(ctx, "pa/resting", api.VMStatus{PowerState: api.PowerStopped, ObservedGeneration: rv.Generation}); err != nil {
		t.Fatal(err)
	}
	move, err := pa.MigrateVM(ctx, "resting", api.VMMigrate{Host: "h2"})
	if err != nil {
		t.Fatalf("moving a stopped vm: %v", err)
	}
	if rv, _ = pa.GetVM(ctx, "resting"); rv.Spec.Migration == nil || !rv.Spec.Migration.Offline || rv.Spec.Migration.Target != "h2" {
		t.Fatalf("a stopped vm's move: spec.migration %+v", rv.Spec.Migration)
	}
	if _, err := h2.PutAgentMigration(ctx, api.AgentMigration{Operation: move.ID, State: api.IncomingRunning}); err != nil {
		t.Fatal(err)
	}
	if done, err := pa.WaitOperation(ctx, move.ID, nil); err != nil || done.Status != api.OpSucceeded {
		t.Fatalf("moving a stopped vm: %+v, %v", done, err)
	}
	if rv, _ = pa.GetVM(ctx, "resting"); rv.Spec.Host != "h2" || rv.Spec.PowerState != api.PowerStopped || rv.Spec.Migration != nil {
		t.Errorf("the moved vm: host %s, power %s, migration %+v", rv.Spec.Host, rv.Spec.PowerState, rv.Spec.Migration)
	}

	before, _ := e.super.GetHost(ctx, "h2")
	src, _ := e.super.GetHost(ctx, "h1")
	mig, err := pa.MigrateVM(ctx, "mover", api.VMMigrate{})
	if err != nil {
		t.Fatalf("migrating to the scheduler's choice: %v", err)
	}
	vm, _ = pa.GetVM(ctx, "mover")
	if vm.Spec.Migration == nil || vm.Spec.Migration.Target != "h2" || vm.Spec.Migration.Operation != mig.ID {
		t.Fatalf("spec.migration %+v", vm.Spec.Migration)
	}
	if after, _ := e.super.GetHost(ctx, "h2"); after.Status.Allocated.VCPUs != before.Status.Allocated.VCPUs+32 {
		t.Errorf("h2 holds %d vCPUs during the migration, want %d", after.Status.Allocated.VCPUs, before.Status.Allocated.VCPUs+32)
	}
	if _, err := pa.MigrateVM(ctx, "mover", api.VMMigrate{Host: "h2"}); client.HTTPStatus(err) != 409 {
		t.Errorf("a second migration while one runs: %v, want 409", err)
	}

	// The target records where it listens; the source reads it; users
	// never see it.
	if _, err := h1.PutAgentMigration(ctx, api.AgentMigration{Operation: mig.ID, State: api.IncomingListening}); !client.IsNotFound(err) {
		t.Errorf("the source recording the target's side: %v, want 404", err)
	}
	rec := api.AgentMigration{Operation: mig.ID, State: api.IncomingListening, Address: "10.0.0.2:4711", Token: strings.Repeat("ab", 32)}
	if _, err := h2.PutAgentMigration(ctx, rec); err != nil {
		t.Fatalf("the target recording its side: %v", err)
	}
	got, err := h1.AgentMigration(ctx, mig.ID)
	if err != nil || got.Address != rec.Address || got.Token != rec.Token || got.Source != "h1" || got.Target != "h2" || got.VM != "pa/mover" {
		t.Fatalf("the source reading the target's side: %+v, %v", got, err)
	}
	if _, err := pa.AgentMigration(ctx, mig.ID); client.HTTPStatus(err) != 403 {
		t.Errorf("a user reading the migration's record: %v, want 403", err)
	}
	if _, err := h2.PutAgentMigration(ctx, api.AgentMigration{Operation: mig.ID, State: api.IncomingRunning}); err != nil {
		t.Fatal(err)
	}
	done, err := pa.WaitOperation(ctx, mig.ID, nil)
	if err != nil || done.Status != api.OpSucceeded {
		t.Fatalf("migration: %+v, %v", done, err)
	}
	vm, _ = pa.GetVM(ctx, "mover")
	if vm.Spec.Host != "h2" || vm.Spec.Migration != nil {
		t.Errorf("after the migration: host %s, migration %+v", vm.Spec.Host, vm.Spec.Migration)
	}
	if _, err := h1.AgentMigration(ctx, mig.ID); !client.IsNotFound(err) {
		t.Errorf("the record after the migration: %v, want gone", err)
	}
	// Back to h1, cancelled while it runs: the VM stays on h2, h1's room
	// is given back, the record goes.
	back, err := pa.MigrateVM(ctx, "mover", api.VMMigrate{Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h1.PutAgentMigration(ctx, api.AgentMigration{Operation: back.ID, State: api.IncomingListening, Address: "10.0.0.1:4711", Token: rec.Token}); err != nil {
		t.Fatal(err)
	}
	if c, err := pa.CancelOperation(ctx, back.ID); err != nil || c.Status != api.OpCancelled {
		t.Fatalf("cancelling a running migration: %+v, %v", c, err)
	}
	vm, _ = pa.GetVM(ctx, "mover")
	if vm.Spec.Host != "h2" || vm.Spec.Migration != nil {
		t.Errorf("after the cancel: host %s, migration %+v", vm.Spec.Host, vm.Spec.Migration)
	}
	if _, err := h2.AgentMigration(ctx, back.ID); !client.IsNotFound(err) {
		t.Errorf("the record after the cancel: %v, want gone", err)
	}
	if a, _ := e.super.GetHost(ctx, "h1"); a.Status.Allocated.VCPUs != src.Status.Allocated.VCPUs-32 {
		t.Errorf("h1 holds %d vCPUs after the vm left, want %d", a.Status.Allocated.VCPUs, src.Status.Allocated.VCPUs-32)
	}
	if a, _ := e.super.GetHost(ctx, "h2"); a.Status.Allocated.VCPUs != before.Status.Allocated.VCPUs+32 {
		t.Errorf("h2 holds %d vCPUs after the vm came, want %d", a.Status.Allocated.VCPUs, before.Status.Allocated.VCPUs+32)
	}
}

// TestMigrateWithVolumes: a VM with a shared pool's volume migrates (the
// volume stays attached, its file is not the move's); one with a dir
// pool's volume is refused with a 422 naming the volume and its pool, and
// nothing of a migration is begun; a paused VM is refused too.
func TestMigrateWithVolumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pa := e.super.WithProject("pa")
	vm, err := pa.GetVM(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"h1": "h2", "h2": "h1"}[vm.Spec.Host]
	for _, p := range []api.PoolCreate{
		{Name: "nfs", Kind: api.PoolShared, Path: "/srv/nfs", Hosts: []string{"h1", "h2"}, Projects: []string{"pa"}},
		{Name: "local", Kind: api.PoolDir, Path: "/srv/local", Hosts: []string{vm.Spec.Host}, Projects: []string{"pa"}},
	} {
		if _, err := e.super.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	e.ctlObserved(t, e.tokens[vm.Spec.Host], "pa/vm1")
	m := e.as(api.RoleMember, "pa")
	for _, c := range []api.VolumeCreate{{Name: "s1", Pool: "nfs", SizeMiB: 64}, {Name: "d1", Pool: "local", SizeMiB: 64}} {
		v, err := m.CreateVolume(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		readyVolume(t, e, v.Spec.Host, "pa/"+c.Name, v.Generation)
	}
	if _, err := m.AttachVolume(ctx, "s1", "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachVolume(ctx, "d1", "vm1"); err != nil {
		t.Fatal(err)
	}
	before, _ := pa.GetVM(ctx, "vm1")
	_, err = pa.MigrateVM(ctx, "vm1", api.VMMigrate{Host: other})
	wantStatus(t, "migrating a vm with a dir pool's volume", err, 422, `volume "d1" in dir pool "local"`)
	if after, _ := pa.GetVM(ctx, "vm1"); after.Spec.Migration != nil || after.Generation != before.Generation {
		t.Errorf("a refused migration changed the vm: migration %+v, generation %d (was %d)", after.Spec.Migration, after.Generation, before.Generation)
	}
	if _, err := m.DetachVolume(ctx, "d1", ""); err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, e.tokens[vm.Spec.Host], "pa/vm1")
	op, err := pa.MigrateVM(ctx, "vm1", api.VMMigrate{Host: other})
	if err != nil {
		t.Fatalf("migrating a vm with a shared pool's volume: %v", err)
	}
	got, _ := pa.GetVM(ctx, "vm1")
	if got.Spec.Migration == nil || got.Spec.Migration.Operation != op.ID || got.Spec.Migration.Offline || len(got.Spec.Volumes) != 1 || got.Spec.Volumes[0].Volume != "s1" {
		t.Fatalf("migrating with a shared volume: migration %+v volumes %+v", got.Spec.Migration, got.Spec.Volumes)
	}
	if _, err := pa.CancelOperation(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pa.PauseVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	_, err = pa.MigrateVM(ctx, "vm1", api.VMMigrate{Host: other})
	wantStatus(t, "migrating a paused vm", err, 422, "paused")
}

// TestDrainOperation: a drain answers 202 with a host.drain operation
// whose result says what became of each VM as the hosts (played here)
// report: the running one migrated, the stopped one moved, the paused one
// skipped with why; the operation fails because one stayed. Only
// superadmins see it. A second drain of the host while one runs is 409;
// a drain cancelled leaves the VMs not yet moved.
func TestDrainOperation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pa := e.super.WithProject("pa")
	h2 := e.as("h2", "")
	for _, c := range []api.VMCreate{
		{Name: "a-run", PowerState: api.PowerRunning},
		{Name: "b-rest", PowerState: api.PowerStopped},
		{Name: "c-pause", PowerState: api.PowerRunning},
	} {
		c.VCPUs, c.MemoryMiB, c.Host, c.Disks = 1, 64, "h1", []api.Disk{{Image: "img"}}
		if _, err := pa.CreateVM(ctx, c, client.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.ctlObserved(t, e.tokens["h1"], "pa/"+c.Name)
	}
	if _, err := pa.PauseVM(ctx, "c-pause"); err != nil {
		t.Fatal(err)
	}
	e.ctlObserved(t, e.tokens["h1"], "pa/c-pause")
	// The env's own vms may be on h1 too: they move like a-run once
	// their host reported them.
	for _, vm := range listAll(e.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == "h1" }) {
		e.ctlObserved(t, e.tokens["h1"], vm.Key())
	}
	op, err := e.super.DrainHost(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if op.Kind != api.OpHostDrain || op.Status != api.OpRunning || op.Target.Name != "h1" {
		t.Fatalf("drain operation %+v", op)
	}
	if _, err := e.super.DrainHost(ctx, "h1"); client.HTTPStatus(err) != 409 {
		t.Errorf("a second drain while one runs: %v, want 409", err)
	}
	if _, err := e.as(api.RoleMember, "pa").GetOperation(ctx, op.ID); client.HTTPStatus(err) != 404 {
		t.Errorf("a member reading the drain: %v, want 404", err)
	}
	// Play h2 taking each move as it comes.
	final := e.playDrain(t, ctx, h2, op.ID, 30*time.Second, "the drain ends")
	if final.Status != api.OpFailed || final.Error == nil || !strings.Contains(final.Error.Message, "pa/c-pause") {
		t.Errorf("drain with a paused vm: %s %+v", final.Status, final.Error)
	}
	d, err := client.DrainResult(final)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]api.DrainMove{}
	for _, mv := range d.Moves {
		got[mv.VM] = mv
	}
	if mv := got["pa/a-run"]; mv.Outcome != "migrated" || mv.Target != "h2" || mv.Operation == "" {
		t.Errorf("running vm's move %+v", mv)
	}
	if mv := got["pa/b-rest"]; mv.Outcome != "moved" || mv.Target != "h2" {
		t.Errorf("stopped vm's move %+v", mv)
	}
	if mv := got["pa/c-pause"]; mv.Outcome != "skipped" || !strings.Contains(mv.Error, "paused") {
		t.Errorf("paused vm's move %+v", mv)
	}
	for name, host := range map[string]string{"a-run": "h2", "b-rest": "h2", "c-pause": "h1"} {
		if vm, _ := pa.GetVM(ctx, name); vm.Spec.Host != host {
			t.Errorf("%s is on %s after the drain, want %s", name, vm.Spec.Host, host)
		}
	}
	if h, _ := e.super.GetHost(ctx, "h1"); !h.Spec.Unschedulable {
		t.Errorf("the drained host is not cordoned")
	}

	// Drain h2 back, cancelled while its first move waits: that move is
	// cancelled, the VMs stay on h2.
	if _, err := e.super.UncordonHost(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	back, err := e.super.DrainHost(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 10*time.Second, "the drain's first move starts", func() error {
		if len(listAll(e.s.ops, func(o *api.Operation) bool { return o.Kind == api.OpVMMigrate && !o.Done() })) == 0 {
			return fmt.Errorf("no move under way")
		}
		return nil
	})
	c, err := e.super.CancelOperation(ctx, back.ID)
	if err != nil || c.Status != api.OpCancelled {
		t.Fatalf("cancelling the drain: %+v, %v", c, err)
	}
	d, _ = client.DrainResult(c)
	for _, mv := range d.Moves {
		if mv.Outcome != "cancelled" {
			t.Errorf("after the cancel: move %+v", mv)
		}
	}
	for _, name := range []string{"a-run", "b-rest"} {
		if vm, _ := pa.GetVM(ctx, name); vm.Spec.Host != "h2" || vm.Spec.Migration != nil {
			t.Errorf("%s after the cancelled drain: host %s migration %+v", name, vm.Spec.Host, vm.Spec.Migration)
		}
	}
}
