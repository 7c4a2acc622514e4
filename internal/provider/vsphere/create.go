package vsphere

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// CreateVM clones spec.Template (a template or a VM, by name or inventory
// path) into the VM folder of its datacenter (or spec.Datacenter's), with
// the CPUs, memory, network and placement spec asks for, and powers the
// clone on when spec.PowerOn. A name already in that folder is refused
// before anything is made; a clone that cannot be powered on is destroyed.
func (p *Provider) CreateVM(ctx context.Context, spec provider.CreateSpec) (*provider.VM, error) {
	vm, err := p.createVM(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	return vm, nil
}

func (p *Provider) createVM(ctx context.Context, spec provider.CreateSpec) (*provider.VM, error) {
	switch {
	case spec.Name == "":
		return nil, errors.New("no name")
	case spec.Template == "":
		return nil, fmt.Errorf("no template: %w: vSphere VMs are cloned from a template", provider.ErrUnsupported)
	case spec.VCPUs < 0 || spec.MemoryMiB < 0:
		return nil, errors.New("negative cpus or memory")
	}
	c, err := p.conn()
	if err != nil {
		return nil, err
	}
	scope := c.ServiceContent.RootFolder
	if spec.Datacenter != "" {
		if scope, err = p.lookup(ctx, c, scope, "Datacenter", spec.Datacenter); err != nil {
			return nil, err
		}
	}
	tmplRef, err := p.lookup(ctx, c, scope, "VirtualMachine", spec.Template)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	tmpl := object.NewVirtualMachine(c, tmplRef)
	tp, err := props(ctx, c, tmplRef, "resourcePool", "runtime.host", "config.hardware.device")
	if err != nil {
		return nil, fmt.Errorf("template %q: %w", spec.Template, err)
	}
	dc := scope
	if dc.Type != "Datacenter" {
		if dc, err = datacenterOf(ctx, c, tmplRef); err != nil {
			return nil, fmt.Errorf("template %q: %w", spec.Template, err)
		}
	}
	folders, err := object.NewDatacenter(c, dc).Folders(ctx)
	if err != nil {
		return nil, fmt.Errorf("folders of datacenter %s: %w", dc.Value, classify(err))
	}
	clash, err := object.NewSearchIndex(c).FindChild(ctx, folders.VmFolder, spec.Name)
	if err != nil {
		return nil, fmt.Errorf("look for the name in %s: %w", folders.VmFolder.InventoryPath, classify(err))
	}
	if clash != nil {
		return nil, fmt.Errorf("%s %s has that name in the vm folder: %w", clash.Reference().Type, clash.Reference().Value, provider.ErrExists)
	}

	reloc, err := p.placement(ctx, c, dc, spec, tp)
	if err != nil {
		return nil, err
	}
	config := &types.VirtualMachineConfigSpec{NumCPUs: int32(spec.VCPUs), MemoryMB: spec.MemoryMiB}
	if spec.Network != "" {
		devs, _ := tp["config.hardware.device"].(types.ArrayOfVirtualDevice)
		change, err := p.nicChange(ctx, c, dc, spec.Network, devs.VirtualDevice)
		if err != nil {
			return nil, err
		}
		config.DeviceChange = []types.BaseVirtualDeviceConfigSpec{change}
	}
	cloneSpec := types.VirtualMachineCloneSpec{Location: reloc, Config: config}

	start := time.Now()
	task, err := tmpl.Clone(ctx, folders.VmFolder, spec.Name, cloneSpec)
	if err != nil {
		return nil, fmt.Errorf("clone %q: %w", spec.Template, classify(err))
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		if ctx.Err() != nil {
			p.cancelTask(task)
		}
		return nil, fmt.Errorf("clone %q: %w", spec.Template, classify(err))
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("clone %q: the task returned no vm", spec.Template)
	}
	p.log.Info("vm cloned", "vm", ref.Value, "name", spec.Name, "template", spec.Template, "took", time.Since(start))

	if spec.PowerOn {
		if err := p.PowerOn(ctx, ref.Value); err != nil {
			p.rollback(ref, err)
			return nil, err
		}
	}
	vm, err := p.readVM(ctx, c, ref)
	if err != nil {
		return nil, fmt.Errorf("read the new vm %s: %w", ref.Value, err)
	}
	return vm, nil
}

// placement says where the clone goes: the resource pool of spec.Host
// (and that host), or of spec.Cluster and the host of that cluster with
// the most free memory, else the template's pool or its host's; and the
// datastore spec.Datastore names, if any.
func (p *Provider) placement(ctx context.Context, c *vim25.Client, dc types.ManagedObjectReference,
	spec provider.CreateSpec, tp map[string]any) (types.VirtualMachineRelocateSpec, error) {
	var reloc types.VirtualMachineRelocateSpec
	var compute types.ManagedObjectReference // whose root resource pool to use
	switch {
	case spec.Host != "":
		host, err := p.lookup(ctx, c, dc, "HostSystem", spec.Host)
		if err != nil {
			return reloc, fmt.Errorf("host: %w", err)
		}
		reloc.Host = &host
		hp, err := props(ctx, c, host, "parent")
		if err != nil {
			return reloc, fmt.Errorf("host %q: %w", spec.Host, err)
		}
		compute = asRef(hp["parent"])
	case spec.Cluster != "":
		cluster, err := p.lookup(ctx, c, dc, "ClusterComputeResource", spec.Cluster)
		if err != nil {
			return reloc, fmt.Errorf("cluster: %w", err)
		}
		compute = cluster
		// A cluster without DRS needs a host named; one with DRS would
		// choose, but a choice here works with both.
		host, err := pickHost(ctx, c, cluster)
		if err != nil {
			return reloc, fmt.Errorf("cluster %q: %w", spec.Cluster, err)
		}
		reloc.Host = &host
	default:
		if pool := asRef(tp["resourcePool"]); pool.Value != "" {
			reloc.Pool = &pool
			break
		}
		// A template has no pool: use its host's.
		host := asRef(tp["runtime.host"])
		if host.Value == "" {
			return reloc, errors.New("the template has neither a resource pool nor a host: name a cluster or a host")
		}
		hp, err := props(ctx, c, host, "parent")
		if err != nil {
			return reloc, fmt.Errorf("template's host %s: %w", host.Value, err)
		}
		compute = asRef(hp["parent"])
	}
	if compute.Value != "" {
		cp, err := props(ctx, c, compute, "resourcePool")
		if err != nil {
			return reloc, fmt.Errorf("resource pool of %s: %w", compute.Value, err)
		}
		pool := asRef(cp["resourcePool"])
		if pool.Value == "" {
			return reloc, fmt.Errorf("%s has no resource pool", compute.Value)
		}
		reloc.Pool = &pool
	}
	if spec.Datastore != "" {
		ds, err := p.lookup(ctx, c, dc, "Datastore", spec.Datastore)
		if err != nil {
			return reloc, fmt.Errorf("datastore: %w", err)
		}
		reloc.Datastore = &ds
	}
	return reloc, nil
}

// pickHost chooses the connected host of a cluster, not in maintenance,
// with the most free memory.
func pickHost(ctx context.Context, c *vim25.Client, cluster types.ManagedObjectReference) (types.ManagedObjectReference, error) {
	var best types.ManagedObjectReference
	m, err := props(ctx, c, cluster, "host")
	if err != nil {
		return best, err
	}
	hosts, _ := m["host"].(types.ArrayOfManagedObjectReference)
	if len(hosts.ManagedObjectReference) == 0 {
		return best, errors.New("the cluster has no hosts")
	}
	specs := make([]types.PropertyFilterSpec, 0, len(hosts.ManagedObjectReference))
	for _, h := range hosts.ManagedObjectReference {
		specs = append(specs, objectFilter(h, "runtime.connectionState", "runtime.inMaintenanceMode",
			"summary.hardware.memorySize", "summary.quickStats.overallMemoryUsage"))
	}
	objs, err := retrieve(ctx, c, specs...)
	if err != nil {
		return best, err
	}
	var bestFree int64 = -1
	for _, oc := range objs {
		var state string
		var maintenance bool
		var size, usedMiB int64
		for _, dp := range oc.PropSet {
			switch dp.Name {
			case "runtime.connectionState":
				state = asString(dp.Val)
			case "runtime.inMaintenanceMode":
				maintenance = asBool(dp.Val)
			case "summary.hardware.memorySize":
				size = asInt(dp.Val)
			case "summary.quickStats.overallMemoryUsage":
				usedMiB = asInt(dp.Val)
			}
		}
		if state != string(types.HostSystemConnectionStateConnected) || maintenance {
			continue
		}
		if free := size - usedMiB<<20; free > bestFree {
			best, bestFree = oc.Obj, free
		}
	}
	if best.Value == "" {
		return best, fmt.Errorf("no connected host out of maintenance: %w", provider.ErrBadState)
	}
	return best, nil
}

// nicChange connects the template's first NIC to the named network, or
// adds a vmxnet3 NIC on it when the template has none.
func (p *Provider) nicChange(ctx context.Context, c *vim25.Client, dc types.ManagedObjectReference,
	network string, devs []types.BaseVirtualDevice) (types.BaseVirtualDeviceConfigSpec, error) {
	ref, err := p.lookup(ctx, c, dc, "Network", network)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	nr, ok := object.NewReference(c, ref).(object.NetworkReference)
	if !ok {
		return nil, fmt.Errorf("network %q is a %s, not a network", network, ref.Type)
	}
	backing, err := nr.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", network, classify(err))
	}
	for _, d := range devs {
		if card, ok := d.(types.BaseVirtualEthernetCard); ok {
			card.GetVirtualEthernetCard().Backing = backing
			return &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: d}, nil
		}
	}
	card, err := object.VirtualDeviceList(devs).CreateEthernetCard("vmxnet3", backing)
	if err != nil {
		return nil, fmt.Errorf("new nic: %w", err)
	}
	return &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: card}, nil
}

// cancelTask asks vSphere to cancel a task the caller stopped waiting for.
func (p *Provider) cancelTask(t *object.Task) {
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	if err := t.Cancel(ctx); err != nil {
		p.log.Warn("cancelling an abandoned task failed", "task", t.Reference().Value, "err", describe(err))
	}
}

// rollback destroys a VM that CreateVM made but could not finish.
func (p *Provider) rollback(ref types.ManagedObjectReference, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.log.Warn("removing a vm whose creation failed", "vm", ref.Value, "err", cause)
	if err := p.PowerOff(ctx, ref.Value); err != nil {
		p.log.Warn("rollback: power off failed", "vm", ref.Value, "err", err)
	}
	if err := p.Delete(ctx, ref.Value); err != nil {
		p.log.Error("rollback: the half-made vm is left behind", "vm", ref.Value, "err", err)
	}
}

// lookup finds one object of kind under scope by inventory path ("/..."),
// managed object id or name. Nothing found wraps provider.ErrNotFound.
func (p *Provider) lookup(ctx context.Context, c *vim25.Client, scope types.ManagedObjectReference,
	kind, what string) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	if strings.HasPrefix(what, "/") {
		obj, err := object.NewSearchIndex(c).FindByInventoryPath(ctx, what)
		if err != nil {
			return none, fmt.Errorf("%s %q: %w", strings.ToLower(kind), what, classify(err))
		}
		if obj == nil || !isKind(obj.Reference().Type, kind) {
			return none, fmt.Errorf("%s %q: %w", strings.ToLower(kind), what, provider.ErrNotFound)
		}
		return obj.Reference(), nil
	}
	v, err := view.NewManager(c).CreateContainerView(ctx, scope, []string{kind}, true)
	if err != nil {
		return none, fmt.Errorf("look up %s %q: %w", strings.ToLower(kind), what, classify(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
		defer cancel()
		_ = v.Destroy(dctx)
	}()
	objs, err := retrieve(ctx, c, viewFilter(v.Reference(), []types.PropertySpec{{Type: kind, PathSet: []string{"name"}}}))
	if err != nil {
		return none, fmt.Errorf("look up %s %q: %w", strings.ToLower(kind), what, err)
	}
	var named []types.ManagedObjectReference
	for _, oc := range objs {
		if oc.Obj.Value == what {
			return oc.Obj, nil
		}
		for _, dp := range oc.PropSet {
			if dp.Name == "name" && asString(dp.Val) == what {
				named = append(named, oc.Obj)
			}
		}
	}
	switch len(named) {
	case 0:
		return none, fmt.Errorf("%s %q: %w", strings.ToLower(kind), what, provider.ErrNotFound)
	case 1:
		return named[0], nil
	}
	return none, fmt.Errorf("%s %q is ambiguous: %d objects have that name; give an inventory path", strings.ToLower(kind), what, len(named))
}

// isKind says whether an object of type typ is a kind: networks come in
// three types.
func isKind(typ, kind string) bool {
	if kind == "Network" {
		return slices.Contains([]string{"Network", "DistributedVirtualPortgroup", "OpaqueNetwork"}, typ)
	}
	return typ == kind
}

// datacenterOf walks up from ref to its datacenter.
func datacenterOf(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference) (types.ManagedObjectReference, error) {
	for r, i := ref, 0; i < maxDepth; i++ {
		m, err := props(ctx, c, r, "parent")
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		parent := asRef(m["parent"])
		if parent.Value == "" && r.Type == "VirtualMachine" {
			m, err = props(ctx, c, r, "parentVApp")
			if err != nil {
				return types.ManagedObjectReference{}, err
			}
			parent = asRef(m["parentVApp"])
		}
		switch {
		case parent.Value == "":
			return types.ManagedObjectReference{}, fmt.Errorf("%s is in no datacenter", ref.Value)
		case parent.Type == "Datacenter":
			return parent, nil
		}
		r = parent
	}
	return types.ManagedObjectReference{}, fmt.Errorf("%s: the inventory is too deep", ref.Value)
}
