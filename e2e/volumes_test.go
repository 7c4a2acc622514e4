package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// volumeWatcher is a guest script: whenever a disk whose serial begins
// with "data" appears or changes size it prints its serial, size and the
// marker found on it, writing the marker first where there is none; when
// it goes it says so.
const volumeWatcher = `while :; do
	for b in /sys/block/vd*; do
		d=${b##*/}
		s=$(cat $b/serial 2>/dev/null)
		case "$s" in data*) ;; *) continue ;; esac
		key="$s:$(cat $b/size)"
		[ "$(cat /tmp/seen-$d 2>/dev/null)" = "$key" ] && continue
		echo "$key" >/tmp/seen-$d
		m=$(dd if=/dev/$d bs=16 count=1 2>/dev/null | tr -dc 'a-z0-9')
		if [ -z "$m" ]; then
			printf pvmark42 | dd of=/dev/$d conv=fsync 2>/dev/null
			m=wrote
		fi
		echo "pv-vol serial=$s sectors=$(cat $b/size) read=$m"
	done
	for f in /tmp/seen-*; do
		[ -e "$f" ] || continue
		d=${f#/tmp/seen-}
		if [ ! -e /sys/block/$d ]; then
			echo "pv-vol gone $(cut -d: -f1 $f)"
			rm -f $f
		fi
	done
	sleep 0.2
done
`

// waitGuest waits until the VM's console shows text; TCG guests on a
// busy machine boot slowly, so the bound is generous.
func waitGuest(t *testing.T, c *client.Client, vm, text string) {
	t.Helper()
	eventually(t, 4*time.Minute, fmt.Sprintf("console of %s shows %q", vm, text), func() error {
		b, err := c.ConsoleLog(context.Background(), vm, 1<<20)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), text) {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			return fmt.Errorf("not yet; last line %q", lines[len(lines)-1])
		}
		return nil
	})
}

// waitVolume waits until the volume's state is want.
func waitVolume(t *testing.T, c *client.Client, name, want string) *api.Volume {
	t.Helper()
	var v *api.Volume
	eventually(t, 60*time.Second, fmt.Sprintf("volume %s is %s", name, want), func() error {
		var err error
		if v, err = c.GetVolume(context.Background(), name); err != nil {
			return err
		}
		if v.Status.State != want || v.Status.ObservedGeneration < v.Generation {
			return fmt.Errorf("state %s, generation %d observed %d, error %q", v.Status.State, v.Generation, v.Status.ObservedGeneration, v.Status.Error)
		}
		return nil
	})
	return v
}

// wantAPIError fails unless err is an API error of that status whose
// message holds text.
func wantAPIError(t *testing.T, what string, err error, status int, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %d", what, status)
	}
	if client.HTTPStatus(err) != status || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: %v, want a %d saying %q", what, err, status, text)
	}
}

// TestVolumes drives volumes on real QEMU through the API: a volume is
// made in a pool, attached to a running guest which writes a marker on
// it, grown while attached (the guest sees the size), detached, attached
// to another VM (the marker is there), snapshotted and cloned (the clone
// holds the marker); bad requests are refused and leave nothing behind.
func TestVolumes(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)

	poolDir := filepath.Join(t.TempDir(), "pool")
	if _, err := c.CreatePool(ctx, api.PoolCreate{Name: "p1", Kind: api.PoolDir, Path: poolDir, Hosts: []string{"local"}}); err != nil {
		t.Fatal(err)
	}
	// Not granted to the project yet.
	_, err := c.CreateVolume(ctx, api.VolumeCreate{Name: "data1", Pool: "p1", SizeMiB: 64})
	wantAPIError(t, "a volume in a pool not granted", err, 422, "not granted")
	if _, err := c.UpdatePool(ctx, "p1", api.PoolUpdate{Projects: &[]string{api.DefaultProject}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateVolume(ctx, api.VolumeCreate{Name: "data1", Pool: "p1"})
	wantAPIError(t, "a blank volume without a size", err, 400, "sizeMiB")
	q := int64(150)
	if _, err := c.SetQuota(ctx, api.DefaultProject, api.Quota{VolumeMiB: &q}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateVolume(ctx, api.VolumeCreate{Name: "huge", Pool: "p1", SizeMiB: 200})
	wantAPIError(t, "a volume over the quota", err, 422, "volumeMiB")
	if _, err := c.CreateVolume(ctx, api.VolumeCreate{Name: "data1", Pool: "p1", SizeMiB: 64, Limits: api.VolumeLimits{IOPS: 1000}}); err != nil {
		t.Fatal(err)
	}
	if l, _ := c.ListVolumes(ctx, api.ListOptions{}); len(l.Items) != 1 {
		t.Fatalf("volumes after refused creates: %+v", l.Items)
	}
	v := waitVolume(t, c, "data1", api.VolumeReady)
	if v.Status.SizeMiB != 64 || !strings.HasPrefix(v.Status.Path, poolDir+"/") {
		t.Fatalf("volume status %+v, want 64 MiB under %s", v.Status, poolDir)
	}
	eventually(t, 60*time.Second, "the pool reports its capacity", func() error {
		p, err := c.GetPool(ctx, "p1")
		if err != nil {
			return err
		}
		if len(p.Status.Hosts) != 1 || p.Status.Hosts[0].TotalMiB <= 0 || p.Status.Hosts[0].Error != "" {
			return fmt.Errorf("pool status %+v", p.Status)
		}
		return nil
	})

	cmdline := "console=ttyS0 quiet no_timer_check polyvisor.run=" + base64.StdEncoding.EncodeToString([]byte(volumeWatcher))
	for _, name := range []string{"va", "vb"} {
		req := guestVM(name)
		req.Boot.Cmdline = cmdline
		op, err := c.CreateVM(ctx, req, client.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitOK(t, c, op)
		waitGuest(t, c, name, "polyvisor-guest: run begin")
	}

	t0 := time.Now()
	if _, err := c.AttachVolume(ctx, "data1", "va"); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "va", "pv-vol serial=data1 sectors=131072 read=wrote")
	t.Logf("attach to the guest's marker: %v", time.Since(t0))
	eventually(t, 30*time.Second, "va reports data1 plugged in", func() error {
		vm, err := c.GetVM(ctx, "va")
		if err != nil {
			return err
		}
		if len(vm.Status.Volumes) != 1 || vm.Status.Volumes[0].Volume != "data1" {
			return fmt.Errorf("status volumes %+v", vm.Status.Volumes)
		}
		return nil
	})
	if v := waitVolume(t, c, "data1", api.VolumeAttached); v.Spec.AttachedTo != "va" {
		t.Fatalf("volume attached to %q", v.Spec.AttachedTo)
	}

	// Refusals, each leaving the volume as it was.
	_, err = c.DeleteVolume(ctx, "data1")
	wantAPIError(t, "deleting an attached volume", err, 409, "detach it first")
	_, err = c.AttachVolume(ctx, "data1", "vb")
	wantAPIError(t, "attaching an attached volume elsewhere", err, 409, `attached to vm "va"`)
	_, err = c.DetachVolume(ctx, "root", "va")
	wantAPIError(t, "detaching the root disk", err, 422, "own disk")
	_, err = c.SnapshotVolume(ctx, "data1", "s0")
	wantAPIError(t, "snapshotting an attached volume", err, 409, "detach it")
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.WithProject("other").AttachVolume(ctx, "data1", "va")
	wantAPIError(t, "attaching a volume of another project", err, 404, "volume")
	_, err = c.GrowVolume(ctx, "data1", 32)
	wantAPIError(t, "shrinking a volume", err, 400, "sizeMiB")
	_, err = c.GrowVolume(ctx, "data1", 160)
	wantAPIError(t, "growing over the quota", err, 422, "volumeMiB")

	if _, err := c.GrowVolume(ctx, "data1", 96); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "va", "pv-vol serial=data1 sectors=196608 read=pvmark42")
	if _, err := c.SetVolumeLimits(ctx, "data1", api.VolumeLimits{BPS: 4 << 20}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.DetachVolume(ctx, "data1", ""); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "va", "pv-vol gone data1")
	v = waitVolume(t, c, "data1", api.VolumeReady)
	if v.Status.SizeMiB != 96 {
		t.Fatalf("detached volume is %d MiB, want 96", v.Status.SizeMiB)
	}

	if _, err := c.AttachVolume(ctx, "data1", "vb"); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "vb", "pv-vol serial=data1 sectors=196608 read=pvmark42")
	if _, err := c.DetachVolume(ctx, "data1", "vb"); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "vb", "pv-vol gone data1")
	waitVolume(t, c, "data1", api.VolumeReady)

	// A snapshot, and a clone of it: the clone holds the marker.
	if _, err := c.SnapshotVolume(ctx, "data1", "s1"); err != nil {
		t.Fatal(err)
	}
	if v := waitVolume(t, c, "data1", api.VolumeReady); !slices.Contains(v.Status.Snapshots, "s1") {
		t.Fatalf("snapshots %v", v.Status.Snapshots)
	}
	_, err = c.CreateVolume(ctx, api.VolumeCreate{Name: "data2", Pool: "p1", Source: &api.VolumeSource{Volume: "data1", Snapshot: "s1"}})
	wantAPIError(t, "a clone over the quota", err, 422, "volumeMiB")
	q = 1000
	if _, err := c.SetQuota(ctx, api.DefaultProject, api.Quota{VolumeMiB: &q}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateVolume(ctx, api.VolumeCreate{Name: "data2", Pool: "p1", Source: &api.VolumeSource{Volume: "data1", Snapshot: "nope"}})
	wantAPIError(t, "a volume from a missing snapshot", err, 422, "no snapshot")
	if _, err := c.CreateVolume(ctx, api.VolumeCreate{Name: "data2", Pool: "p1", Source: &api.VolumeSource{Volume: "data1", Snapshot: "s1"}}); err != nil {
		t.Fatal(err)
	}
	if v := waitVolume(t, c, "data2", api.VolumeReady); v.Spec.SizeMiB != 96 {
		t.Fatalf("clone is %d MiB, want 96", v.Spec.SizeMiB)
	}
	if _, err := c.AttachVolume(ctx, "data2", "va"); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, "va", "pv-vol serial=data2 sectors=196608 read=pvmark42")

	// Deleting the VM releases its volume; deleting the volume removes
	// its files.
	op, err := c.DeleteVM(ctx, "va", false)
	if err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	eventually(t, 30*time.Second, "data2 is released", func() error {
		v, err := c.GetVolume(ctx, "data2")
		if err != nil {
			return err
		}
		if v.Spec.AttachedTo != "" {
			return fmt.Errorf("still attached to %s", v.Spec.AttachedTo)
		}
		return nil
	})

	testRootVolume(t, c, cmdline)
	testNBDPool(t, c, "vb", cmdline)

	for _, name := range []string{"data2", "data1", "datavm-root"} {
		if _, err := c.DeleteVolume(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the volumes are gone", func() error {
		l, err := c.ListVolumes(ctx, api.ListOptions{})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d volumes left", len(l.Items))
		}
		return nil
	})
	files, _ := filepath.Glob(filepath.Join(poolDir, api.DefaultProject, "*"))
	if len(files) > 0 {
		t.Fatalf("files left in the pool: %v", files)
	}
	if err := c.DeletePool(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
}

// testRootVolume boots a guest from a volume made from the image in pool
// p1 (its serial begins with "data", so the guest's watcher writes its
// marker there), deletes the VM, which leaves the volume, and boots
// another VM from that volume: the marker is there. A root volume made
// with deleteRootVolume goes with its VM.
func testRootVolume(t *testing.T, c *client.Client, cmdline string) {
	ctx := context.Background()
	req := guestVM("datavm")
	req.Boot.Cmdline, req.RootPool = cmdline, "p1"
	op, err := c.CreateVM(ctx, req, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	waitGuest(t, c, "datavm", "pv-vol serial=datavm-root sectors=131072 read=wrote")
	vm, err := c.GetVM(ctx, "datavm")
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.Spec.Disks) != 0 || len(vm.Spec.Volumes) != 1 || !vm.Spec.Volumes[0].Boot || vm.Spec.Volumes[0].DeleteWithVM {
		t.Fatalf("vm booting from a volume has disks %+v, volumes %+v", vm.Spec.Disks, vm.Spec.Volumes)
	}
	if v := waitVolume(t, c, "datavm-root", api.VolumeAttached); v.Spec.AttachedTo != "datavm" || v.Spec.Source == nil || v.Spec.Source.Image == "" {
		t.Fatalf("root volume %+v", v.Spec)
	}
	_, err = c.DetachVolume(ctx, "datavm-root", "")
	wantAPIError(t, "detaching the root volume", err, 422, "root disk")
	other := guestVM("other")
	other.Disks, other.RootVolume = nil, "datavm-root"
	_, err = c.CreateVM(ctx, other, client.CreateOptions{})
	wantAPIError(t, "booting from an attached volume", err, 409, `attached to vm "datavm"`)
	other.DeleteRootVolume = true
	_, err = c.CreateVM(ctx, other, client.CreateOptions{})
	wantAPIError(t, "deleteRootVolume with an existing volume", err, 400, "deleteRootVolume")

	op, err = c.DeleteVM(ctx, "datavm", false)
	if err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	if v := waitVolume(t, c, "datavm-root", api.VolumeReady); v.Spec.AttachedTo != "" {
		t.Fatalf("root volume still attached to %q", v.Spec.AttachedTo)
	}

	again := guestVM("datavm2")
	again.Disks, again.Boot.Cmdline, again.RootVolume = nil, cmdline, "datavm-root"
	if op, err = c.CreateVM(ctx, again, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	waitGuest(t, c, "datavm2", "pv-vol serial=datavm-root sectors=131072 read=pvmark42")
	if op, err = c.DeleteVM(ctx, "datavm2", false); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	waitVolume(t, c, "datavm-root", api.VolumeReady)

	// Made with the VM and deleted with it (created stopped: no guest).
	gone := guestVM("gone")
	gone.RootPool, gone.DeleteRootVolume, gone.PowerState = "p1", true, api.PowerStopped
	if op, err = c.CreateVM(ctx, gone, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	if v := waitVolume(t, c, "gone-root", api.VolumeAttached); v.Spec.AttachedTo != "gone" {
		t.Fatalf("gone-root attached to %q", v.Spec.AttachedTo)
	}
	if op, err = c.DeleteVM(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	eventually(t, 30*time.Second, "gone-root is deleted with its vm", func() error {
		if _, err := c.GetVolume(ctx, "gone-root"); client.HTTPStatus(err) != 404 {
			return fmt.Errorf("get: %v", err)
		}
		return nil
	})
}

// testNBDPool makes an nbd pool (a qemu-storage-daemon on the host,
// listening on a loopback port) and a volume in it, attaches it to the
// running guest vm1, which writes its marker, detaches it, boots another
// VM from it (its root disk over nbd), which reads the marker, and deletes
// the VM, the volume and the pool, which ends the daemon.
func testNBDPool(t *testing.T, c *client.Client, vm1, cmdline string) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := filepath.Join(t.TempDir(), "nbd")
	_, err = c.CreatePool(ctx, api.PoolCreate{Name: "n1", Kind: api.PoolNBD, Path: dir, Hosts: []string{"local"}})
	wantAPIError(t, "an nbd pool without an address", err, 400, "address")
	if _, err := c.CreatePool(ctx, api.PoolCreate{Name: "n1", Kind: api.PoolNBD, Path: dir, Hosts: []string{"local"}, Address: addr, Projects: []string{api.DefaultProject}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, api.VolumeCreate{Name: "datanbd", Pool: "n1", SizeMiB: 32}); err != nil {
		t.Fatal(err)
	}
	if v := waitVolume(t, c, "datanbd", api.VolumeReady); !strings.HasPrefix(v.Spec.Export, "nbd://"+addr+"/") {
		t.Fatalf("nbd volume's export %q", v.Spec.Export)
	}
	eventually(t, 60*time.Second, "the nbd pool reports its capacity", func() error {
		p, err := c.GetPool(ctx, "n1")
		if err != nil {
			return err
		}
		if len(p.Status.Hosts) != 1 || p.Status.Hosts[0].TotalMiB <= 0 || p.Status.Hosts[0].Error != "" {
			return fmt.Errorf("pool status %+v", p.Status)
		}
		return nil
	})
	if _, err := c.AttachVolume(ctx, "datanbd", vm1); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, vm1, "pv-vol serial=datanbd sectors=65536 read=wrote")
	_, err = c.GrowVolume(ctx, "datanbd", 48)
	wantAPIError(t, "growing an attached nbd volume", err, 409, "detach it")
	if _, err := c.DetachVolume(ctx, "datanbd", ""); err != nil {
		t.Fatal(err)
	}
	waitGuest(t, c, vm1, "pv-vol gone datanbd")
	waitVolume(t, c, "datanbd", api.VolumeReady)
	req := guestVM("datanbdvm")
	req.Disks, req.Boot.Cmdline, req.RootVolume = nil, cmdline, "datanbd"
	op, err := c.CreateVM(ctx, req, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	waitGuest(t, c, "datanbdvm", "pv-vol serial=datanbd sectors=65536 read=pvmark42")
	if op, err = c.DeleteVM(ctx, "datanbdvm", false); err != nil {
		t.Fatal(err)
	}
	waitOK(t, c, op)
	waitVolume(t, c, "datanbd", api.VolumeReady)
	if _, err := c.DeleteVolume(ctx, "datanbd"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "datanbd is deleted", func() error {
		if _, err := c.GetVolume(ctx, "datanbd"); client.HTTPStatus(err) != 404 {
			return fmt.Errorf("get: %v", err)
		}
		return nil
	})
	pidfile := filepath.Join(dir, ".nbd", "qsd.pid")
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("the nbd daemon's pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := c.DeletePool(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the nbd daemon ends with its pool", func() error {
		// Gone, or a zombie nobody reaped (it was daemonized).
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || syscall.Kill(pid, 0) != nil {
			return nil
		}
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return nil
		}
		return fmt.Errorf("pid %d runs", pid)
	})
}
