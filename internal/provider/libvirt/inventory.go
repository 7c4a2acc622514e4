package libvirt

import (
	"context"
	"fmt"
	"sync"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// inventoryWorkers is how many domains Inventory describes at once; the
// RPCs share one connection, which carries concurrent calls.
const inventoryWorkers = 8

// Inventory lists the host, its storage pools, networks and every domain.
// Power states come from three list calls for the whole host; each domain
// then costs one XML description, plus one block-info call per disk.
func (p *Provider) Inventory(ctx context.Context) (*provider.Inventory, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, ep, facts, err := p.conn()
	if err != nil {
		return nil, err
	}
	host, err := describeHost(l, facts)
	if err != nil {
		return nil, err
	}
	inv := &provider.Inventory{Hosts: []provider.Host{host}}
	if inv.Datastores, err = listPools(l); err != nil {
		return nil, err
	}
	if inv.Networks, err = listNetworks(l); err != nil {
		return nil, err
	}
	if inv.VMs, err = p.listVMs(ctx, l, ep, facts); err != nil {
		return nil, err
	}
	return inv, nil
}

func describeHost(l *golibvirt.Libvirt, facts hostFacts) (provider.Host, error) {
	_, memKiB, cpus, _, _, _, _, _, err := l.NodeGetInfo()
	if err != nil {
		return provider.Host{}, fmt.Errorf("read libvirt node info: %w", classify(err))
	}
	name, err := l.ConnectGetHostname()
	if err != nil {
		return provider.Host{}, fmt.Errorf("read libvirt hostname: %w", classify(err))
	}
	typ, err := l.ConnectGetType()
	if err != nil {
		return provider.Host{}, fmt.Errorf("read libvirt hypervisor type: %w", classify(err))
	}
	ver, err := l.ConnectGetVersion()
	if err != nil {
		return provider.Host{}, fmt.Errorf("read libvirt hypervisor version: %w", classify(err))
	}
	return provider.Host{
		ID:        facts.id,
		Name:      name,
		CPUs:      int(cpus),
		MemoryMiB: int64(memKiB >> 10),
		State:     provider.HostConnected,
		// libvirt encodes versions as major*1e6 + minor*1e3 + micro.
		Version:     fmt.Sprintf("%s %d.%d.%d", typ, ver/1000000, ver/1000%1000, ver%1000),
		Accel:       accelOf(facts.virtType),
		AccelReason: facts.virtReason,
	}, nil
}

func listPools(l *golibvirt.Libvirt) ([]provider.Datastore, error) {
	pools, _, err := l.ConnectListAllStoragePools(1, 0)
	if err != nil {
		return nil, fmt.Errorf("list libvirt storage pools: %w", classify(err))
	}
	out := make([]provider.Datastore, 0, len(pools))
	for _, pool := range pools {
		ds := provider.Datastore{ID: uuidString(pool.UUID), Name: pool.Name}
		_, capacity, _, available, err := l.StoragePoolGetInfo(pool)
		if err != nil {
			return nil, fmt.Errorf("read storage pool %s: %w", pool.Name, classify(err))
		}
		ds.CapacityBytes, ds.FreeBytes = int64(capacity), int64(available)
		out = append(out, ds)
	}
	return out, nil
}

func listNetworks(l *golibvirt.Libvirt) ([]provider.Network, error) {
	nets, _, err := l.ConnectListAllNetworks(1, 0)
	if err != nil {
		if isCode(err, golibvirt.ErrNoSupport) {
			return nil, nil // no network driver on this host
		}
		return nil, fmt.Errorf("list libvirt networks: %w", classify(err))
	}
	out := make([]provider.Network, 0, len(nets))
	for _, n := range nets {
		out = append(out, provider.Network{ID: uuidString(n.UUID), Name: n.Name})
	}
	return out, nil
}

// listVMs describes every domain, inventoryWorkers at a time.
func (p *Provider) listVMs(ctx context.Context, l *golibvirt.Libvirt, ep endpoint, facts hostFacts) ([]provider.VM, error) {
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("list libvirt domains: %w", classify(err))
	}
	running, err := domainSet(l, golibvirt.ConnectListDomainsRunning)
	if err != nil {
		return nil, err
	}
	paused, err := domainSet(l, golibvirt.ConnectListDomainsPaused)
	if err != nil {
		return nil, err
	}

	vms := make([]provider.VM, len(doms))
	errs := make([]error, len(doms))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(inventoryWorkers, len(doms)) {
		wg.Go(func() {
			for i := range next {
				dom := doms[i]
				state := ""
				switch {
				case running[dom.UUID]:
					state = provider.PowerRunning
				case paused[dom.UUID]:
					state = provider.PowerPaused
				case dom.ID <= 0:
					state = provider.PowerStopped
				}
				vm, err := p.describe(l, ep, facts, dom, state)
				if err != nil {
					errs[i] = err
					continue
				}
				vms[i] = *vm
			}
		})
	}
feed:
	for i := range doms {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := vms[:0]
	for i, err := range errs {
		switch {
		case err == nil:
			out = append(out, vms[i])
		case isCode(err, golibvirt.ErrNoDomain):
			// Undefined since the list: not part of the estate any more.
		default:
			return nil, err
		}
	}
	return out, nil
}

// domainSet lists the domains matching flags, by UUID.
func domainSet(l *golibvirt.Libvirt, flags golibvirt.ConnectListAllDomainsFlags) (map[golibvirt.UUID]bool, error) {
	doms, _, err := l.ConnectListAllDomains(1, flags)
	if err != nil {
		return nil, fmt.Errorf("list libvirt domains: %w", classify(err))
	}
	set := make(map[golibvirt.UUID]bool, len(doms))
	for _, d := range doms {
		set[d.UUID] = true
	}
	return set, nil
}

// describe builds a VM from a domain's XML. An empty state is read with
// DomainGetState. Disk sizes come from DomainGetBlockInfo; a disk whose
// size cannot be read is listed with size 0.
func (p *Provider) describe(l *golibvirt.Libvirt, ep endpoint, facts hostFacts, dom golibvirt.Domain, state string) (*provider.VM, error) {
	if state == "" {
		st, _, err := l.DomainGetState(dom, 0)
		if err != nil {
			return nil, fmt.Errorf("read state of domain %s: %w", dom.Name, classify(err))
		}
		state = powerState(golibvirt.DomainState(st))
	}
	raw, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, fmt.Errorf("describe domain %s: %w", dom.Name, classify(err))
	}
	d, err := parseDomain(raw)
	if err != nil {
		return nil, fmt.Errorf("parse xml of domain %s: %w", dom.Name, err)
	}
	vm := d.vm(ep.uri)
	vm.ID = uuidString(dom.UUID)
	vm.Host = facts.id
	vm.PowerState = state
	for i := range vm.Disks {
		disk := &vm.Disks[i]
		if disk.Name == "" {
			continue
		}
		_, capacity, _, err := l.DomainGetBlockInfo(dom, disk.Name, 0)
		if err != nil {
			p.log.Debug("cannot read disk size", "vm", dom.Name, "disk", disk.Name, "err", err)
			continue
		}
		disk.SizeBytes = int64(capacity)
	}
	return &vm, nil
}

// powerState maps a libvirt domain state to a provider power state. A
// domain being shut down still runs; a crashed one has stopped.
func powerState(s golibvirt.DomainState) string {
	switch s {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked, golibvirt.DomainShutdown:
		return provider.PowerRunning
	case golibvirt.DomainPaused, golibvirt.DomainPmsuspended:
		return provider.PowerPaused
	default:
		return provider.PowerStopped
	}
}

// vmByDomain describes one domain now.
func (p *Provider) vmByDomain(l *golibvirt.Libvirt, dom golibvirt.Domain) (*provider.VM, error) {
	_, ep, facts, err := p.conn()
	if err != nil {
		return nil, err
	}
	return p.describe(l, ep, facts, dom, "")
}
