package vsphere

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// usageSpecs are what a usage reading retrieves: each VM's and host's
// quick statistics, and each host's MHz per core to turn a VM's MHz into
// cores.
var usageSpecs = []types.PropertySpec{
	{Type: "VirtualMachine", PathSet: []string{"runtime.powerState", "runtime.host",
		"summary.quickStats.overallCpuUsage", "summary.quickStats.hostMemoryUsage", "summary.quickStats.guestMemoryUsage"}},
	{Type: "HostSystem", PathSet: []string{"summary.hardware.cpuMhz",
		"summary.quickStats.overallCpuUsage", "summary.quickStats.overallMemoryUsage"}},
}

var _ provider.UsageReader = (*Provider)(nil)

// Usage reads the running VMs' and the hosts' quick statistics in one
// property-collector retrieval. A VM's CPU is its overall use in MHz over
// its host's MHz per core; its memory is the host memory it consumes
// (hostMemoryUsage), or what its guest uses when the host reports none.
func (p *Provider) Usage(ctx context.Context) (*provider.Usage, error) {
	c, err := p.conn()
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	v, err := p.view(ctx, c, viewInventory)
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	objs, err := retrieve(ctx, c, viewFilter(v.Reference(), usageSpecs))
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	return usageOf(objs), nil
}

// usageOf converts a usage retrieval.
func usageOf(objs []types.ObjectContent) *provider.Usage {
	mhz := map[string]float64{} // host id -> MHz per core
	out := &provider.Usage{}
	for _, oc := range objs {
		if oc.Obj.Type != "HostSystem" {
			continue
		}
		var h provider.HostUsage
		var cpuMHz float64
		h.ID = oc.Obj.Value
		for _, dp := range oc.PropSet {
			switch dp.Name {
			case "summary.hardware.cpuMhz":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					mhz[h.ID] = float64(n)
				}
			case "summary.quickStats.overallCpuUsage":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					cpuMHz = float64(n)
				}
			case "summary.quickStats.overallMemoryUsage":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					h.MemoryBytes = int64(n) << 20
				}
			}
		}
		if m := mhz[h.ID]; m > 0 {
			h.CPUCores = cpuMHz / m
		}
		out.Hosts = append(out.Hosts, h)
	}
	for _, oc := range objs {
		if oc.Obj.Type != "VirtualMachine" {
			continue
		}
		var host string
		var on bool
		var cpuMHz float64
		var hostMem, guestMem int64
		for _, dp := range oc.PropSet {
			switch dp.Name {
			case "runtime.powerState":
				s, _ := dp.Val.(types.VirtualMachinePowerState)
				on = s == types.VirtualMachinePowerStatePoweredOn
			case "runtime.host":
				if ref, ok := dp.Val.(types.ManagedObjectReference); ok {
					host = ref.Value
				}
			case "summary.quickStats.overallCpuUsage":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					cpuMHz = float64(n)
				}
			case "summary.quickStats.hostMemoryUsage":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					hostMem = int64(n) << 20
				}
			case "summary.quickStats.guestMemoryUsage":
				if n, ok := dp.Val.(int32); ok && n > 0 {
					guestMem = int64(n) << 20
				}
			}
		}
		m := mhz[host]
		if !on || m <= 0 {
			continue // not running, or no host to convert its MHz by
		}
		mem := hostMem
		if mem == 0 {
			mem = guestMem
		}
		out.VMs = append(out.VMs, provider.VMUsage{ID: oc.Obj.Value, Host: host, CPUCores: cpuMHz / m, MemoryBytes: mem})
	}
	return out
}
