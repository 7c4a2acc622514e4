// Package placement keeps the allocation of every host, fed by the VM
// index, places new VMs through the scheduler and checks resizes against
// their host's room.
package placement

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

// Placer keeps the allocation of every host, fed by the VM index, and
// places new VMs and checks resizes. A placement holds a reservation until
// the VM shows up in the index (or its create fails), and a resize until
// its operation is queued, so two concurrent creates or resizes never see
// the same free room. A resize queued or running holds the room it grows
// by until it is applied: a VM counts at the larger of its spec and its
// queued resizes (Queue.PendingSize), as for the quota.
//
// Every map here is keyed by the VM's key, api.Meta.Key ("<project>/<name>",
// the key it is stored under), whether the VM comes from a list of the
// index or from one of its changes; a VM keyed two ways would count twice
// and never leave.
type Placer struct {
	vms   *store.Collection[api.VM]
	hosts *store.Collection[api.Host]
	sched scheduler.Config
	queue Queue

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

// Queue is what the placer asks of the operation queue: which VMs have
// operations under way, and the size a VM holds with its queued resizes.
type Queue interface {
	ActiveKeys() map[string]bool
	PendingSize(vm *api.VM) api.Usage
}

// Config is what a placer reads: the VMs and hosts, the overcommit ratios,
// and the operation queue.
type Config struct {
	VMs       *store.Collection[api.VM]
	Hosts     *store.Collection[api.Host]
	Scheduler scheduler.Config
	Queue     Queue
}

// New makes a placer; Run feeds it.
func New(cfg Config) *Placer {
	p := &Placer{vms: cfg.VMs, hosts: cfg.Hosts, sched: cfg.Scheduler, queue: cfg.Queue, byVM: map[string]vmSize{}, totals: map[string]api.Allocation{},
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
func (p *Placer) setLocked(key string, v vmSize, ok bool) {
	if old, had := p.byVM[key]; had {
		p.account(old, -1)
		delete(p.byVM, key)
	}
	if ok {
		p.byVM[key] = v
		p.account(v, 1)
	}
}

func (p *Placer) account(v vmSize, sign int) {
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

// HostUses tells whether a VM placed on host uses the image.
func (p *Placer) HostUses(host, image string) bool {
	<-p.ready
	p.mu.Lock()
	uses := p.images[host][image] > 0
	p.mu.Unlock()
	if uses {
		return true
	}
	// The totals follow the index a moment behind it: a VM just placed may
	// not be counted yet, so a miss is checked against the index itself.
	return len(p.vms.Select(func(vm *api.VM) bool {
		return vm.Spec.Host == host && slices.Contains(sizeOf(vm).images, image)
	})) > 0
}

// Run follows the VM index. It subscribes before it reads the index so
// that no change falls between the two; replayed changes are idempotent.
func (p *Placer) Run(ctx context.Context) {
	ch := p.vms.Subscribe(ctx)
	p.mu.Lock()
	for _, vm := range p.vms.Select(nil) {
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
func (p *Placer) allocationsLocked() map[string]api.Allocation {
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
func (p *Placer) growingLocked() map[string]bool {
	keys := p.queue.ActiveKeys()
	for key := range p.resizing {
		keys[key] = true
	}
	return keys
}

// heldLocked is the size a VM holds on its host: the largest of what the
// placer counts for it, its spec in the index with every resize queued
// for it (the index may be a change ahead of the placer), and a resize
// being admitted.
func (p *Placer) heldLocked(key string, counted vmSize) vmSize {
	held := counted
	if vm, ok := p.vms.Get(key); ok {
		u := p.queue.PendingSize(vm)
		held.vcpus = max(held.vcpus, int(u.VCPUs))
		held.memory = max(held.memory, u.MemoryMiB)
	}
	if r, ok := p.resizing[key]; ok {
		held.vcpus = max(held.vcpus, r.vcpus)
		held.memory = max(held.memory, r.memory)
	}
	return held
}

// Allocation returns what is allocated on one host.
func (p *Placer) Allocation(host string) api.Allocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.totals[host]
}

// Placing is how many VMs are being placed on host: reserved for, and not
// yet in the index.
func (p *Placer) Placing(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allocationsLocked()[host].VMs - p.totals[host].VMs
}

// Filter picks the hosts a VM may go to: Polyvisor's own hosts, or
// those of one provider (and cluster).
type Filter func(*api.Host) bool

// OwnHosts are the hosts Polyvisor runs itself, through agents.
func OwnHosts(h *api.Host) bool { return h.Provider == nil }

// ProviderHosts are the hosts of one provider, in one cluster if given
// (by native id or name).
func ProviderHosts(provider, cluster string) Filter {
	return func(h *api.Host) bool {
		return h.Provider != nil && h.Provider.Name == provider && (cluster == "" || h.Provider.Cluster == cluster)
	}
}

// snapshot builds the scheduler's view of the hosts that pass filter.
func (p *Placer) snapshotLocked(filter Filter) scheduler.Snapshot {
	alloc := p.allocationsLocked()
	var snap scheduler.Snapshot
	for _, h := range p.hosts.Select(filter) {
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

// Limits are the largest VM any of some hosts could ever run, zero when
// none is known, and whether a host is one of them.
type Limits struct {
	MaxVCPUs     int
	MaxMemoryMiB int64
	HostExists   func(name string) bool
}

// Limits returns the largest VM any of the hosts could run, for validation.
func (p *Placer) Limits(filter Filter) Limits {
	p.mu.Lock()
	snap := p.snapshotLocked(filter)
	p.mu.Unlock()
	return Limits{
		MaxVCPUs:     scheduler.MaxVCPUs(snap),
		MaxMemoryMiB: scheduler.MaxMemoryMiB(snap),
		HostExists: func(name string) bool {
			h, ok := p.hosts.Get(name)
			return ok && filter(h)
		},
	}
}

// Place picks a host for a new VM and reserves its room. release must be
// called once the create is written (ok) or abandoned.
func (p *Placer) Place(ctx context.Context, name string, req scheduler.Request, filter Filter) (string, func(ok bool), error) {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	host, err := scheduler.Place(p.sched, p.snapshotLocked(filter), req)
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

// Resize checks that vm's host has room for it to grow as rc asks, with
// the overcommit ratios, and holds that room until release is called,
// which the caller does once the resize's operation is queued (from then
// on the queue holds it) or abandoned. The caller holds the VM's lock. A
// VM on no known host (a provider VM not placed yet) is not checked.
func (p *Placer) Resize(ctx context.Context, vm *api.VM, rc api.VMReconfigure) (release func(), err error) {
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
	err = scheduler.Resize(p.sched, *h,
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
