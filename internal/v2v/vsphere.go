package v2v

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// SnapshotName is the snapshot a vSphere source's disks are exported
// from. It stays while a copy is unfinished, so that a resumed copy reads
// the same point in time, and is removed once the VM's disks are copied.
const SnapshotName = "polyvisor-migration"

// VSphereSource reads VMs from vCenter or ESXi: the VM's config for the
// hardware, its disks through an NFC export lease of a snapshot taken for
// the migration (the VM may run meanwhile).
type VSphereSource struct {
	Client *vim25.Client

	mu      sync.Mutex
	exports map[string]*vsExport
}

// vsExport is one VM's export lease of its migration snapshot.
type vsExport struct {
	vm      *object.VirtualMachine
	lease   *nfc.Lease
	updater *nfc.LeaseUpdater
	disks   []*url.URL // the disks' URLs, in the VM's device order
}

func (s *VSphereSource) vm(ctx context.Context, name string) (*object.VirtualMachine, error) {
	f := find.NewFinder(s.Client, true)
	dc, err := f.DefaultDatacenter(ctx)
	if err == nil {
		f.SetDatacenter(dc)
	}
	vm, err := f.VirtualMachine(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("finding VM %q: %w", name, err)
	}
	return vm, nil
}

// Hardware reads the VM called name (or at that inventory path); running
// tells whether it is powered on.
func (s *VSphereSource) Hardware(ctx context.Context, name string) (Hardware, bool, error) {
	vm, err := s.vm(ctx, name)
	if err != nil {
		return Hardware{}, false, err
	}
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"name", "config", "runtime.powerState"}, &m); err != nil {
		return Hardware{}, false, fmt.Errorf("reading VM %q: %w", name, err)
	}
	if m.Config == nil {
		return Hardware{}, false, fmt.Errorf("VM %q has no config (inaccessible)", name)
	}
	c := m.Config
	hw := Hardware{Name: m.Name, VCPUs: int(c.Hardware.NumCPU), MemoryMiB: int64(c.Hardware.MemoryMB), Firmware: FirmwareBIOS, GuestOS: c.GuestId}
	if c.Firmware == string(types.GuestOsDescriptorFirmwareTypeEfi) {
		hw.Firmware = FirmwareEFI
	}
	devices := object.VirtualDeviceList(c.Hardware.Device)
	for i, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB << 10
		}
		hw.Disks = append(hw.Disks, Disk{Name: devices.Name(d), Bus: vsBus(devices.FindByKey(disk.ControllerKey)), CapacityBytes: capacity,
			Source: DiskSource{Kind: SourceStream, Ref: strconv.Itoa(i), Format: "vmdk"}})
	}
	for _, d := range devices.SelectByType((*types.VirtualEthernetCard)(nil)) {
		card := d.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		n := NIC{MAC: card.MacAddress, Model: devices.Type(d)}
		switch b := card.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			n.Network = b.DeviceName
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			n.Network = b.Port.PortgroupKey
			var pg mo.DistributedVirtualPortgroup
			ref := types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: b.Port.PortgroupKey}
			if err := object.NewCommon(s.Client, ref).Properties(ctx, ref, []string{"name"}, &pg); err == nil {
				n.Network = pg.Name
			}
		case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
			n.Network = b.OpaqueNetworkId
		}
		hw.NICs = append(hw.NICs, n)
	}
	return hw, m.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn, nil
}

func vsBus(c types.BaseVirtualDevice) string {
	switch c.(type) {
	case types.BaseVirtualSCSIController:
		return BusSCSI
	case *types.VirtualIDEController:
		return BusIDE
	case *types.VirtualAHCIController:
		return BusSATA
	case *types.VirtualNVMEController:
		return BusNVMe
	}
	return ""
}

// export takes the VM's migration snapshot (or finds the one an earlier
// run left) and opens its export lease, once per VM.
func (s *VSphereSource) export(ctx context.Context, name string) (*vsExport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.exports[name]; ok {
		return e, nil
	}
	vm, err := s.vm(ctx, name)
	if err != nil {
		return nil, err
	}
	snap, err := vm.FindSnapshot(ctx, SnapshotName)
	if err != nil {
		task, err := vm.CreateSnapshot(ctx, SnapshotName, "taken by a Polyvisor migration; removed once the disks are copied", false, false)
		if err != nil {
			return nil, fmt.Errorf("taking a snapshot of %q: %w", name, err)
		}
		if err := task.Wait(ctx); err != nil {
			return nil, fmt.Errorf("taking a snapshot of %q: %w", name, err)
		}
		if snap, err = vm.FindSnapshot(ctx, SnapshotName); err != nil {
			return nil, fmt.Errorf("finding the snapshot of %q: %w", name, err)
		}
	}
	lease, err := vm.ExportSnapshot(ctx, snap)
	if err != nil {
		return nil, fmt.Errorf("exporting the snapshot of %q: %w", name, err)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("opening the export lease of %q: %w", name, err)
	}
	e := &vsExport{vm: vm, lease: lease, updater: lease.StartUpdater(context.WithoutCancel(ctx), info)}
	for i, d := range info.DeviceUrl {
		if d.Disk != nil && *d.Disk {
			e.disks = append(e.disks, info.Items[i].URL)
		}
	}
	if s.exports == nil {
		s.exports = map[string]*vsExport{}
	}
	s.exports[name] = e
	return e, nil
}

// Streams reads a plan's disks (Ref, the disk's index among the VM's)
// through the export lease of the VM's snapshot.
func (s *VSphereSource) Streams() Streams {
	return func(ctx context.Context, vm string, d Disk) (Stream, error) {
		e, err := s.export(ctx, vm)
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(d.Source.Ref)
		if err != nil || i < 0 || i >= len(e.disks) {
			return nil, fmt.Errorf("VM %q has no disk %q in its export (%d disks)", vm, d.Source.Ref, len(e.disks))
		}
		return &nfcStream{c: s.Client.Client, u: e.disks[i]}, nil
	}
}

// Finish ends the VM's export lease; once its disks are copied (copied
// true) the migration snapshot is removed, otherwise kept for the run
// that resumes.
func (s *VSphereSource) Finish(ctx context.Context, name string, copied bool) error {
	s.mu.Lock()
	e, ok := s.exports[name]
	delete(s.exports, name)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	e.updater.Done()
	var errs []error
	if err := e.lease.Complete(ctx); err != nil {
		errs = append(errs, fmt.Errorf("ending the export lease of %q: %w", name, err))
	}
	if copied {
		task, err := e.vm.RemoveSnapshot(ctx, SnapshotName, false, nil)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing the migration snapshot of %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// nfcStream is a disk of an export lease. Its length is unknown until it
// ends (an ESXi streams a streamOptimized VMDK it compresses as it goes).
type nfcStream struct {
	c *soap.Client
	u *url.URL
}

func (s *nfcStream) Size() int64 { return -1 }

// Open asks for the disk from off; a server that ignores the range
// (sends it all) has the bytes before off read and dropped, not written
// again.
func (s *nfcStream) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	d := soap.DefaultDownload
	if off > 0 {
		d.Headers = map[string]string{"Range": fmt.Sprintf("bytes=%d-", off)}
	}
	res, err := s.c.DownloadRequest(ctx, s.u, &d)
	if err != nil {
		return nil, fmt.Errorf("downloading disk: %w", err)
	}
	switch {
	case res.StatusCode == http.StatusPartialContent && off > 0:
		return res.Body, nil
	case res.StatusCode == http.StatusOK:
		if _, err := io.CopyN(io.Discard, res.Body, off); err != nil {
			res.Body.Close()
			return nil, fmt.Errorf("skipping to byte %d of the disk: %w", off, err)
		}
		return res.Body, nil
	}
	res.Body.Close()
	return nil, fmt.Errorf("downloading disk: %s", res.Status)
}

// ChangeTracking says whether the VM's disks can tell what changed since
// its migration snapshot (vSphere's changed-block tracking), and if not,
// why. A cutover without it copies the disks again, cold.
func (s *VSphereSource) ChangeTracking(ctx context.Context, name string) (bool, string) {
	vm, err := s.vm(ctx, name)
	if err != nil {
		return false, err.Error()
	}
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"capability", "config.changeTrackingEnabled"}, &m); err != nil {
		return false, fmt.Sprintf("reading VM %q: %v", name, err)
	}
	if !m.Capability.ChangeTrackingSupported {
		return false, "the source does not support changed-block tracking"
	}
	if m.Config == nil || m.Config.ChangeTrackingEnabled == nil || !*m.Config.ChangeTrackingEnabled {
		return false, "changed-block tracking is not enabled on the source VM"
	}
	return true, ""
}
