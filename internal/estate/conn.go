package estate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
)

// conn is the connection to one provider and the mirror of its inventory.
type conn struct {
	m    *Manager
	log  *slog.Logger
	name string
	typ  string
	spec api.ProviderSpec
	// project is the project the provider is bound to: its VMs belong
	// there.
	project string

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	prov   provider.Provider      // nil while disconnected
	vmIDs  map[string]string      // native VM id -> Polyvisor key (project/name)
	hosts  map[string]string      // native host id -> Polyvisor name
	seen   map[string]provider.VM // native VM id -> last seen
	acted  map[string]time.Time   // native VM id -> when Polyvisor last changed it
	resync chan struct{}          // asks the running session for a full sync
	// touched is when the watch last reported a VM (by native id).
	touched map[string]time.Time
	other   api.ProviderInventory // datacenters, clusters, datastores, networks
	caps    provider.Capabilities
}

func newConn(m *Manager, p *api.Provider) *conn {
	c := &conn{
		m: m, log: m.log.With("provider", p.Name), name: p.Name, typ: p.Spec.Type, spec: p.Spec,
		project: projectOf(p),
		done:    make(chan struct{}), vmIDs: map[string]string{}, hosts: map[string]string{}, seen: map[string]provider.VM{}, acted: map[string]time.Time{}, touched: map[string]time.Time{},
	}
	// Names given before a restart stay the same. A VM is known by its
	// key, as everywhere in the manager.
	for _, vm := range listAll(m.cfg.VMs) {
		if ref := vm.Spec.Provider; ref != nil && ref.Name == p.Name && ref.ID != "" {
			c.vmIDs[ref.ID] = vm.Key()
		}
	}
	for _, h := range listAll(m.cfg.Hosts) {
		if h.Provider != nil && h.Provider.Name == p.Name {
			c.hosts[h.Provider.ID] = h.Name
		}
	}
	return c
}

// start runs the connection until stop.
func (c *conn) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	c.cancel = cancel
	go c.run(ctx)
}

func (c *conn) stop() {
	c.cancel()
	<-c.done
}

func (c *conn) provider() provider.Provider {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.prov
}

func (c *conn) inventory() *api.ProviderInventory {
	c.mu.Lock()
	defer c.mu.Unlock()
	inv := c.other
	return &inv
}

// run connects, syncs and follows changes; when the connection is lost it
// marks the inventory stale and reconnects with backoff.
func (c *conn) run(ctx context.Context) {
	defer close(c.done)
	backoff := time.Second
	for ctx.Err() == nil {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("provider connection lost", "err", err, "retry_in", backoff)
		c.markStale(ctx, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// session is one connection: connect, sync, then follow events and resync
// periodically until the provider is lost.
func (c *conn) session(ctx context.Context) error {
	p0, ok := c.m.cfg.Providers.Get(c.name)
	if !ok {
		return errors.New("provider removed")
	}
	cfg, err := c.m.providerConfig(p0)
	if err != nil {
		return err
	}
	p, err := c.m.cfg.Factory(c.typ, cfg, c.log)
	if err != nil {
		return err
	}
	c.setState(ctx, api.ProviderConnecting, "", nil)
	if err := p.Connect(ctx); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer p.Close()
	c.mu.Lock()
	c.prov, c.caps = p, p.Capabilities()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.prov = nil
		c.mu.Unlock()
	}()
	if err := c.fullSync(ctx, p); err != nil {
		return err
	}
	c.log.Info("provider connected and synced")
	// Work that waited for the connection.
	for _, vm := range listAll(c.m.cfg.VMs) {
		if vm.Spec.Provider != nil && vm.Spec.Provider.Name == c.name && needsWork(vm) {
			c.m.kick(ctx, vm.Key())
		}
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	resync := make(chan struct{}, 1)
	c.mu.Lock()
	c.resync = resync
	c.mu.Unlock()
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- p.Watch(wctx, func(ch provider.Change) {
			if ch.Resync {
				select {
				case resync <- struct{}{}:
				default:
				}
				return
			}
			c.apply(wctx, ch)
		})
	}()
	tick := time.NewTicker(c.m.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-watchErr:
			if err == nil {
				err = errors.New("event stream ended")
			}
			return err
		case <-resync:
		case <-tick.C:
		}
		if err := c.fullSync(ctx, p); err != nil {
			return err
		}
	}
}

// resyncSoon asks the running session for a full sync, whose inventory is
// read after whatever Polyvisor changed.
func (c *conn) resyncSoon() {
	c.mu.Lock()
	ch := c.resync
	c.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fullSync mirrors the whole inventory: what is new or changed is written,
// what is gone is removed.
func (c *conn) fullSync(ctx context.Context, p provider.Provider) error {
	began := time.Now()
	inv, err := p.Inventory(ctx)
	if err != nil {
		return fmt.Errorf("reading the inventory: %w", err)
	}
	c.mu.Lock()
	c.other = otherInventory(inv)
	c.mu.Unlock()
	liveHosts := map[string]bool{}
	for i := range inv.Hosts {
		liveHosts[inv.Hosts[i].ID] = true
		c.upsertHost(ctx, &inv.Hosts[i], inv)
	}
	// What the watch reported, or Polyvisor itself changed, while the
	// inventory was read is newer than the inventory: the sync neither
	// rewrites nor removes those VMs.
	fresh := func(id string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.touched[id].After(began) || c.acted[id].After(began)
	}
	liveVMs := map[string]bool{}
	var vms []*provider.VM
	for i := range inv.VMs {
		if inv.VMs[i].Template {
			continue
		}
		liveVMs[inv.VMs[i].ID] = true
		if !fresh(inv.VMs[i].ID) {
			vms = append(vms, &inv.VMs[i])
		}
	}
	c.mirrorVMs(ctx, vms)
	for _, vm := range listAll(c.m.cfg.VMs) {
		if ref := vm.Spec.Provider; ref != nil && ref.Name == c.name && ref.ID != "" && !liveVMs[ref.ID] && !fresh(ref.ID) {
			c.deleteVM(ctx, ref.ID, vm.Key())
		}
	}
	for _, h := range listAll(c.m.cfg.Hosts) {
		if h.Provider != nil && h.Provider.Name == c.name && !liveHosts[h.Provider.ID] {
			if err := c.m.write(ctx, c.m.cfg.Hosts.OpDelete(h.Name, 0)); err != nil && !errors.Is(err, store.ErrNotFound) {
				c.log.Warn("removing a host gone from the provider", "host", h.Name, "err", err)
			}
		}
	}
	counts := api.ProviderCounts{
		Datacenters: len(inv.Datacenters), Clusters: len(inv.Clusters), Hosts: len(inv.Hosts),
		Datastores: len(inv.Datastores), Networks: len(inv.Networks), VMs: len(vms),
	}
	c.setState(ctx, api.ProviderConnected, "", &counts)
	return nil
}

func otherInventory(inv *provider.Inventory) api.ProviderInventory {
	out := api.ProviderInventory{
		Datacenters: []api.InventoryItem{}, Clusters: []api.InventoryItem{},
		Datastores: []api.InventoryItem{}, Networks: []api.InventoryItem{}, Templates: []api.InventoryItem{},
	}
	for _, d := range inv.Datacenters {
		out.Datacenters = append(out.Datacenters, api.InventoryItem{ID: d.ID, Name: d.Name})
	}
	for _, cl := range inv.Clusters {
		out.Clusters = append(out.Clusters, api.InventoryItem{ID: cl.ID, Name: cl.Name, Datacenter: cl.Datacenter})
	}
	for _, d := range inv.Datastores {
		out.Datastores = append(out.Datastores, api.InventoryItem{ID: d.ID, Name: d.Name, Datacenter: d.Datacenter, CapacityBytes: d.CapacityBytes, FreeBytes: d.FreeBytes})
	}
	for _, n := range inv.Networks {
		out.Networks = append(out.Networks, api.InventoryItem{ID: n.ID, Name: n.Name, Datacenter: n.Datacenter})
	}
	for _, v := range inv.VMs {
		if v.Template {
			out.Templates = append(out.Templates, api.InventoryItem{ID: v.ID, Name: v.Name, Datacenter: v.Datacenter})
		}
	}
	return out
}

// apply mirrors one change the provider reported.
func (c *conn) apply(ctx context.Context, ch provider.Change) {
	id := ch.DeletedVM
	if ch.VM != nil {
		id = ch.VM.ID
	}
	if id != "" {
		c.mu.Lock()
		c.touched[id] = time.Now()
		c.mu.Unlock()
	}
	switch {
	case ch.VM != nil && ch.VM.Template:
		// A VM turned into a template is no longer a VM to run.
		c.deleteVM(ctx, ch.VM.ID, "")
	case ch.VM != nil:
		c.upsertVM(ctx, ch.VM, false)
	case ch.DeletedVM != "":
		c.deleteVM(ctx, ch.DeletedVM, "")
	case ch.Host != nil:
		c.upsertHost(ctx, ch.Host, nil)
	}
}

// setState records the connection's state on the provider object.
func (c *conn) setState(ctx context.Context, state, msg string, counts *api.ProviderCounts) {
	c.mu.Lock()
	caps := c.caps
	c.mu.Unlock()
	err := update(ctx, c.m.writer(), c.m.cfg.Providers, c.name, providerVersion, func(cur *api.Provider) (*api.Provider, error) {
		next := store.Clone(cur)
		next.Status.State, next.Status.Message = state, msg
		if state == api.ProviderConnected {
			next.Status.Stale = false
			next.Status.LastSync = time.Now().UTC()
			next.Status.Capabilities = api.ProviderCapabilities(caps)
		}
		if counts != nil {
			next.Status.Inventory = *counts
		}
		if state == api.ProviderDisconnected {
			next.Status.Stale = true
		}
		if reflect.DeepEqual(next.Status, cur.Status) {
			return nil, nil
		}
		return next, nil
	})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("recording the provider's state", "state", state, "err", err)
	}
}

// markStale keeps the last inventory but says it is stale: the provider
// is disconnected, its hosts not ready, its VMs' state unknown. A write
// that loses a race with another writer is made again on the newest
// version; one that fails is logged, and the next reconnection attempt
// marks again what is not stale yet.
func (c *conn) markStale(ctx context.Context, cause error) {
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	c.setState(ctx, api.ProviderDisconnected, msg, nil)
	ours := func(ref *api.ProviderRef) bool { return ref != nil && ref.Name == c.name }
	for _, h := range listAll(c.m.cfg.Hosts) {
		if !ours(h.Provider) || (h.Provider.Stale && h.Status.State == api.HostNotReady) {
			continue
		}
		err := update(ctx, c.m.writer(), c.m.cfg.Hosts, h.Name, hostVersion, func(cur *api.Host) (*api.Host, error) {
			if !ours(cur.Provider) {
				return nil, errGone
			}
			if cur.Provider.Stale && cur.Status.State == api.HostNotReady {
				return nil, nil
			}
			next := store.Clone(cur)
			next.Provider.Stale = true
			next.Status.State = api.HostNotReady
			return next, nil
		})
		if err != nil && ctx.Err() == nil {
			c.log.Warn("marking a host of a disconnected provider stale", "host", h.Name, "err", err)
		}
	}
	for _, vm := range listAll(c.m.cfg.VMs) {
		if !ours(vm.Spec.Provider) || vm.Spec.Provider.Stale {
			continue
		}
		err := update(ctx, c.m.writer(), c.m.cfg.VMs, vm.Key(), vmVersion, func(cur *api.VM) (*api.VM, error) {
			if !ours(cur.Spec.Provider) {
				return nil, errGone
			}
			if cur.Spec.Provider.Stale {
				return nil, nil
			}
			next := store.Clone(cur)
			next.Spec.Provider.Stale = true
			next.Status.Reason = "provider " + c.name + " is disconnected; last known state"
			return next, nil
		})
		if err != nil && ctx.Err() == nil {
			c.log.Warn("marking a vm of a disconnected provider stale", "vm", vm.Key(), "err", err)
		}
	}
}

// projectOf is the project a provider's VMs belong to.
func projectOf(p *api.Provider) string {
	if p.Project == "" {
		return api.DefaultProject
	}
	return p.Project
}
