package vsphere

import (
	"strings"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// powerUnknown is reported for a power state vSphere does not name
// (the same word as api.PowerUnknown).
const powerUnknown = "unknown"

func powerState(s types.VirtualMachinePowerState) string {
	switch s {
	case types.VirtualMachinePowerStatePoweredOn:
		return provider.PowerRunning
	case types.VirtualMachinePowerStatePoweredOff:
		return provider.PowerStopped
	case types.VirtualMachinePowerStateSuspended:
		return provider.PowerPaused
	}
	return powerUnknown
}

// vm turns a VirtualMachine's properties (vmProps) into a provider.VM;
// the index places it.
func (ix *index) vm(oc *types.ObjectContent) provider.VM {
	vm := provider.VM{ID: oc.Obj.Value, PowerState: powerUnknown}
	var host types.ManagedObjectReference
	var primaryIP string
	var guestNICs []types.GuestNicInfo
	for i := range oc.PropSet {
		dp := &oc.PropSet[i]
		switch dp.Name {
		case "name":
			vm.Name = asString(dp.Val)
		case "runtime.powerState":
			vm.PowerState = powerState(types.VirtualMachinePowerState(asString(dp.Val)))
		case "runtime.host":
			host = asRef(dp.Val)
		case "config.hardware.numCPU":
			vm.VCPUs = int(asInt(dp.Val))
		case "config.hardware.memoryMB":
			vm.MemoryMiB = asInt(dp.Val)
		case "config.guestFullName":
			vm.GuestOS = asString(dp.Val)
		case "config.template":
			vm.Template = asBool(dp.Val)
		case "config.hardware.device":
			if devs, ok := dp.Val.(types.ArrayOfVirtualDevice); ok {
				ix.devices(&vm, devs.VirtualDevice)
			}
		case "guest.ipAddress":
			primaryIP = asString(dp.Val)
		case "guest.net":
			if nics, ok := dp.Val.(types.ArrayOfGuestNicInfo); ok {
				guestNICs = nics.GuestNicInfo
			}
		}
	}
	vm.IPs = guestIPs(primaryIP, guestNICs)
	vm.Host = host.Value
	vm.Cluster = ix.cluster(host)
	vm.Datacenter = ix.datacenter(oc.Obj)
	if vm.Datacenter == "" && host.Value != "" {
		vm.Datacenter = ix.datacenter(host)
	}
	vm.Path = ix.path(oc.Obj)
	return vm
}

// devices fills in a VM's disks and NICs.
func (ix *index) devices(vm *provider.VM, devs []types.BaseVirtualDevice) {
	for _, d := range devs {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			disk := provider.Disk{Format: "vmdk", SizeBytes: dev.CapacityInBytes}
			if disk.SizeBytes == 0 {
				disk.SizeBytes = dev.CapacityInKB * 1024
			}
			if info := dev.DeviceInfo; info != nil {
				disk.Name = info.GetDescription().Label
			}
			if b, ok := dev.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				disk.Path = b.GetVirtualDeviceFileBackingInfo().FileName
			}
			vm.Disks = append(vm.Disks, disk)
		case types.BaseVirtualEthernetCard:
			card := dev.GetVirtualEthernetCard()
			vm.NICs = append(vm.NICs, provider.NIC{MAC: card.MacAddress, Network: ix.nicNetwork(card.Backing)})
		}
	}
}

// nicNetwork names the network a NIC's backing connects it to.
func (ix *index) nicNetwork(backing types.BaseVirtualDeviceBackingInfo) string {
	switch b := backing.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		if b.Network != nil {
			if name := ix.name(*b.Network); name != "" {
				return name
			}
		}
		return b.DeviceName
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		// A distributed port group's key is its managed object id.
		key := b.Port.PortgroupKey
		if name := ix.name(types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: key}); name != "" {
			return name
		}
		return key
	case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
		return b.OpaqueNetworkId
	}
	return ""
}

// guestIPs lists the guest's addresses, the primary first, without
// duplicates or IPv6 link-local addresses.
func guestIPs(primary string, nics []types.GuestNicInfo) []string {
	var ips []string
	seen := map[string]bool{}
	add := func(ip string) {
		if ip == "" || seen[ip] || strings.HasPrefix(strings.ToLower(ip), "fe80:") {
			return
		}
		seen[ip] = true
		ips = append(ips, ip)
	}
	add(primary)
	for _, n := range nics {
		for _, ip := range n.IpAddress {
			add(ip)
		}
	}
	return ips
}

// host turns a HostSystem's properties (hostProps) into a provider.Host.
func (ix *index) host(oc *types.ObjectContent) provider.Host {
	h := provider.Host{
		ID:         oc.Obj.Value,
		Name:       ix.name(oc.Obj),
		Datacenter: ix.datacenter(oc.Obj),
		Cluster:    ix.cluster(oc.Obj),
		State:      provider.HostDisconnected,
	}
	var state types.HostSystemConnectionState
	var maintenance bool
	for i := range oc.PropSet {
		dp := &oc.PropSet[i]
		switch dp.Name {
		case "summary.hardware.numCpuThreads":
			h.CPUs = int(asInt(dp.Val))
		case "summary.hardware.memorySize":
			h.MemoryMiB = asInt(dp.Val) >> 20
		case "runtime.connectionState":
			state = types.HostSystemConnectionState(asString(dp.Val))
		case "runtime.inMaintenanceMode":
			maintenance = asBool(dp.Val)
		case "summary.config.product":
			if about, ok := dp.Val.(types.AboutInfo); ok {
				h.Version = strings.TrimSpace(about.Name + " " + about.Version)
			}
		}
	}
	switch {
	case state != types.HostSystemConnectionStateConnected:
		h.State = provider.HostDisconnected
	case maintenance:
		h.State = provider.HostMaintenance
	default:
		h.State = provider.HostConnected
	}
	return h
}

// datastore turns a Datastore's properties (datastoreProps) into a
// provider.Datastore.
func (ix *index) datastore(oc *types.ObjectContent) provider.Datastore {
	ds := provider.Datastore{ID: oc.Obj.Value, Name: ix.name(oc.Obj), Datacenter: ix.datacenter(oc.Obj)}
	for i := range oc.PropSet {
		dp := &oc.PropSet[i]
		switch dp.Name {
		case "summary.capacity":
			ds.CapacityBytes = asInt(dp.Val)
		case "summary.freeSpace":
			ds.FreeBytes = asInt(dp.Val)
		}
	}
	return ds
}

// add files an object of the container view into inv.
func (ix *index) add(inv *provider.Inventory, oc *types.ObjectContent) {
	ref := oc.Obj
	switch ref.Type {
	case "VirtualMachine":
		inv.VMs = append(inv.VMs, ix.vm(oc))
	case "HostSystem":
		inv.Hosts = append(inv.Hosts, ix.host(oc))
	case "ClusterComputeResource":
		inv.Clusters = append(inv.Clusters, provider.Cluster{
			ID: ref.Value, Name: ix.name(ref), Datacenter: ix.datacenter(ref)})
	case "Datacenter":
		inv.Datacenters = append(inv.Datacenters, provider.Datacenter{ID: ref.Value, Name: ix.name(ref)})
	case "Datastore":
		inv.Datastores = append(inv.Datastores, ix.datastore(oc))
	case "Network", "DistributedVirtualPortgroup", "OpaqueNetwork":
		inv.Networks = append(inv.Networks, provider.Network{
			ID: ref.Value, Name: ix.name(ref), Datacenter: ix.datacenter(ref)})
	}
}
