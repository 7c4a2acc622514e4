// Package placement keeps the allocation of every host, fed by the VM
// index, places new VMs through the scheduler and checks resizes against
// their host's room, each admitted in the transaction that writes it.
package placement

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Placer keeps the allocation of every host, fed by the VM index, and
// places new VMs and checks resizes. Its totals follow the index exactly:
// it observes every change of the VMs before the store's revision moves
// past it. A placement or a resize is admitted by the host's admission
// record (package admission): it decides from totals that hold at least
// what that record admitted, and its transaction holds the record, and
// the host, to the versions it decided from. A resize queued or running
// holds the room it grows by until it is applied: a VM counts at the
// larger of its spec and its queued resizes (Queue.PendingSize), as for
// the quota.
//
// Every map here is keyed by the VM's key, api.Meta.Key ("<project>/<name>",
// the key it is stored under), whether the VM comes from a list of the
// index or from one of its changes; a VM keyed two ways would count twice
// and never leave.
type Placer struct {
	vms     *store.Collection[api.VM]
	hosts   *store.Collection[api.Host]
	sched   scheduler.Config
	queue   Queue
	records *admission.Records

	mu     sync.Mutex
	byVM   map[string]vmSize         // placed VMs, by key
	totals map[string]api.Allocation // sums of byVM per host
	images map[string]map[string]int // per host: image name -> VMs using it
	// inflight are the placements this server chose whose creates are
	// not in the index yet. They count when a host is chosen, so that
	// creates made at once spread over the hosts instead of all choosing
	// the same best one and racing for its admission record; they never
	// count when a VM's fit is checked (the index and the host's record
	// decide that), so a create that then fails refused nobody.
	inflight   map[uint64]inflightPlacement
	inflightID uint64
	// sampleFrom is the host name the next sample of a large fleet
	// starts its walk at (sampleLocked).
	sampleFrom string
	// own are the capacities of Polyvisor's own hosts, kept from the
	// hosts' changes, for OwnLimits.
	own ownCapacities
}

// inflightPlacement is a placement chosen and not yet stored.
type inflightPlacement struct {
	host   string
	vcpus  int
	memory int64
}

type vmSize struct {
	host   string
	vcpus  int
	memory int64
	images []string // images the VM's host needs for it
	// target is the host a migration under way moves the VM to: the VM
	// holds its size there too until the migration ends.
	target string
}

// Queue is what the placer asks of the operation queue: which VMs have
// resizes queued or under way, and the size a VM holds with its queued
// resizes. Its answers must be exact as of the index, as the placer's own
// totals are. A VM not in Resizing holds its spec.
type Queue interface {
	Resizing() []string
	PendingSize(vm *api.VM) api.Usage
}

// Config is what a placer reads: the VMs and hosts, the overcommit ratios,
// the operation queue and the hosts' admission records.
type Config struct {
	VMs       *store.Collection[api.VM]
	Hosts     *store.Collection[api.Host]
	Scheduler scheduler.Config
	Queue     Queue
	Records   *admission.Records
}

// New makes a placer that follows the VM index from now on.
func New(cfg Config) *Placer {
	p := &Placer{vms: cfg.VMs, hosts: cfg.Hosts, sched: cfg.Scheduler, queue: cfg.Queue, records: cfg.Records,
		byVM: map[string]vmSize{}, totals: map[string]api.Allocation{}, images: map[string]map[string]int{},
		inflight: map[uint64]inflightPlacement{}}
	p.own = ownCapacities{byHost: map[string]hostCapacity{}, cpus: map[int]int{}, memory: map[int64]int{}}
	// Observe first, then read what was there, under the same lock: the
	// index read is at least as new as any change observed before it.
	cfg.VMs.Observe(p.observe)
	cfg.Hosts.Observe(p.observeHost)
	p.mu.Lock()
	for _, vm := range cfg.VMs.Select(nil) {
		p.setLocked(vm.Key(), sizeOf(vm), true)
	}
	for _, h := range cfg.Hosts.Select(nil) {
		p.own.set(h.Name, h, true)
	}
	p.mu.Unlock()
	return p
}

// observeHost applies one change of the hosts' index to the own hosts'
// capacities.
func (p *Placer) observeHost(c store.Change[api.Host]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.own.set(c.Name, c.Obj, c.Type != store.Delete)
}

// observe applies one change of the VM index.
func (p *Placer) observe(c store.Change[api.VM]) {
	key := c.Obj.Key() // the last value on a delete
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(key, sizeOf(c.Obj), c.Type != store.Delete)
}

func sizeOf(vm *api.VM) vmSize {
	v := vmSize{host: vm.Spec.Host, vcpus: vm.Spec.VCPUs, memory: vm.Spec.MemoryMiB}
	if m := vm.Spec.Migration; m != nil && m.Target != vm.Spec.Host {
		v.target = m.Target
	}
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
	if v.target != "" {
		p.account(vmSize{host: v.target, vcpus: v.vcpus, memory: v.memory, images: v.images}, sign)
	}
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
	if len(imgs) == 0 {
		delete(p.images, v.host)
	}
}

// HostUses tells whether a VM placed on host uses the image.
func (p *Placer) HostUses(host, image string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.images[host][image] > 0
}

// growthLocked is what the resizes queued or under way add to their
// hosts' allocations beyond what the totals count: few hosts, whatever
// the size of the fleet.
func (p *Placer) growthLocked() map[string]api.Allocation {
	var out map[string]api.Allocation
	for _, key := range p.queue.Resizing() {
		counted, ok := p.byVM[key]
		if !ok {
			continue
		}
		held := p.heldLocked(key, counted)
		if held.vcpus == counted.vcpus && held.memory == counted.memory {
			continue
		}
		if out == nil {
			out = map[string]api.Allocation{}
		}
		a := out[counted.host]
		a.VCPUs += held.vcpus - counted.vcpus
		a.MemoryMiB += held.memory - counted.memory
		out[counted.host] = a
	}
	return out
}

// heldLocked is the size a VM holds on its host: the larger of what the
// placer counts for it and its spec in the index with every resize queued
// for it.
func (p *Placer) heldLocked(key string, counted vmSize) vmSize {
	held := counted
	if vm, ok := p.vms.Get(key); ok {
		u := p.queue.PendingSize(vm)
		held.vcpus = max(held.vcpus, int(u.VCPUs))
		held.memory = max(held.memory, u.MemoryMiB)
	}
	return held
}

// Allocation returns what is allocated on one host.
func (p *Placer) Allocation(host string) api.Allocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.totals[host]
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

// hostsOf are the hosts that pass filter, or only the one named when
// name is set: a placement pinned to a host, or the check of one host,
// reads that host, not the fleet.
func (p *Placer) hostsOf(filter Filter, name string) []*api.Host {
	if name == "" {
		return p.hosts.Select(filter)
	}
	if h, ok := p.hosts.Get(name); ok && filter(h) {
		return []*api.Host{h}
	}
	return nil
}

// snapshotLocked builds the scheduler's view of hosts: their capacity and
// state, and what is allocated on each (the growth of queued resizes
// included).
func (p *Placer) snapshotLocked(hosts []*api.Host) scheduler.Snapshot {
	grow := p.growthLocked()
	snap := scheduler.Snapshot{Hosts: make([]scheduler.HostInfo, 0, len(hosts))}
	for _, h := range hosts {
		snap.Hosts = append(snap.Hosts, p.hostInfoLocked(h, grow))
	}
	return snap
}

// hostInfoLocked is one host in the scheduler's view, with grow, the
// growth of the resizes under way (growthLocked).
func (p *Placer) hostInfoLocked(h *api.Host, grow map[string]api.Allocation) scheduler.HostInfo {
	a := p.totals[h.Name]
	if g, ok := grow[h.Name]; ok {
		a.VCPUs += g.VCPUs
		a.MemoryMiB += g.MemoryMiB
	}
	return scheduler.HostInfo{
		Name:               h.Name,
		Ready:              h.Status.State == api.HostReady,
		Unschedulable:      h.Spec.Unschedulable,
		CPUs:               h.Status.CPUs,
		MemoryMiB:          h.Status.MemoryMiB,
		AllocatedVCPUs:     a.VCPUs,
		AllocatedMemoryMiB: a.MemoryMiB,
		Labels:             h.Labels,
	}
}

// Limits are the largest VM any of some hosts could ever run, zero when
// none is known, and whether a host is one of them.
type Limits struct {
	MaxVCPUs     int
	MaxMemoryMiB int64
	HostExists   func(name string) bool
}

// Limits returns the largest VM any of the hosts could run, for
// validation: their capacity alone, whatever is allocated on them.
func (p *Placer) Limits(filter Filter) Limits {
	l := Limits{HostExists: func(name string) bool {
		h, ok := p.hosts.Get(name)
		return ok && filter(h)
	}}
	for _, h := range p.hosts.Select(filter) {
		l.MaxVCPUs = max(l.MaxVCPUs, h.Status.CPUs)
		l.MaxMemoryMiB = max(l.MaxMemoryMiB, h.Status.MemoryMiB)
	}
	return l
}

// OwnLimits is Limits(OwnHosts), from capacities kept as the hosts
// change rather than from a scan of the fleet for each create.
func (p *Placer) OwnLimits() Limits {
	l := Limits{HostExists: func(name string) bool {
		h, ok := p.hosts.Get(name)
		return ok && OwnHosts(h)
	}}
	p.mu.Lock()
	l.MaxVCPUs, l.MaxMemoryMiB = p.own.max()
	p.mu.Unlock()
	return l
}

// placeAttempts bounds how often Place chooses again when the host it
// chose turns out full once its admission record is read.
const placeAttempts = 3

// Place picks a host for a new VM. It returns the conditions the VM's
// create must carry in its transaction: the host's admission record and
// version as decided from. The create that fails on one of them
// (admission.Retry) places again. Until release is called (once the
// create's transaction returned, whatever its outcome) the placement
// counts as in flight on this server: the next creates choose other
// hosts while they can.
func (p *Placer) Place(ctx context.Context, req scheduler.Request, filter Filter) (host string, conds []store.Op, release func(), err error) {
	for range placeAttempts {
		p.mu.Lock()
		host, err = p.chooseLocked(filter, req)
		p.mu.Unlock()
		if err != nil {
			return "", nil, nil, placeError(err)
		}
		// The choice was made from what this server has seen; decide
		// again for that host from at least what its record admitted.
		t, rerr := p.records.Read(ctx, admission.HostRecord(host))
		if rerr != nil {
			return "", nil, nil, rerr
		}
		pinned := req
		pinned.Host = host
		hosts := p.hostsOf(filter, host)
		p.mu.Lock()
		_, err = scheduler.Place(p.sched, p.snapshotLocked(hosts), pinned)
		if err == nil {
			release := p.holdLocked(inflightPlacement{host: host, vcpus: req.VCPUs, memory: req.MemoryMiB})
			p.mu.Unlock()
			return host, []store.Op{t.Op(), p.hosts.OpCheck(host, hosts[0].Version)}, release, nil
		}
		p.mu.Unlock()
	}
	return "", nil, nil, placeError(err)
}

// chooseLocked picks the host for req among those filter keeps: the
// pinned one, or the best of a sample of the fleet with room, counting
// the placements in flight while some host has room with them.
func (p *Placer) chooseLocked(filter Filter, req scheduler.Request) (string, error) {
	if req.Host != "" {
		return scheduler.Place(p.sched, p.snapshotLocked(p.hostsOf(filter, req.Host)), req)
	}
	if sample, ok := p.sampleLocked(filter, req); ok {
		return scheduler.Place(p.sched, sample, req)
	}
	snap := p.snapshotLocked(p.hosts.Select(filter))
	host, err := scheduler.Place(p.sched, p.withInflightLocked(snap), req)
	if err != nil {
		// Placements in flight may yet fail: they never refuse.
		host, err = scheduler.Place(p.sched, snap, req)
	}
	return host, err
}

// sampleLocked is the scheduler's view of some of the hosts filter keeps
// that have room for req: scheduler.SampleSize of them, found by walking
// the hosts from where the last sample stopped, so that each host has its
// turn. Hosts count the placements in flight; when none has room with
// them, the sample is of hosts with room without them. It is false when
// the fleet is small enough to look at whole, or when the walk found no
// host with room: the whole fleet is then looked at, for the reasons.
func (p *Placer) sampleLocked(filter Filter, req scheduler.Request) (scheduler.Snapshot, bool) {
	want := scheduler.SampleSize(p.sched, p.hosts.Len())
	if want >= p.hosts.Len() {
		return scheduler.Snapshot{}, false
	}
	grow, inflight := p.growthLocked(), p.inflightByHostLocked()
	var fits, loose []scheduler.HostInfo
	var last string
	p.hosts.Walk(p.sampleFrom, func(h *api.Host) bool {
		last = h.Name
		if !filter(h) {
			return true
		}
		hi := p.hostInfoLocked(h, grow)
		with := hi
		if f, ok := inflight[h.Name]; ok {
			with.AllocatedVCPUs += f.vcpus
			with.AllocatedMemoryMiB += f.memory
		}
		if scheduler.Refusal(p.sched, with, req) == "" {
			fits = append(fits, with)
		} else if len(fits) == 0 && len(loose) < want && scheduler.Refusal(p.sched, hi, req) == "" {
			loose = append(loose, hi)
		}
		return len(fits) < want
	})
	p.sampleFrom = last + "\x00" // the next name after the last looked at
	switch {
	case len(fits) > 0:
		return scheduler.Snapshot{Hosts: fits}, true
	case len(loose) > 0:
		return scheduler.Snapshot{Hosts: loose}, true
	}
	return scheduler.Snapshot{}, false
}

// inflightByHostLocked sums the placements in flight per host.
func (p *Placer) inflightByHostLocked() map[string]inflightPlacement {
	byHost := make(map[string]inflightPlacement, len(p.inflight))
	for _, f := range p.inflight {
		a := byHost[f.host]
		a.vcpus += f.vcpus
		a.memory += f.memory
		byHost[f.host] = a
	}
	return byHost
}

// withInflightLocked is snap with the placements in flight added to
// their hosts' allocations, for choosing a host.
func (p *Placer) withInflightLocked(snap scheduler.Snapshot) scheduler.Snapshot {
	if len(p.inflight) == 0 {
		return snap
	}
	byHost := p.inflightByHostLocked()
	out := scheduler.Snapshot{Hosts: slices.Clone(snap.Hosts)}
	for i := range out.Hosts {
		h := &out.Hosts[i]
		if f, ok := byHost[h.Name]; ok {
			h.AllocatedVCPUs += f.vcpus
			h.AllocatedMemoryMiB += f.memory
		}
	}
	return out
}

// holdLocked counts a placement as in flight until the returned release
// is called (more than once is fine).
func (p *Placer) holdLocked(f inflightPlacement) (release func()) {
	p.inflightID++
	id := p.inflightID
	p.inflight[id] = f
	return func() {
		p.mu.Lock()
		delete(p.inflight, id)
		p.mu.Unlock()
	}
}

// InFlight is how many placements this server chose whose creates have
// not returned yet.
func (p *Placer) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight)
}

// placeError tells a refused placement in the API's terms.
func placeError(err error) error {
	var nr *scheduler.NoRoomError
	var uh *scheduler.UnknownHostError
	switch {
	case errors.As(err, &nr):
		return &api.Error{Code: api.CodeUnprocessable, Message: nr.Error(), Details: nr.Details()}
	case errors.As(err, &uh):
		return api.Invalid("host", "%v", uh)
	}
	return err
}

// Resize checks that vm's host has room for it to grow as rc asks, with
// the overcommit ratios, and returns the conditions the resize's
// operation must carry in its transaction (the host's admission record
// and version). The caller holds the VM's lock. A VM on no known host (a
// provider VM not placed yet) is not checked.
func (p *Placer) Resize(ctx context.Context, vm *api.VM, rc api.VMReconfigure) ([]store.Op, error) {
	key := vm.Key()
	p.mu.Lock()
	host := vm.Spec.Host
	if counted, ok := p.byVM[key]; ok {
		host = counted.host
	}
	p.mu.Unlock()
	if _, ok := p.hosts.Get(host); !ok {
		return nil, nil
	}
	t, err := p.records.Read(ctx, admission.HostRecord(host))
	if err != nil {
		return nil, err
	}
	hosts := p.hostsOf(func(*api.Host) bool { return true }, host)
	p.mu.Lock()
	defer p.mu.Unlock()
	snap := p.snapshotLocked(hosts)
	if len(snap.Hosts) == 0 {
		return nil, nil
	}
	h := &snap.Hosts[0]
	counted, inTotals := p.byVM[key]
	if !inTotals {
		counted = sizeOf(vm)
	}
	from := p.heldLocked(key, counted)
	if !inTotals {
		// Not counted on the host at all: add what it holds.
		h.AllocatedVCPUs += from.vcpus
		h.AllocatedMemoryMiB += from.memory
	} else if !slices.Contains(p.queue.Resizing(), key) {
		// Counted without the growth the snapshot adds only for VMs
		// with resizes under way.
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
	return []store.Op{t.Op(), p.hosts.OpCheck(host, hosts[0].Version)}, nil
}
