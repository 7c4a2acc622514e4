package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

// placer keeps the allocation of every host, fed by the VM index, and
// places new VMs and checks resizes. A placement holds a reservation until
// the VM shows up in the index (or its create fails), and a resize until
// its operation is queued, so two concurrent creates or resizes never see
// the same free room. A resize queued or running holds the room it grows
// by until it is applied: a VM counts at the larger of its spec and its
// queued resizes (Server.pendingSize), as for the quota.
//
// Every map here is keyed by the VM's key, api.Meta.Key ("<project>/<name>",
// the key it is stored under), whether the VM comes from a list of the
// index or from one of its changes; a VM keyed two ways would count twice
// and never leave.
type placer struct {
	s *Server

	mu       sync.Mutex
	byVM     map[string]vmSize         // placed VMs, by key
	totals   map[string]api.Allocation // sums of byVM per host
	images   map[string]map[string]int // per host: image name -> VMs using it
	reserved map[string]vmSize         // placements whose VM is not in the index yet
	resizing map[string]vmSize         // resizes checked, their operation not queued yet
	ready    chan struct{}
}

type vmSize struct {
	host   string
	vcpus  int
	memory int64
	images []string // images the VM's host needs for it
}

func newPlacer(s *Server) *placer {
	p := &placer{s: s, byVM: map[string]vmSize{}, totals: map[string]api.Allocation{},
		images: map[string]map[string]int{}, reserved: map[string]vmSize{}, resizing: map[string]vmSize{}, ready: make(chan struct{})}
	return p
}

func sizeOf(vm *api.VM) vmSize {
	v := vmSize{host: vm.Spec.Host, vcpus: vm.Spec.VCPUs, memory: vm.Spec.MemoryMiB}
	for _, img := range []string{vm.Spec.Boot.Kernel, vm.Spec.Boot.Initrd} {
		if img != "" {
			v.images = append(v.images, img)
		}
	}
	for _, d := range vm.Spec.Disks {
		if d.Image != "" {
			v.images = append(v.images, d.Image)
		}
	}
	return v
}

// setLocked records a VM's size (or, with ok false, its removal) in the
// per-host totals; key is the VM's key.
func (p *placer) setLocked(key string, v vmSize, ok bool) {
	if old, had := p.byVM[key]; had {
		p.account(old, -1)
		delete(p.byVM, key)
	}
	if ok {
		p.byVM[key] = v
		p.account(v, 1)
	}
}

func (p *placer) account(v vmSize, sign int) {
	a := p.totals[v.host]
	a.VCPUs += sign * v.vcpus
	a.MemoryMiB += int64(sign) * v.memory
	a.VMs += sign
	if a.VMs == 0 {
		delete(p.totals, v.host)
	} else {
		p.totals[v.host] = a
	}
	imgs := p.images[v.host]
	if imgs == nil {
		imgs = map[string]int{}
		p.images[v.host] = imgs
	}
	for _, img := range v.images {
		imgs[img] += sign
		if imgs[img] <= 0 {
			delete(imgs, img)
		}
	}
}

// hostUses tells whether a VM placed on host uses the image.
func (p *placer) hostUses(host, image string) bool {
	<-p.ready
	p.mu.Lock()
	uses := p.images[host][image] > 0
	p.mu.Unlock()
	if uses {
		return true
	}
	// The totals follow the index a moment behind it: a VM just placed may
	// not be counted yet, so a miss is checked against the index itself.
	return len(listAll(p.s.vms, func(vm *api.VM) bool {
		return vm.Spec.Host == host && slices.Contains(sizeOf(vm).images, image)
	})) > 0
}

// run follows the VM index. It subscribes before it reads the index so
// that no change falls between the two; replayed changes are idempotent.
func (p *placer) run(ctx context.Context) {
	ch := p.s.vms.Subscribe(ctx)
	p.mu.Lock()
	for _, vm := range listAll(p.s.vms, nil) {
		p.setLocked(vm.Key(), sizeOf(vm), true)
	}
	p.mu.Unlock()
	close(p.ready)
	for c := range ch {
		key := c.Obj.Key() // the last value on a delete
		p.mu.Lock()
		if c.Type == store.Delete {
			p.setLocked(key, vmSize{}, false)
		} else {
			p.setLocked(key, sizeOf(c.Obj), true)
			delete(p.reserved, key)
		}
		p.mu.Unlock()
	}
}

// allocationsLocked is what is allocated per host, reservations and the
// growth of queued resizes included.
func (p *placer) allocationsLocked() map[string]api.Allocation {
	out := make(map[string]api.Allocation, len(p.totals))
	for h, a := range p.totals {
		out[h] = a
	}
	for key, v := range p.reserved {
		if _, dup := p.byVM[key]; !dup {
			a := out[v.host]
			a.VCPUs += v.vcpus
			a.MemoryMiB += v.memory
			a.VMs++
			out[v.host] = a
		}
	}
	for key := range p.growingLocked() {
		counted, ok := p.byVM[key]
		if !ok {
			continue
		}
		held := p.heldLocked(key, counted)
		a := out[counted.host]
		a.VCPUs += held.vcpus - counted.vcpus
		a.MemoryMiB += held.memory - counted.memory
		out[counted.host] = a
	}
	return out
}

// growingLocked is the VMs a resize may be holding room for: those with
// operations under way, and those whose resize is being admitted.
func (p *placer) growingLocked() map[string]bool {
	keys := p.s.opctl.snapshotNames()
	for key := range p.resizing {
		keys[key] = true
	}
	return keys
}

// heldLocked is the size a VM holds on its host: the largest of what the
// placer counts for it, its spec in the index with every resize queued
// for it (the index may be a change ahead of the placer), and a resize
// being admitted.
func (p *placer) heldLocked(key string, counted vmSize) vmSize {
	held := counted
	if vm, ok := p.s.vms.Get(key); ok {
		u := p.s.pendingSize(vm)
		held.vcpus = max(held.vcpus, int(u.VCPUs))
		held.memory = max(held.memory, u.MemoryMiB)
	}
	if r, ok := p.resizing[key]; ok {
		held.vcpus = max(held.vcpus, r.vcpus)
		held.memory = max(held.memory, r.memory)
	}
	return held
}

// allocation returns what is allocated on one host.
func (p *placer) allocation(host string) api.Allocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.totals[host]
}

// hostFilter picks the hosts a VM may go to: Polyvisor's own hosts, or
// those of one provider (and cluster).
type hostFilter func(*api.Host) bool

// ownHosts are the hosts Polyvisor runs itself, through agents.
func ownHosts(h *api.Host) bool { return h.Provider == nil }

// providerHosts are the hosts of one provider, in one cluster if given
// (by native id or name).
func providerHosts(provider, cluster string) hostFilter {
	return func(h *api.Host) bool {
		return h.Provider != nil && h.Provider.Name == provider && (cluster == "" || h.Provider.Cluster == cluster)
	}
}

// snapshot builds the scheduler's view of the hosts that pass filter.
func (p *placer) snapshotLocked(filter hostFilter) scheduler.Snapshot {
	alloc := p.allocationsLocked()
	var snap scheduler.Snapshot
	for _, h := range listAll(p.s.hosts, filter) {
		a := alloc[h.Name]
		snap.Hosts = append(snap.Hosts, scheduler.HostInfo{
			Name:               h.Name,
			Ready:              h.Status.State == api.HostReady,
			Unschedulable:      h.Spec.Unschedulable,
			CPUs:               h.Status.CPUs,
			MemoryMiB:          h.Status.MemoryMiB,
			AllocatedVCPUs:     a.VCPUs,
			AllocatedMemoryMiB: a.MemoryMiB,
			Labels:             h.Labels,
		})
	}
	return snap
}

// limits returns the largest VM any of the hosts could run, for validation.
func (p *placer) limits(filter hostFilter) hostLimits {
	p.mu.Lock()
	snap := p.snapshotLocked(filter)
	p.mu.Unlock()
	return hostLimits{
		maxVCPUs:     scheduler.MaxVCPUs(snap),
		maxMemoryMiB: scheduler.MaxMemoryMiB(snap),
		hostExists: func(name string) bool {
			h, ok := p.s.hosts.Get(name)
			return ok && filter(h)
		},
	}
}

// place picks a host for a new VM and reserves its room. release must be
// called once the create is written (ok) or abandoned.
func (p *placer) place(ctx context.Context, name string, req scheduler.Request, filter hostFilter) (string, func(ok bool), error) {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	host, err := scheduler.Place(p.s.cfg.Scheduler, p.snapshotLocked(filter), req)
	if err != nil {
		var nr *scheduler.NoRoomError
		var uh *scheduler.UnknownHostError
		switch {
		case errors.As(err, &nr):
			return "", nil, &api.Error{Code: api.CodeUnprocessable, Message: nr.Error(), Details: nr.Details()}
		case errors.As(err, &uh):
			return "", nil, api.Invalid("host", "%v", uh)
		}
		return "", nil, err
	}
	p.reserved[name] = vmSize{host: host, vcpus: req.VCPUs, memory: req.MemoryMiB}
	release := func(ok bool) {
		if ok {
			return // the index subscription drops the reservation
		}
		p.mu.Lock()
		delete(p.reserved, name)
		p.mu.Unlock()
	}
	return host, release, nil
}

// resize checks that vm's host has room for it to grow as rc asks, with
// the overcommit ratios, and holds that room until release is called,
// which the caller does once the resize's operation is queued (from then
// on the queue holds it) or abandoned. The caller holds the VM's lock. A
// VM on no known host (a provider VM not placed yet) is not checked.
func (p *placer) resize(ctx context.Context, vm *api.VM, rc api.VMReconfigure) (release func(), err error) {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	key := vm.Key()
	p.mu.Lock()
	defer p.mu.Unlock()
	counted, inTotals := p.byVM[key]
	host := counted.host
	if !inTotals {
		host = vm.Spec.Host
	}
	snap := p.snapshotLocked(func(h *api.Host) bool { return h.Name == host })
	if len(snap.Hosts) == 0 {
		return func() {}, nil
	}
	h := &snap.Hosts[0]
	if !inTotals {
		// The placer has not seen the VM yet: its room is a reservation
		// (counted in the snapshot) or, not even that, added here.
		var reserved bool
		if counted, reserved = p.reserved[key]; !reserved {
			counted = sizeOf(vm)
			h.AllocatedVCPUs += counted.vcpus
			h.AllocatedMemoryMiB += counted.memory
		}
	}
	from := p.heldLocked(key, counted)
	if !inTotals {
		// The snapshot holds the growth of queued resizes only for VMs
		// in the totals.
		h.AllocatedVCPUs += from.vcpus - counted.vcpus
		h.AllocatedMemoryMiB += from.memory - counted.memory
	}
	to := from
	if rc.VCPUs > 0 {
		to.vcpus = rc.VCPUs
	}
	if rc.MemoryMiB > 0 {
		to.memory = rc.MemoryMiB
	}
	err = scheduler.Resize(p.s.cfg.Scheduler, *h,
		scheduler.Request{VCPUs: from.vcpus, MemoryMiB: from.memory}, scheduler.Request{VCPUs: to.vcpus, MemoryMiB: to.memory})
	var re *scheduler.ResizeError
	if errors.As(err, &re) {
		return nil, &api.Error{Code: api.CodeUnprocessable, Field: re.Resource, Message: fmt.Sprintf("resizing vm %q: %v", vm.Name, re),
			Details: map[string]string{"host": re.Host, "resource": re.Resource}}
	} else if err != nil {
		return nil, fmt.Errorf("checking the resize of vm %q: %w", vm.Name, err)
	}
	to.vcpus, to.memory, to.host = max(to.vcpus, from.vcpus), max(to.memory, from.memory), host
	p.resizing[key] = to
	return func() {
		p.mu.Lock()
		delete(p.resizing, key)
		p.mu.Unlock()
	}, nil
}

// listAll returns every object of a collection that passes filter.
func listAll[T any](c *store.Collection[T], filter func(*T) bool) []*T {
	items, _, err := c.List(store.ListOptions[T]{Filter: filter})
	if err != nil {
		return nil
	}
	return items
}
