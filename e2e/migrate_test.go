package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

var tickRE = regexp.MustCompile(`polyvisor-tick (\d+)`)

func consoleTicks(log string) []int {
	var n []int
	for _, m := range tickRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n = append(n, v)
	}
	return n
}

// TestMigrate: two hosts (the server's built-in agent and an agent in a
// network namespace, each with its own address). A running guest migrates
// live with its disk: its console counter goes on without a reboot on the
// target, the source's QEMU and files are gone, the API shows the new
// host. A migration cancelled midway leaves the guest running where it
// was and nothing on the target. Cordoned, unknown and same-host targets
// and a stopped VM are refused with 422. Draining a host with three
// running VMs moves them all and leaves it empty.
func TestMigrate(t *testing.T) {
	requireQEMU(t)
	ns := newNetns(t)
	port := freePort(t)
	srv := startServerOn(t, t.TempDir(), port, "--listen", "0.0.0.0:"+strconv.Itoa(port),
		"--advertise-address", ns.hostIP, "--agent-address", ns.hostIP, "--heartbeat-timeout", "5s")
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)
	jt, err := c.CreateJoinToken(ctx, api.JoinTokenCreate{TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	agentDir := t.TempDir()
	t.Cleanup(func() { killQEMUs(agentDir) })
	url := fmt.Sprintf("https://%s:%d", ns.hostIP, srv.port)
	startAgent(t, ns, "--heartbeat-interval", "500ms", "--server", url, "--join-token", jt.Token, "--data-dir", agentDir, "--name", "host2", "--address", ns.nsIP)
	eventually(t, 30*time.Second, "host2 joins and is ready", func() error {
		h, err := c.GetHost(ctx, "host2")
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady {
			return fmt.Errorf("host2 is %s", h.Status.State)
		}
		return nil
	})

	req := guestVM("mover")
	req.Host = "local"
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	waitConsole(t, c, "mover", marker, 1)
	waitConsole(t, c, "mover", "polyvisor-tick ", 3)
	vm, err := c.GetVM(ctx, "mover")
	if err != nil {
		t.Fatal(err)
	}
	srcPID, uid := vm.Status.PID, vm.UID

	// Refusals, each a 422 naming what is wrong, with nothing started.
	refuse := func(host, want string) {
		t.Helper()
		_, err := c.MigrateVM(ctx, "mover", api.VMMigrate{Host: host})
		if client.HTTPStatus(err) != 422 || !strings.Contains(err.Error(), want) {
			t.Errorf("migrating to %q: %v, want 422 saying %q", host, err, want)
		}
	}
	refuse("nowhere", "does not exist")
	refuse("local", "already runs on")
	if _, err := c.CordonHost(ctx, "host2"); err != nil {
		t.Fatal(err)
	}
	refuse("host2", "cordoned")
	refuse("", "no host") // the only other host is cordoned
	if _, err := c.UncordonHost(ctx, "host2"); err != nil {
		t.Fatal(err)
	}
	stopped := guestVM("resting")
	stopped.Host, stopped.PowerState = "local", api.PowerStopped
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, stopped, client.CreateOptions{})))
	if _, err := c.MigrateVM(ctx, "resting", api.VMMigrate{Host: "host2"}); client.HTTPStatus(err) != 422 || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("migrating a stopped vm: %v, want 422 saying it is stopped", err)
	}
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, "resting", false)))

	// Cancel midway: the guest stays where it was, nothing on host2.
	op, err := c.MigrateVM(ctx, "mover", api.VMMigrate{Host: "host2"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the migration moves data", func() error {
		vm, err := c.GetVM(ctx, "mover")
		if err != nil {
			return err
		}
		if m := vm.Status.Migration; m == nil || m.Operation != op.ID || (m.Phase != "storage" && m.Phase != "memory") {
			return fmt.Errorf("migration status %+v", m)
		}
		return nil
	})
	if _, err := c.CancelOperation(ctx, op.ID); err != nil {
		t.Fatalf("cancelling the migration: %v", err)
	}
	eventually(t, 60*time.Second, "the cancelled migration leaves nothing on host2", func() error {
		vm, err := c.GetVM(ctx, "mover")
		if err != nil {
			return err
		}
		if vm.Spec.Host != "local" || vm.Spec.Migration != nil || vm.Status.PowerState != api.PowerRunning || vm.Status.PID != srcPID {
			return fmt.Errorf("host %s migration %+v state %s pid %d", vm.Spec.Host, vm.Spec.Migration, vm.Status.PowerState, vm.Status.PID)
		}
		if pids := qemuPIDs(uid); len(pids) != 1 || pids[0] != srcPID {
			return fmt.Errorf("qemu processes of the vm: %v, want only %d", pids, srcPID)
		}
		if _, err := os.Stat(filepath.Join(agentDir, "vms", uid)); !os.IsNotExist(err) {
			return fmt.Errorf("host2 still has the vm's directory: %v", err)
		}
		return nil
	})
	if got, err := c.GetOperation(ctx, op.ID); err != nil || got.Status != api.OpCancelled {
		t.Errorf("cancelled migration: %+v, %v", got, err)
	}

	// Migrate for real: the scheduler picks host2, the only other host.
	before, err := c.ConsoleLog(ctx, "mover", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	done := waitOK(t, c, mustOp(t)(c.MigrateVM(ctx, "mover", api.VMMigrate{})))
	t.Logf("migration %s took %v", done.ID, time.Since(t0))
	vm, err = c.GetVM(ctx, "mover")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.Host != "host2" {
		t.Fatalf("after the migration the vm is on %q", vm.Spec.Host)
	}
	eventually(t, 30*time.Second, "host2 reports the migrated vm running", func() error {
		vm, err = c.GetVM(ctx, "mover")
		if err != nil {
			return err
		}
		if vm.Status.PowerState != api.PowerRunning || vm.Status.PID == 0 || vm.Status.ObservedGeneration != vm.Generation {
			return fmt.Errorf("state %s pid %d observed %d of %d", vm.Status.PowerState, vm.Status.PID, vm.Status.ObservedGeneration, vm.Generation)
		}
		return nil
	})
	if got, want := netnsInode(t, fmt.Sprintf("/proc/%d/ns/net", vm.Status.PID)), netnsInode(t, filepath.Join("/run/netns", ns.name)); got != want {
		t.Errorf("the migrated qemu %d runs in netns inode %d, want host2's %d", vm.Status.PID, got, want)
	}
	eventually(t, 30*time.Second, "the source's qemu and files are gone", func() error {
		if alive(srcPID) {
			return fmt.Errorf("source qemu %d still runs", srcPID)
		}
		if _, err := os.Stat(srv.vmDir(uid)); !os.IsNotExist(err) {
			return fmt.Errorf("source dir: %v", err)
		}
		return nil
	})
	srcTicks := consoleTicks(string(before))
	after := waitConsole(t, c, "mover", "polyvisor-tick ", 3)
	dstTicks := consoleTicks(after)
	t.Logf("last tick seen on local before: %d; first on host2: %d", srcTicks[len(srcTicks)-1], dstTicks[0])
	if strings.Contains(after, marker) {
		t.Errorf("the guest booted again on host2:\n%s", after)
	}
	if dstTicks[0] <= srcTicks[len(srcTicks)-1] {
		t.Errorf("the counter went back: %d on local, then %d on host2", srcTicks[len(srcTicks)-1], dstTicks[0])
	}

	// Drain local with three running VMs: all end up on host2.
	for _, n := range []string{"d1", "d2", "d3"} {
		r := guestVM(n)
		r.Host, r.MemoryMiB = "local", 192
		waitOK(t, c, mustOp(t)(c.CreateVM(ctx, r, client.CreateOptions{})))
	}
	for _, n := range []string{"d1", "d2", "d3"} {
		waitConsole(t, c, n, "polyvisor-tick ", 2)
	}
	t0 = time.Now()
	dr, err := c.DrainHost(ctx, "local")
	if err != nil {
		t.Fatalf("draining local: %v", err)
	}
	t.Logf("drained local in %v: %+v", time.Since(t0), dr.Moves)
	if len(dr.Moves) != 3 {
		t.Fatalf("drain moves: %+v, want three", dr.Moves)
	}
	for _, mv := range dr.Moves {
		if mv.Outcome != "migrated" || mv.Target != "host2" {
			t.Errorf("drain move %+v", mv)
		}
	}
	h, err := c.GetHost(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Spec.Unschedulable || h.Status.Allocated.VMs != 0 {
		t.Errorf("drained host: cordoned %v, %d vms", h.Spec.Unschedulable, h.Status.Allocated.VMs)
	}
	for _, n := range []string{"d1", "d2", "d3"} {
		vm, err := c.GetVM(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if vm.Spec.Host != "host2" {
			t.Errorf("%s is on %s after the drain", n, vm.Spec.Host)
		}
	}
	eventually(t, 30*time.Second, "no qemu left on local", func() error {
		if pids := qemuPIDs(srv.vmDir("")); len(pids) != 0 {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[0]))
			return fmt.Errorf("qemu processes under local's dir: %v (%q)", pids, cmd)
		}
		return nil
	})
}
