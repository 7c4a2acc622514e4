package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestServerRestart kills the server (and its built-in agent) with SIGKILL
// while a VM runs. The VM keeps running; the restarted server has every
// object and operation; the restarted agent adopts the VM (same QEMU pid)
// and starts no second QEMU.
func TestServerRestart(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	srv := startServer(t, dir)
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)

	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, guestVM("survivor"), client.CreateOptions{})))
	sleeper := guestVM("sleeper")
	sleeper.PowerState = api.PowerStopped
	sleeper.Labels = map[string]string{"tier": "db"}
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, sleeper, client.CreateOptions{})))
	waitConsole(t, c, "survivor", marker, 1)
	// A restart before the crash must not be carried out again after it.
	waitOK(t, c, mustOp(t)(c.RestartVM(ctx, "survivor", nil)))
	waitConsole(t, c, "survivor", marker, 2)
	before, err := c.GetVM(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if before.Spec.RestartCount != 1 || before.Status.ObservedRestartCount != 1 {
		t.Fatalf("restart count: spec %d, observed %d", before.Spec.RestartCount, before.Status.ObservedRestartCount)
	}
	pid := before.Status.PID
	opsBefore, _ := c.ListAllOperations(ctx, api.ListOptions{})
	imagesBefore, _ := c.ListAllImages(ctx, api.ListOptions{})

	srv.kill9()
	time.Sleep(500 * time.Millisecond)
	if !alive(pid) {
		t.Fatalf("qemu %d died with the agent", pid)
	}

	restarted := time.Now()
	srv.start()
	eventually(t, 30*time.Second, "the restarted agent reports the adopted vm", func() error {
		vm, err := c.GetVM(ctx, "survivor")
		if err != nil {
			return err
		}
		if vm.Status.UpdatedAt.Before(restarted) {
			return errNotYet // still the status from before the crash
		}
		if vm.Status.PowerState != api.PowerRunning || vm.Status.PID != pid {
			return fmt.Errorf("state %s pid %d, want running pid %d", vm.Status.PowerState, vm.Status.PID, pid)
		}
		return nil
	})
	time.Sleep(time.Second) // room for a wrong second start to show
	if pids := qemuPIDs(before.UID); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("qemu processes for the vm: %v, want only %d", pids, pid)
	}
	sl, err := c.GetVM(ctx, "sleeper")
	if err != nil || sl.Labels["tier"] != "db" || sl.Spec.PowerState != api.PowerStopped {
		t.Fatalf("sleeper after restart: %+v %v", sl, err)
	}
	opsAfter, _ := c.ListAllOperations(ctx, api.ListOptions{})
	byID := map[string]api.Operation{}
	for _, op := range opsAfter {
		byID[op.ID] = op
	}
	for _, op := range opsBefore {
		got, ok := byID[op.ID]
		if !ok || got.Status != op.Status || got.Kind != op.Kind {
			t.Errorf("operation %s (%s %s) after restart: %+v", op.ID, op.Kind, op.Status, got)
		}
	}
	// Lists filter by label, state and host.
	for _, f := range []struct {
		opts api.ListOptions
		want string
	}{
		{api.ListOptions{Selector: "tier=db"}, "[sleeper]"},
		{api.ListOptions{Selector: "tier!=db"}, "[survivor]"},
		{api.ListOptions{State: api.PowerRunning}, "[survivor]"},
		{api.ListOptions{Host: "local"}, "[sleeper survivor]"},
		{api.ListOptions{Host: "elsewhere"}, "[]"},
	} {
		vms, err := c.ListAllVMs(ctx, f.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(names(vms)); got != f.want {
			t.Errorf("list %+v: %s, want %s", f.opts, got, f.want)
		}
	}
	imagesAfter, _ := c.ListAllImages(ctx, api.ListOptions{})
	if len(imagesAfter) != len(imagesBefore) {
		t.Errorf("images: %d before, %d after", len(imagesBefore), len(imagesAfter))
	}

	// The adopted VM is still under control.
	waitOK(t, c, mustOp(t)(c.StopVM(ctx, "survivor", &api.VMStop{TimeoutSeconds: 60})))
	if alive(pid) {
		t.Fatalf("qemu %d runs after stop", pid)
	}
}
