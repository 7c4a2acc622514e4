package v2v

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/vcsim"
)

// TestVSphereVMMoves imports the test guest's disk into vcsim as a VM,
// reads it as a migration source (its config for the hardware, its disk
// through the NFC export lease of a snapshot), breaks the copy halfway and
// runs it again: it resumes from its checkpoint, the copy is the guest's
// disk (checksum), it boots, the hardware matches the VM's, and the
// migration snapshot is gone once the disk is copied.
func TestVSphereVMMoves(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	dir := t.TempDir()
	vmdk := filepath.Join(dir, "guest.vmdk")
	convertGuest(t, g, "vmdk", "subformat=streamOptimized", vmdk)
	size := virtualSize(t, "qcow2", g.Boot)

	m := simulator.VPX()
	m.Host = 0 // the cluster alone: one resource pool
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	defer m.Remove()
	s := m.Service.NewServer()
	defer s.Close()
	ctx := context.Background()
	gc, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	vm := vcsim.ImportVM(t, ctx, gc.Client, envelope("guest-vm", "guest.vmdk", itoa(size), "byte", "", "00:50:56:01:02:03"), vmdk)
	if task, err := vm.PowerOn(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("powering the source on: %v", err)
	}

	src := &VSphereSource{Client: gc.Client}
	hw, running, err := src.Hardware(ctx, "guest-vm")
	if err != nil {
		t.Fatal(err)
	}
	var mvm mo.VirtualMachine
	vm.Properties(ctx, vm.Reference(), []string{"config"}, &mvm)
	nics := object.VirtualDeviceList(mvm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	wantMAC := nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress
	wantModel := object.VirtualDeviceList(mvm.Config.Hardware.Device).Type(nics[0])
	if !running || hw.VCPUs != int(mvm.Config.Hardware.NumCPU) || hw.MemoryMiB != int64(mvm.Config.Hardware.MemoryMB) || hw.VCPUs != 2 || hw.MemoryMiB != 256 {
		t.Fatalf("hardware %+v, running %v; the VM has %d vCPUs and %d MiB", hw, running, mvm.Config.Hardware.NumCPU, mvm.Config.Hardware.MemoryMB)
	}
	if len(hw.Disks) != 1 || hw.Disks[0].Bus != BusSCSI || hw.Disks[0].CapacityBytes != size {
		t.Fatalf("disks %+v", hw.Disks)
	}
	if len(hw.NICs) != 1 || hw.NICs[0].MAC != wantMAC || hw.NICs[0].Network != "VM Network" || hw.NICs[0].Model != wantModel {
		t.Fatalf("nics %+v, want MAC %s", hw.NICs, wantMAC)
	}
	plan := PlanVM(hw, Options{Host: "h1", NetworkMap: map[string]string{"VM Network": "user"}})
	if len(plan.Blockers) > 0 {
		t.Fatal(plan.Blockers)
	}
	if plan.NICs[0].MAC != wantMAC || plan.VCPUs != 2 || plan.MemoryMiB != 256 {
		t.Fatalf("plan %+v", plan)
	}

	// The first run is killed halfway through the disk.
	runCtx, cancel := context.WithCancel(ctx)
	var afterErr []error
	c := &Copier{Dir: filepath.Join(dir, "job"), Streams: src.Streams(), CheckpointBytes: 1 << 20,
		AfterVM: func(ctx context.Context, vm string, err error) {
			afterErr = append(afterErr, err)
			if ferr := src.Finish(ctx, vm, err == nil); ferr != nil {
				t.Errorf("finishing the export: %v", ferr)
			}
		},
		Progress: func(p Progress) {
			if p.Phase == PhaseStream && p.Done > 4<<20 {
				cancel()
			}
		}}
	if _, err := c.CopyVM(runCtx, plan); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	if snap, err := vm.FindSnapshot(ctx, SnapshotName); err != nil || snap == nil {
		t.Fatalf("the migration snapshot is gone after an unfinished copy: %v", err)
	}
	ck, err := loadCheckpoint(filepath.Join(dir, "job", plan.Name, "root.checkpoint.json"))
	if err != nil || ck.Mode != modeVMDK || ck.Offset < 1<<20 || ck.ContentOffset <= 0 || ck.Staged {
		t.Fatalf("checkpoint after the interruption: %+v %v", ck, err)
	}

	var resumed int64 = -1
	c.Progress = func(p Progress) {
		if p.Phase == PhaseStream && resumed < 0 {
			resumed = p.Resumed
		}
	}
	res, err := c.CopyVM(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if resumed != ck.ContentOffset {
		t.Errorf("second run resumed at disk byte %d, the checkpoint was at %d", resumed, ck.ContentOffset)
	}
	// The VMDK's grains were written as they streamed (nothing staged):
	// the disk's content digest is the guest disk's, and the copy is
	// the guest's disk.
	ck, _ = loadCheckpoint(filepath.Join(dir, "job", plan.Name, "root.checkpoint.json"))
	raw := filepath.Join(dir, "guest.raw")
	convertGuest(t, g, "raw", "", raw)
	b, _ := os.ReadFile(raw)
	if want := digestOf(t, b); ck.StreamSHA256 != want || res[0].SHA256 != want {
		t.Errorf("content digest %s (result %s), the guest disk's %s", ck.StreamSHA256, res[0].SHA256, want)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", g.Boot, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs from the guest's disk: %v: %s", err, out)
	}
	if snap, err := vm.FindSnapshot(ctx, SnapshotName); err == nil {
		t.Errorf("the migration snapshot %v is still there after the copy", snap)
	}
	if len(afterErr) != 2 || afterErr[1] != nil {
		t.Errorf("AfterVM calls: %v", afterErr)
	}
	bootDisk(t, res[0].Path, plan.VCPUs, plan.MemoryMiB)
}
