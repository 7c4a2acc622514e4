package vsphere

import (
	"context"
	"fmt"
	"time"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Inventory reads the whole estate in one property-collector retrieval
// over a container view of the root folder: VMs, hosts, clusters,
// datacenters, datastores and networks, and the folders and vApps between
// them, from which it works out paths and membership.
func (p *Provider) Inventory(ctx context.Context) (*provider.Inventory, error) {
	c, err := p.conn()
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	start := time.Now()
	v, err := p.view(ctx, c, viewInventory)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	objs, err := retrieve(ctx, c, viewFilter(v.Reference(), propSpecs(withVMs|withDatastores)))
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	inv := assemble(objs)
	p.log.Debug("inventory read", "objects", len(objs), "vms", len(inv.VMs), "took", time.Since(start))
	return inv, nil
}

// assemble builds an Inventory from the objects of a retrieval: a first
// pass places every object in the tree, a second converts them.
func assemble(objs []types.ObjectContent) *provider.Inventory {
	ix := newIndex(len(objs))
	vms := 0
	for i := range objs {
		ix.put(&objs[i])
		if objs[i].Obj.Type == "VirtualMachine" {
			vms++
		}
	}
	inv := &provider.Inventory{VMs: make([]provider.VM, 0, vms)}
	for i := range objs {
		ix.add(inv, &objs[i])
	}
	return inv
}

// vmRef is the reference of the VM with the given id.
func vmRef(id string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VirtualMachine", Value: id}
}

// readVM reads one VM, placed in the inventory tree, in one round trip:
// the VM's properties and the tree (without VMs or datastores) together.
func (p *Provider) readVM(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference) (*provider.VM, error) {
	v, err := p.view(ctx, c, viewSkeleton)
	if err != nil {
		return nil, err
	}
	objs, err := retrieve(ctx, c,
		viewFilter(v.Reference(), propSpecs(0)),
		objectFilter(ref, vmProps...))
	if err != nil {
		return nil, err
	}
	ix := newIndex(len(objs))
	var vmObj *types.ObjectContent
	for i := range objs {
		ix.put(&objs[i])
		if objs[i].Obj == ref {
			vmObj = &objs[i]
		}
	}
	if vmObj == nil {
		return nil, fmt.Errorf("vm %s: %w", ref.Value, provider.ErrNotFound)
	}
	vm := ix.vm(vmObj)
	return &vm, nil
}
