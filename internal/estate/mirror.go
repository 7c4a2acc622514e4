package estate

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
)

// hostName returns (assigning the first time) the Polyvisor name of a
// native host.
func (c *conn) hostName(id, native string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.hosts[id]; ok {
		return n
	}
	n := uniqueName(native, c.name, id, func(n string) bool {
		h, ok := c.m.cfg.Hosts.Get(n)
		return ok && (h.Provider == nil || h.Provider.Name != c.name || h.Provider.ID != id)
	})
	c.hosts[id] = n
	return n
}

func (c *conn) knownHost(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[id]
}

// upsertHost mirrors a provider host as a Polyvisor host.
func (c *conn) upsertHost(ctx context.Context, ph *provider.Host, inv *provider.Inventory) {
	name := c.hostName(ph.ID, ph.Name)
	ref := &api.ProviderRef{Name: c.name, Type: c.typ, ID: ph.ID, Path: ph.Name, Datacenter: ph.Datacenter, Cluster: ph.Cluster}
	state := api.HostReady
	if ph.State != provider.HostConnected {
		state = api.HostNotReady
	}
	for range 10 {
		now := time.Now().UTC()
		cur, ok := c.m.cfg.Hosts.Get(name)
		next := &api.Host{Meta: api.Meta{Name: name, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now}}
		if ok {
			next = store.Clone(cur)
		}
		next.Provider = ref
		next.Status.State, next.Status.CPUs, next.Status.MemoryMiB = state, ph.CPUs, ph.MemoryMiB
		next.Status.QEMUVersion, next.Status.Drivers = ph.Version, []string{c.typ}
		next.Status.Accel, next.Status.AccelReason = ph.Accel, ph.AccelReason
		next.Status.LastHeartbeat = time.Time{}
		if ok && reflect.DeepEqual(next.Status, cur.Status) && reflect.DeepEqual(next.Provider, cur.Provider) {
			return
		}
		var err error
		if ok {
			next.UpdatedAt = now
			_, err = c.m.writer().Txn(ctx, c.m.cfg.Hosts.OpUpdate(name, next, cur.Version))
		} else {
			_, err = c.m.writer().Txn(ctx, c.m.cfg.Hosts.OpCreate(name, next))
		}
		if err == nil || !(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists)) {
			if err != nil && ctx.Err() == nil {
				c.log.Warn("mirroring host", "host", name, "err", err)
			}
			return
		}
	}
	c.log.Warn("mirroring host", "host", name, "err", "it kept changing; the next sync tries again")
}

// vmName returns the Polyvisor name of a native VM, assigning one the first
// time. ok is false for a VM Polyvisor is itself creating and has not
// recorded the id of yet: that one is left to its create.
func (c *conn) vmName(pv *provider.VM) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.vmIDs[pv.ID]; ok {
		return n, true
	}
	if vm, ok := c.m.cfg.VMs.Get(api.Key(c.project, sanitize(pv.Name))); ok && vm.Spec.Provider != nil &&
		vm.Spec.Provider.Name == c.name && vm.Spec.Provider.ID == "" && vm.Name == pv.Name {
		return "", false
	}
	n := uniqueName(pv.Name, c.name, pv.ID, func(n string) bool {
		_, taken := c.m.cfg.VMs.Get(api.Key(c.project, n))
		return taken
	})
	key := api.Key(c.project, n)
	c.vmIDs[pv.ID] = key
	return key, true
}

// observedStatus is what a provider VM's status says of it.
func (c *conn) observedStatus(pv *provider.VM, base api.VMStatus) api.VMStatus {
	st := base
	st.PowerState = pv.PowerState
	st.Driver = c.typ
	st.IPs = pv.IPs
	st.Disks = nil
	for _, d := range pv.Disks {
		st.Disks = append(st.Disks, api.DiskStatus{Name: d.Name, Path: d.Path, Format: d.Format, SizeMiB: d.SizeBytes >> 20})
	}
	st.Reason = ""
	return st
}

// upsertVM mirrors a provider VM. Its status always follows the provider;
// its desired state follows too (an out-of-band change) unless Polyvisor
// is itself changing the VM.
func (c *conn) upsertVM(ctx context.Context, pv *provider.VM, fromSync bool) {
	for range 10 {
		op, ok := c.planVM(pv, fromSync)
		if !ok {
			return
		}
		_, err := c.m.writer().Txn(ctx, op)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrExists) {
			if ctx.Err() == nil {
				c.log.Warn("mirroring vm", "vm", pv.Name, "err", err)
			}
			return
		}
	}
	c.log.Warn("mirroring vm", "vm", pv.Name, "err", "it kept changing; the next sync tries again")
}

// planVM works out the store write that mirrors a provider VM, or ok false
// when there is nothing to write. fromSync says pv was read by a full
// sync, after any change Polyvisor had made: it is the truth, where an
// event may be older than Polyvisor's own change.
func (c *conn) planVM(pv *provider.VM, fromSync bool) (store.Op, bool) {
	c.mu.Lock()
	c.seen[pv.ID] = *pv
	c.mu.Unlock()
	name, ok := c.vmName(pv)
	if !ok {
		return store.Op{}, false
	}
	now := time.Now().UTC()
	cur, exists := c.m.cfg.VMs.Get(name)
	if exists && (cur.Spec.Provider == nil || cur.Spec.Provider.Name != c.name || cur.Spec.Provider.ID != pv.ID) {
		// The name now belongs to another VM; name this one anew.
		c.mu.Lock()
		delete(c.vmIDs, pv.ID)
		c.mu.Unlock()
		if name, ok = c.vmName(pv); !ok {
			return store.Op{}, false
		}
		cur, exists = c.m.cfg.VMs.Get(name)
	}
	var next *api.VM
	if exists {
		next = store.Clone(cur)
	} else {
		project, short := api.SplitKey(name)
		next = &api.VM{Meta: api.Meta{Name: short, Project: project, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now}}
		next.Spec.StopTimeoutSeconds = 30
	}
	ref := next.Spec.Provider
	if ref == nil {
		ref = &api.ProviderRef{}
	}
	next.Spec.Provider = &api.ProviderRef{Name: c.name, Type: c.typ, ID: pv.ID, Path: pv.Path, Datacenter: pv.Datacenter,
		Cluster: pv.Cluster, GuestOS: pv.GuestOS, Template: ref.Template, Datastore: ref.Datastore}
	if host := c.knownHost(pv.Host); host != "" {
		next.Spec.Host = host
	}
	c.mu.Lock()
	acted := c.acted[pv.ID]
	c.mu.Unlock()
	recent := exists && !fromSync && time.Since(acted) <= settleWindow
	next.Status = c.observedStatus(pv, next.Status)
	if recent && pv.PowerState != cur.Status.PowerState {
		// Possibly older than Polyvisor's own change: keep the power
		// state that change reported, and read the truth again now.
		next.Status.PowerState = cur.Status.PowerState
		c.resyncSoon()
	}
	// An event that arrives just after Polyvisor changed the VM may be
	// older than the change: it updates the status, never the desired
	// state.
	settled := !exists || (!c.m.cfg.Busy(name) && cur.Status.ObservedGeneration >= cur.Generation &&
		cur.Spec.Deletion == nil && !recent)
	if settled {
		desired := next.Spec
		desired.PowerState, desired.VCPUs, desired.MemoryMiB = pv.PowerState, pv.VCPUs, pv.MemoryMiB
		desired.NICs = nil
		for _, n := range pv.NICs {
			desired.NICs = append(desired.NICs, api.NIC{Network: n.Network, MAC: n.MAC})
		}
		if !reflect.DeepEqual(desired, next.Spec) {
			next.Spec = desired
			if exists {
				next.Generation++
			}
		}
		next.Status.ObservedGeneration = next.Generation
	}
	if !exists {
		return c.m.cfg.VMs.OpCreate(name, next), true
	}
	if reflect.DeepEqual(next, cur) {
		return store.Op{}, false
	}
	next.UpdatedAt = now
	return c.m.cfg.VMs.OpUpdate(name, next, cur.Version), true
}

// settleWindow is how long after Polyvisor changed a VM the provider's
// events are not taken for out-of-band changes.
const settleWindow = 5 * time.Second

// syncBatch is how many VM writes a full sync puts in one transaction
// (etcd allows 128 operations in one).
const syncBatch = 100

// mirrorVMs mirrors many VMs at once: their writes go in batched
// transactions; a batch that loses a race is redone VM by VM.
func (c *conn) mirrorVMs(ctx context.Context, vms []*provider.VM) {
	for start := 0; start < len(vms); start += syncBatch {
		batch := vms[start:min(start+syncBatch, len(vms))]
		var ops []store.Op
		for _, pv := range batch {
			if op, ok := c.planVM(pv, true); ok {
				ops = append(ops, op)
			}
		}
		if len(ops) == 0 {
			continue
		}
		if _, err := c.m.writer().Txn(ctx, ops...); err != nil {
			for _, pv := range batch {
				c.upsertVM(ctx, pv, true)
			}
		}
	}
}

// deleteVM removes a VM that is gone from the provider. key is the VM's
// key when the caller knows it, "" otherwise. A removal that loses a race
// with another writer is made again; one that fails is logged.
func (c *conn) deleteVM(ctx context.Context, id, key string) {
	c.mu.Lock()
	if k, ok := c.vmIDs[id]; ok {
		key = k
	}
	delete(c.vmIDs, id)
	delete(c.seen, id)
	delete(c.acted, id)
	c.mu.Unlock()
	if key == "" {
		return
	}
	err := remove(ctx, c.m.writer(), c.m.cfg.VMs, key, vmVersion, func(vm *api.VM) bool {
		return vm.Spec.Provider != nil && vm.Spec.Provider.Name == c.name && vm.Spec.Provider.ID == id
	})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("removing a vm gone from the provider", "vm", key, "err", err)
	}
}
