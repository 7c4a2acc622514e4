package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
)

// TestDrainSurvivesItsServer: the server running a drain stops while
// the drain's first move is under way; the server started over the same
// store leads, resumes the drain from its operation, waits for that move
// instead of starting another, makes the others and ends the drain: every
// VM left the host, the operation succeeded.
func TestDrainSurvivesItsServer(t *testing.T) {
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pa := e.super.WithProject("pa")
	for _, name := range []string{"a-run", "b-run"} {
		c := api.VMCreate{Name: name, PowerState: api.PowerRunning, VCPUs: 1, MemoryMiB: 64, Host: "h1", Disks: []api.Disk{{Image: "img"}}}
		if _, err := pa.CreateVM(ctx, c, client.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, vm := range listAll(e.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == "h1" }) {
		e.ctlObserved(t, e.tokens["h1"], vm.Key())
	}
	onH1 := len(listAll(e.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == "h1" }))
	op, err := e.super.DrainHost(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	var first string // the first move's operation
	ctlEventually(t, 20*time.Second, "the drain's first move starts", func() error {
		moving := listAll(e.s.ops, func(o *api.Operation) bool { return o.Kind == api.OpVMMigrate && !o.Done() })
		if len(moving) != 1 {
			return fmt.Errorf("%d moves under way", len(moving))
		}
		first = moving[0].ID
		return nil
	})

	e2 := e.ctlReopen(Config{})
	h2 := e2.as("h2", "")
	final := e2.playDrain(t, ctx, h2, op.ID, 60*time.Second, "the restarted server ends the drain")
	if final.Status != api.OpSucceeded {
		t.Fatalf("drain after the restart: %s %+v", final.Status, final.Error)
	}
	d, err := client.DrainResult(final)
	if err != nil {
		t.Fatal(err)
	}
	for i, mv := range d.Moves {
		if mv.Outcome != "migrated" || mv.Target != "h2" {
			t.Errorf("move %+v, want migrated to h2", mv)
		}
		if i == 0 && mv.Operation != first {
			t.Errorf("the move under way at the restart was made again: operation %s, was %s", mv.Operation, first)
		}
	}
	if left := listAll(e2.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == "h1" }); len(left) > 0 {
		t.Errorf("%d vm(s) still on h1 after the drain", len(left))
	}
	if n := len(listAll(e2.s.ops, func(o *api.Operation) bool { return o.Kind == api.OpVMMigrate })); n != onH1 {
		t.Errorf("%d migrations for %d vms", n, onH1)
	}
}

// TestDrainAcrossServers: with two servers over one store, a cancel of a
// drain asked through the server that does not run it reaches the leader,
// which does: the move under way is cancelled, the VMs stay, the drain
// ends cancelled.
func TestDrainAcrossServers(t *testing.T) {
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, other := e.second(t, Config{Name: "second"})
	pa := e.super.WithProject("pa")
	c := api.VMCreate{Name: "a-run", PowerState: api.PowerRunning, VCPUs: 1, MemoryMiB: 64, Host: "h1", Disks: []api.Disk{{Image: "img"}}}
	if _, err := pa.CreateVM(ctx, c, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, vm := range listAll(e.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == "h1" }) {
		e.ctlObserved(t, e.tokens["h1"], vm.Key())
	}
	if st, err := other.ClusterStatus(ctx); err != nil || st.Self.Leader {
		t.Fatalf("the second server leads or cannot say: %+v, %v", st, err)
	}
	op, err := e.super.DrainHost(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 20*time.Second, "the leader starts the drain's first move", func() error {
		if n := len(listAll(e.s.ops, func(o *api.Operation) bool { return o.Kind == api.OpVMMigrate && !o.Done() })); n != 1 {
			return fmt.Errorf("%d moves under way", n)
		}
		return nil
	})
	done, err := other.CancelOperation(ctx, op.ID)
	if err != nil || done.Status != api.OpCancelled {
		t.Fatalf("cancelling the drain through the second server: %+v, %v", done, err)
	}
	d, err := client.DrainResult(done)
	if err != nil {
		t.Fatal(err)
	}
	for _, mv := range d.Moves {
		if mv.Outcome != "cancelled" {
			t.Errorf("after the cancel: move %+v", mv)
		}
	}
	for _, vm := range listAll(e.s.vms, func(vm *api.VM) bool { return vm.Spec.Migration != nil }) {
		t.Errorf("%s still migrating after the cancelled drain", vm.Key())
	}
	if vm, _ := pa.GetVM(ctx, "a-run"); vm.Spec.Host != "h1" {
		t.Errorf("a-run on %s after the cancelled drain", vm.Spec.Host)
	}
}

// playDrain plays the target host h2 taking each move of the drain op as
// it comes, until the drain ends, and returns its operation then.
func (e *env) playDrain(t *testing.T, ctx context.Context, h2 *client.Client, op string, within time.Duration, what string) *api.Operation {
	t.Helper()
	var final *api.Operation
	ctlEventually(t, within, what, func() error {
		for _, m := range listAll(e.s.ops, func(o *api.Operation) bool { return o.Kind == api.OpVMMigrate && !o.Done() }) {
			if vm, ok := e.s.vms.Get(ops.TargetKey(m.Target)); ok && vm.Spec.Migration != nil && vm.Spec.Migration.Operation == m.ID {
				_, _ = h2.PutAgentMigration(ctx, api.AgentMigration{Operation: m.ID, State: api.IncomingRunning})
			}
		}
		cur, err := e.super.GetOperation(ctx, op)
		if err != nil {
			return err
		}
		if !cur.Done() {
			return fmt.Errorf("drain %s: %s", cur.Status, cur.Message)
		}
		final = cur
		return nil
	})
	return final
}
