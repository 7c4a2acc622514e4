package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var tickRE = regexp.MustCompile(`polyvisor-tick (\d+)`)

func consoleTicks(log string) []int {
	var n []int
	for _, m := range tickRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n = append(n, v)
	}
	return n
}

// sharedVolumeScript is a guest script: once the disk with serial shared1
// appears it writes a marker at its start (unless one is there), then
// every 0.5 s writes a counter at 4 KiB, drops its caches and prints what
// the disk holds, so lines printed after a migration were read from the
// volume by the target's QEMU, and written through it.
const sharedVolumeScript = `d=
while [ -z "$d" ]; do
	for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = shared1 ] && d=${b##*/}; done
	sleep 0.2
done
m=$(dd if=/dev/$d bs=16 count=1 2>/dev/null | tr -dc 'a-z0-9')
[ -n "$m" ] || printf pvmark42 | dd of=/dev/$d conv=fsync 2>/dev/null
n=0
while :; do
	n=$((n+1))
	printf "w%06d" $n | dd of=/dev/$d bs=512 seek=8 conv=fsync 2>/dev/null || echo "pv-shared write failed"
	echo 3 >/proc/sys/vm/drop_caches
	m=$(dd if=/dev/$d bs=16 count=1 2>/dev/null | tr -dc 'a-z0-9')
	w=$(dd if=/dev/$d bs=512 skip=8 count=1 2>/dev/null | tr -dc 'a-z0-9')
	echo "pv-shared m=$m w=$w"
	sleep 0.5
done
`

var sharedRE = regexp.MustCompile(`pv-shared m=(\w*) w=w(\d+)`)

// lastShared is the marker and the highest counter the guest read back.
func lastShared(log string) (marker string, n int) {
	for _, m := range sharedRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[2])
		if v > n {
			marker, n = m[1], v
		}
	}
	return marker, n
}

// TestMigrate: two hosts (the server's built-in agent and an agent in a
// network namespace, each with its own address). A running guest migrates
// live with its disk and a shared pool's volume: its console counter goes
// on without a reboot on the target, it reads on the target the marker it
// wrote into the volume before and goes on writing it, the source's QEMU
// and files are gone, the API shows the new host. A migration cancelled
// midway leaves the guest running where it was and nothing on the target.
// Cordoned, unknown and same-host targets, a dir pool's volume and a
// paused VM are refused with 422. A stopped VM moves with its disk copied.
// Draining a host with three running VMs and a stopped one, as an
// operation, moves them all and leaves it empty.
func TestMigrate(t *testing.T) {
	requireQEMU(t)
	hosts := startTwoHosts(t, "5s")
	srv, c, ns, agentDir := hosts.srv, hosts.c, hosts.ns, hosts.agentDir
	ctx := context.Background()
	hosts.waitHost2(t)

	req := guestVM("mover")
	req.Host = "local"
	req.Boot.Cmdline = guest.Cmdline + " polyvisor.run=" + base64.StdEncoding.EncodeToString([]byte(sharedVolumeScript))
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
	// A stopped VM moves: host2 pulls its disk (with data written into
	// it here), the VM is placed there, still stopped.
	stopped := guestVM("resting")
	stopped.Host, stopped.PowerState = "local", api.PowerStopped
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, stopped, client.CreateOptions{})))
	rv, err := c.GetVM(ctx, "resting")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x6d 1M 64k", filepath.Join(srv.vmDir(rv.UID), "root.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("writing into the stopped vm's disk: %v: %s", err, out)
	}
	t0 := time.Now()
	waitOK(t, c, mustOp(t)(c.MigrateVM(ctx, "resting", api.VMMigrate{Host: "host2"})))
	t.Logf("stopped vm moved in %v", time.Since(t0))
	if rv, err = c.GetVM(ctx, "resting"); err != nil || rv.Spec.Host != "host2" || rv.Spec.PowerState != api.PowerStopped {
		t.Fatalf("the moved stopped vm: %+v, %v", rv, err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x6d 1M 64k", filepath.Join(agentDir, "vms", rv.UID, "root.qcow2")).CombinedOutput(); err != nil || strings.Contains(string(out), "Pattern verification failed") {
		t.Errorf("the moved disk on host2 lacks the data written on local: %v: %s", err, out)
	}
	eventually(t, 30*time.Second, "the stopped vm's files leave local", func() error {
		if _, err := os.Stat(srv.vmDir(rv.UID)); !os.IsNotExist(err) {
			return fmt.Errorf("local still has %s: %v", srv.vmDir(rv.UID), err)
		}
		return nil
	})
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

	// Volumes: a dir pool's cannot follow (422 naming it, nothing begun);
	// a shared pool's follows without being copied.
	sharedDir, localDir := t.TempDir(), t.TempDir()
	for _, p := range []api.PoolCreate{
		{Name: "nfs", Kind: api.PoolShared, Path: sharedDir, Hosts: []string{"local", "host2"}, Projects: []string{api.DefaultProject}},
		{Name: "here", Kind: api.PoolDir, Path: localDir, Hosts: []string{"local"}, Projects: []string{api.DefaultProject}},
	} {
		if _, err := c.CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []api.VolumeCreate{{Name: "shared1", Pool: "nfs", SizeMiB: 16}, {Name: "local1", Pool: "here", SizeMiB: 16}} {
		if _, err := c.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		waitVolume(t, c, v.Name, api.VolumeReady)
	}
	if _, err := c.AttachVolume(ctx, "local1", "mover"); err != nil {
		t.Fatal(err)
	}
	_, err = c.MigrateVM(ctx, "mover", api.VMMigrate{Host: "host2"})
	wantAPIError(t, "migrating a vm with a dir pool's volume", err, 422, `volume "local1" in dir pool "here"`)
	if vm, _ := c.GetVM(ctx, "mover"); vm.Spec.Migration != nil || vm.Spec.Host != "local" {
		t.Errorf("a refused migration began: %+v on %s", vm.Spec.Migration, vm.Spec.Host)
	}
	if _, err := c.DetachVolume(ctx, "local1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachVolume(ctx, "shared1", "mover"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the guest writes and reads the shared volume", func() error {
		b, err := c.ConsoleLog(ctx, "mover", 1<<20)
		if err != nil {
			return err
		}
		if m, _ := lastShared(string(b)); m != "pvmark42" {
			return fmt.Errorf("marker %q", m)
		}
		vm, err := c.GetVM(ctx, "mover")
		if err != nil {
			return err
		}
		if len(vm.Status.Volumes) != 1 || vm.Status.Volumes[0].Port == "" {
			return fmt.Errorf("plugged volumes %+v", vm.Status.Volumes)
		}
		return nil
	})

	// Migrate for real: the scheduler picks host2, the only other host.
	before, err := c.ConsoleLog(ctx, "mover", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
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
	_, wBefore := lastShared(string(before))
	eventually(t, 30*time.Second, "the guest reads and writes the shared volume on host2", func() error {
		b, err := c.ConsoleLog(ctx, "mover", 1<<20)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "pv-shared write failed") {
			t.Fatalf("the guest could not write the volume on host2:\n%s", b)
		}
		if m, w := lastShared(string(b)); m != "pvmark42" || w <= wBefore {
			return fmt.Errorf("on host2 the guest read marker %q counter %d (before: %d)", m, w, wBefore)
		}
		return nil
	})
	if n := len(mustGlob(t, filepath.Join(sharedDir, "*", "*.qcow2"))); n != 1 {
		t.Errorf("the shared pool holds %d volume files, want the one (not copied)", n)
	}

	// Drain local with three running VMs and a stopped one, as an
	// operation: all end up on host2.
	for _, n := range []string{"d1", "d2", "d3", "d4"} {
		r := guestVM(n)
		r.Host, r.MemoryMiB = "local", 192
		if n == "d4" {
			r.PowerState = api.PowerStopped
		}
		waitOK(t, c, mustOp(t)(c.CreateVM(ctx, r, client.CreateOptions{})))
	}
	for _, n := range []string{"d1", "d2", "d3"} {
		waitConsole(t, c, n, "polyvisor-tick ", 2)
	}
	t0 = time.Now()
	dop, err := c.DrainHost(ctx, "local")
	if err != nil {
		t.Fatalf("draining local: %v", err)
	}
	if dop.Kind != api.OpHostDrain {
		t.Fatalf("drain answered %+v, want a host.drain operation", dop)
	}
	seen := map[string]bool{}
	final, err := c.WaitOperation(ctx, dop.ID, func(op *api.Operation) {
		if d, err := client.DrainResult(op); err == nil {
			for _, mv := range d.Moves {
				seen[mv.Outcome] = true
			}
		}
	})
	if err != nil || final.Status != api.OpSucceeded {
		t.Fatalf("drain operation: %+v, %v", final, err)
	}
	dr, err := client.DrainResult(final)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drained local in %v: %+v (outcomes seen while it ran: %v)", time.Since(t0), dr.Moves, seen)
	if len(dr.Moves) != 4 {
		t.Fatalf("drain moves: %+v, want four", dr.Moves)
	}
	for _, mv := range dr.Moves {
		want := "migrated"
		if mv.VM == api.Key(api.DefaultProject, "d4") {
			want = "moved"
		}
		if mv.Outcome != want || mv.Target != "host2" {
			t.Errorf("drain move %+v, want %s to host2", mv, want)
		}
	}
	h, err := c.GetHost(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Spec.Unschedulable || h.Status.Allocated.VMs != 0 {
		t.Errorf("drained host: cordoned %v, %d vms", h.Spec.Unschedulable, h.Status.Allocated.VMs)
	}
	for _, n := range []string{"d1", "d2", "d3", "d4"} {
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
