package scheduler

import "fmt"

// The resources a resize can run out of, named as the API's fields.
const (
	ResourceVCPUs  = "vcpus"
	ResourceMemory = "memoryMiB"
)

// Resize checks that a VM on host h can change from size from to size to
// (both whole sizes; their Host fields are ignored). h's allocation
// already counts the VM at from.
//
// Only growth needs room: a VM never gets more vCPUs than its host has
// physical CPUs, and what it grows by must fit in the host's free
// overcommitted vCPUs and memory, as for a new VM. A shrink always fits,
// even on a host that is over-allocated. The host's state does not matter:
// the VM is already there. When the resize does not fit, the error is a
// *ResizeError naming the first resource short.
func Resize(cfg Config, h HostInfo, from, to Request) error {
	if to.VCPUs < 1 {
		return fmt.Errorf("resizing vm: vcpus must be at least 1, got %d", to.VCPUs)
	}
	if to.MemoryMiB < 1 {
		return fmt.Errorf("resizing vm: memory must be at least 1 MiB, got %d", to.MemoryMiB)
	}
	c := HostCapacity(cfg, h)
	if to.VCPUs > from.VCPUs {
		if to.VCPUs > h.CPUs {
			return &ResizeError{Host: h.Name, Resource: ResourceVCPUs, From: int64(from.VCPUs), To: int64(to.VCPUs), CPUs: h.CPUs}
		}
		if grow := to.VCPUs - from.VCPUs; grow > c.FreeVCPUs {
			return &ResizeError{Host: h.Name, Resource: ResourceVCPUs, From: int64(from.VCPUs), To: int64(to.VCPUs),
				Free: int64(max(c.FreeVCPUs, 0)), Offered: int64(c.VCPUs)}
		}
	}
	if grow := to.MemoryMiB - from.MemoryMiB; grow > 0 && grow > c.FreeMemoryMiB {
		return &ResizeError{Host: h.Name, Resource: ResourceMemory, From: from.MemoryMiB, To: to.MemoryMiB,
			Free: max(c.FreeMemoryMiB, 0), Offered: c.MemoryMiB}
	}
	return nil
}

// ResizeError means a VM cannot grow on its host: the API answers 422
// naming Resource as the field.
type ResizeError struct {
	Host string
	// Resource is ResourceVCPUs or ResourceMemory.
	Resource string
	// From and To are the VM's size of Resource before and after.
	From, To int64
	// CPUs is set when To is more vCPUs than the host has physical CPUs.
	CPUs int
	// Free and Offered are the host's free and total overcommitted amount
	// of Resource, when the growth does not fit in what is free.
	Free, Offered int64
}

func (e *ResizeError) Error() string {
	if e.CPUs > 0 {
		return fmt.Sprintf("vcpus: a vm on host %q can have at most %d vcpus, the host's cpus, not %d", e.Host, e.CPUs, e.To)
	}
	unit := ""
	if e.Resource == ResourceMemory {
		unit = " MiB"
	}
	return fmt.Sprintf("%s: host %q has no room to grow the vm from %d to %d%s: it needs %d%s more, %d%s of %d%s are free",
		e.Resource, e.Host, e.From, e.To, unit, e.To-e.From, unit, e.Free, unit, e.Offered, unit)
}
