package vsphere

import (
	"context"
	"strings"
	"testing"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

func TestInventory(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	inv, err := p.Inventory(testCtx(t))
	must(t, err)

	count := e.model.Count()
	check := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %d, want %d", what, got, want)
		}
	}
	check("datacenters", len(inv.Datacenters), count.Datacenter)
	check("clusters", len(inv.Clusters), count.Cluster)
	check("hosts", len(inv.Hosts), count.Host)
	check("datastores", len(inv.Datastores), count.Datastore)
	check("vms", len(inv.VMs), count.Machine)
	if count.Datacenter != 2 || count.Cluster != 4 || count.Host != 10 || count.Machine != 12 {
		t.Errorf("model: %d datacenters, %d clusters, %d hosts, %d vms, want 2, 4, 10, 12",
			count.Datacenter, count.Cluster, count.Host, count.Machine)
	}

	// Networks: every Network, port group and opaque network govmomi sees.
	ctx := context.Background()
	v, err := view.NewManager(e.c).CreateContainerView(ctx, e.c.ServiceContent.RootFolder, []string{"Network"}, true)
	must(t, err)
	var nets []mo.Network
	must(t, v.Retrieve(ctx, []string{"Network"}, []string{"name"}, &nets))
	check("networks", len(inv.Networks), len(nets))

	dcs := map[string]string{} // id → name
	for _, dc := range inv.Datacenters {
		dcs[dc.ID] = dc.Name
	}
	clusters := map[string]provider.Cluster{}
	for _, c := range inv.Clusters {
		clusters[c.ID] = c
		if dcs[c.Datacenter] == "" {
			t.Errorf("cluster %s in unknown datacenter %q", c.Name, c.Datacenter)
		}
	}
	hosts := map[string]provider.Host{}
	clustered := 0
	for _, h := range inv.Hosts {
		hosts[h.ID] = h
		if h.State != provider.HostConnected || h.CPUs == 0 || h.MemoryMiB == 0 || !strings.HasPrefix(h.Version, "VMware ESXi") {
			t.Errorf("host %+v", h)
		}
		if dcs[h.Datacenter] == "" {
			t.Errorf("host %s in unknown datacenter %q", h.Name, h.Datacenter)
		}
		if h.Cluster != "" {
			clustered++
			if c := clusters[h.Cluster]; c.Datacenter != h.Datacenter {
				t.Errorf("host %s: cluster %s in datacenter %q, host in %q", h.Name, h.Cluster, c.Datacenter, h.Datacenter)
			}
		}
	}
	check("clustered hosts", clustered, count.Cluster*e.model.ClusterHost)
	for _, ds := range inv.Datastores {
		if ds.CapacityBytes <= 0 || ds.FreeBytes <= 0 || dcs[ds.Datacenter] == "" {
			t.Errorf("datastore %+v", ds)
		}
	}

	// Every VM against what govmomi reads of it.
	want := map[string]mo.VirtualMachine{}
	for _, vm := range e.vms(t, "name", "runtime.powerState", "runtime.host", "config.hardware.numCPU",
		"config.hardware.memoryMB", "config.guestFullName", "config.hardware.device") {
		want[vm.Self.Value] = vm
	}
	inCluster := 0
	for _, vm := range inv.VMs {
		w, ok := want[vm.ID]
		if !ok {
			t.Errorf("vm %s: govmomi does not know it", vm.ID)
			continue
		}
		if vm.Name != w.Name || vm.Host != w.Runtime.Host.Value || vm.VCPUs != int(w.Config.Hardware.NumCPU) ||
			vm.MemoryMiB != int64(w.Config.Hardware.MemoryMB) || vm.GuestOS != w.Config.GuestFullName || vm.Template {
			t.Errorf("vm %s: %+v, govmomi sees %s host %s cpus %d mem %d guest %q", vm.ID, vm,
				w.Name, w.Runtime.Host.Value, w.Config.Hardware.NumCPU, w.Config.Hardware.MemoryMB, w.Config.GuestFullName)
		}
		if vm.PowerState != powerState(w.Runtime.PowerState) || vm.PowerState != provider.PowerRunning {
			t.Errorf("vm %s: power %q, govmomi sees %s", vm.Name, vm.PowerState, w.Runtime.PowerState)
		}
		if path := e.path(t, w.Self); vm.Path != path {
			t.Errorf("vm %s: path %q, govmomi says %q", vm.Name, vm.Path, path)
		}
		h := hosts[vm.Host]
		if vm.Datacenter == "" || vm.Datacenter != h.Datacenter || vm.Cluster != h.Cluster {
			t.Errorf("vm %s: datacenter %q cluster %q, its host %s is in %q %q",
				vm.Name, vm.Datacenter, vm.Cluster, h.Name, h.Datacenter, h.Cluster)
		}
		if !strings.Contains(vm.Path, "/"+dcs[vm.Datacenter]+"/vm/") {
			t.Errorf("vm %s: path %q not under datacenter %q", vm.Name, vm.Path, dcs[vm.Datacenter])
		}
		if vm.Cluster != "" {
			inCluster++
		}
		checkDevices(t, vm, w)
	}
	check("vms in clusters", inCluster, count.Cluster*e.model.Machine)
}

// checkDevices compares a VM's disks and NICs with its devices.
func checkDevices(t *testing.T, vm provider.VM, w mo.VirtualMachine) {
	t.Helper()
	var disks, nics int
	for _, d := range w.Config.Hardware.Device {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			got := vm.Disks[min(disks, len(vm.Disks)-1)]
			file := dev.Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName
			if got.Format != "vmdk" || got.SizeBytes != dev.CapacityInBytes || got.Path != file || got.Name == "" {
				t.Errorf("vm %s disk %d: %+v, want %d bytes at %q", vm.Name, disks, got, dev.CapacityInBytes, file)
			}
			disks++
		case types.BaseVirtualEthernetCard:
			got := vm.NICs[min(nics, len(vm.NICs)-1)]
			if got.MAC != dev.GetVirtualEthernetCard().MacAddress || got.Network == "" {
				t.Errorf("vm %s nic %d: %+v", vm.Name, nics, got)
			}
			nics++
		}
	}
	if disks != len(vm.Disks) || nics != len(vm.NICs) || disks == 0 || nics == 0 {
		t.Errorf("vm %s: %d disks and %d nics, want %d and %d", vm.Name, len(vm.Disks), len(vm.NICs), disks, nics)
	}
}

func TestInventoryTemplatesAndIPs(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	vm := e.vmByName(t, "DC0_H0_VM1")
	ctx := context.Background()
	done(t)(vm.PowerOff(ctx))
	must(t, vm.MarkAsTemplate(ctx))

	// A guest reporting its addresses.
	other := e.vmByName(t, "DC0_H0_VM0")
	sctx := e.model.Service.Context
	sctx.Map.AtomicUpdate(sctx, sctx.Map.Get(other.Reference()), []types.PropertyChange{
		{Name: "guest.ipAddress", Val: "10.0.0.5"},
		{Name: "guest.net", Val: []types.GuestNicInfo{{IpAddress: []string{"10.0.0.5", "fe80::1", "2001:db8::5"}}}},
	})

	inv, err := p.Inventory(testCtx(t))
	must(t, err)
	sawTemplate, sawOther := false, false
	for _, v := range inv.VMs {
		switch v.ID {
		case vm.Reference().Value:
			sawTemplate = true
			if !v.Template || v.PowerState != provider.PowerStopped {
				t.Errorf("template %+v", v)
			}
		case other.Reference().Value:
			sawOther = true
			if strings.Join(v.IPs, ",") != "10.0.0.5,2001:db8::5" {
				t.Errorf("ips %q", v.IPs)
			}
		default:
			if v.Template {
				t.Errorf("vm %s is not a template", v.Name)
			}
		}
	}
	if !sawTemplate || !sawOther {
		t.Errorf("the inventory lacks the template (%v) or the vm with addresses (%v): %d vms", sawTemplate, sawOther, len(inv.VMs))
	}
}
