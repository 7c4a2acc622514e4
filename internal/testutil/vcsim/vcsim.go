// Package vcsim helps tests drive VMware's vCenter simulator (govmomi's
// vcsim) as a migration source.
package vcsim

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ImportVM imports the VM the OVF describes into vcsim through
// ImportVApp, uploading the disk through the import lease, and returns the
// VM. vcsim only hashes what is uploaded to its leases and keeps its own
// empty disk file; the disk is then written where an ESXi's upload would
// have put it, the file behind the VM's disk on vcsim's datastore.
func ImportVM(t testing.TB, ctx context.Context, c *vim25.Client, envelope, vmdk string) *object.VirtualMachine {
	t.Helper()
	f := find.NewFinder(c, true)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	pool, err := f.DefaultResourcePool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := f.DefaultDatastore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	net, err := f.Network(ctx, "VM Network")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ovf.NewManager(c).CreateImportSpec(ctx, envelope, pool, ds, &types.OvfCreateImportSpecParams{
		EntityName:     "guest-vm",
		NetworkMapping: []types.OvfNetworkMapping{{Name: "VM Network", Network: net.Reference()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Error != nil {
		t.Fatalf("import spec: %v", spec.Error[0].LocalizedMessage)
	}
	lease, err := pool.ImportVApp(ctx, spec.ImportSpec, folders.VmFolder, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := lease.Wait(ctx, spec.FileItem)
	if err != nil {
		t.Fatal(err)
	}
	// The updater reads the upload's progress (and keeps the lease alive).
	updater := lease.StartUpdater(ctx, info)
	for _, item := range info.Items {
		fh, err := os.Open(vmdk)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := fh.Stat()
		err = lease.Upload(ctx, item, fh, soap.Upload{ContentLength: fi.Size()})
		fh.Close()
		if err != nil {
			t.Fatalf("uploading through the import lease: %v", err)
		}
	}
	updater.Done()
	if err := lease.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	vm := object.NewVirtualMachine(c, info.Entity)
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"config.hardware.device"}, &m); err != nil {
		t.Fatal(err)
	}
	var dsm mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"info"}, &dsm); err != nil {
		t.Fatal(err)
	}
	root := dsm.Info.GetDatastoreInfo().Url
	disks := object.VirtualDeviceList(m.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))
	if len(disks) != 1 {
		t.Fatalf("imported VM has %d disks", len(disks))
	}
	var p object.DatastorePath
	p.FromString(disks[0].GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName)
	b, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, p.Path), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return vm
}
