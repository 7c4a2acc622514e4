// Package quota admits what a project asks for against its quota: VMs,
// their vCPUs, memory and disks, and the storage and imports of its images.
package quota

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Gate makes a project's quota check and the write it admits one
// step: creates and resizes in a project that has a quota take the
// project's lock, read its usage from the index, and write before letting
// the next one look. The store's Txn returns once the index holds the
// write, so the next one sees it.
//
// A project's lock comes after a VM's lock and before the placer's mutex
// (the lock order is written at ops.Controller.LockVM): whoever holds it
// never waits for a VM's lock.
type Gate struct {
	projects *store.Collection[api.Project]
	vms      *store.Collection[api.VM]
	images   *store.Collection[api.Image]
	queue    Queue
	imports  *Images

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Queue is what the gate asks of the operation queue: the size a VM holds
// with the resizes queued for it.
type Queue interface {
	PendingSize(vm *api.VM) api.Usage
}

// Config is what a gate reads.
type Config struct {
	Projects *store.Collection[api.Project]
	VMs      *store.Collection[api.VM]
	Images   *store.Collection[api.Image]
	Queue    Queue
	// Imports holds the image storage the imports under way reserve.
	Imports *Images
}

// New makes a gate.
func New(cfg Config) *Gate {
	return &Gate{projects: cfg.Projects, vms: cfg.VMs, images: cfg.Images, queue: cfg.Queue, imports: cfg.Imports,
		locks: map[string]*sync.Mutex{}}
}

// Lock takes a project's quota lock and returns its release.
func (g *Gate) Lock(project string) func() {
	g.mu.Lock()
	l, ok := g.locks[project]
	if !ok {
		l = &sync.Mutex{}
		g.locks[project] = l
	}
	g.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Limited tells whether a quota limits anything.
func Limited(q api.Quota) bool {
	return q.VCPUs != nil || q.MemoryMiB != nil || q.DiskMiB != nil || q.VMs != nil
}

// Admit checks that adding delta keeps the project within its quota. On
// success the caller holds the project's lock until it has written (or
// given up) and calls the returned unlock.
func (g *Gate) Admit(p *api.Project, delta api.Usage) (func(), error) {
	if !Limited(p.Spec.Quota) {
		return func() {}, nil
	}
	unlock := g.Lock(p.Name)
	// Read the quota again under the lock: it may have just changed.
	if cur, ok := g.projects.Get(p.Name); ok {
		p = cur
	}
	if err := exceeds(p.Name, p.Spec.Quota, g.UsageOf(p.Name), delta); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// AdmitResize checks a reconfigure against the quota. Usage counts each
// VM at the larger of its size and any resize still queued for it, so two
// racing resizes cannot pass together either; the caller holds the VM's
// lock, and the returned unlock until the resize operation is queued.
func (g *Gate) AdmitResize(p *api.Project, vm *api.VM, rc api.VMReconfigure) (func(), error) {
	if p == nil || !Limited(p.Spec.Quota) {
		return func() {}, nil
	}
	unlock := g.Lock(p.Name)
	if cur, ok := g.projects.Get(p.Name); ok {
		p = cur
	}
	used := g.UsageOf(p.Name)
	cur := g.queue.PendingSize(vm)
	var d api.Usage
	if rc.VCPUs > 0 {
		d.VCPUs = max(0, int64(rc.VCPUs)-cur.VCPUs)
	}
	if rc.MemoryMiB > 0 {
		d.MemoryMiB = max(0, rc.MemoryMiB-cur.MemoryMiB)
	}
	if err := exceeds(p.Name, p.Spec.Quota, used, d); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// exceeds returns a 422 naming the first limit that used+delta passes.
func exceeds(project string, q api.Quota, used, delta api.Usage) error {
	check := []struct {
		name        string
		limit       *int64
		used, delta int64
	}{
		{"vms", q.VMs, used.VMs, delta.VMs},
		{"vcpus", q.VCPUs, used.VCPUs, delta.VCPUs},
		{"memoryMiB", q.MemoryMiB, used.MemoryMiB, delta.MemoryMiB},
		{"diskMiB", q.DiskMiB, used.DiskMiB, delta.DiskMiB},
	}
	for _, c := range check {
		if c.limit != nil && c.delta > 0 && c.used+c.delta > *c.limit {
			return &api.Error{
				Code: api.CodeUnprocessable,
				Message: fmt.Sprintf("quota of project %q exceeded: %s would be %d, the limit is %d (%d in use)",
					project, c.name, c.used+c.delta, *c.limit, c.used),
				Details: map[string]string{
					"quota": c.name, "limit": strconv.FormatInt(*c.limit, 10),
					"used": strconv.FormatInt(c.used, 10), "requested": strconv.FormatInt(c.delta, 10),
				},
			}
		}
	}
	return nil
}

// UsageOf sums what the project's VMs use, from the index, and the
// storage of its images.
func (g *Gate) UsageOf(project string) api.Usage {
	var u api.Usage
	prefix := project + "/"
	for _, vm := range g.vms.Select(func(vm *api.VM) bool { return vm.Project == project }) {
		size := g.queue.PendingSize(vm)
		u.VMs++
		u.VCPUs += size.VCPUs
		u.MemoryMiB += size.MemoryMiB
		for _, d := range vm.Spec.Disks {
			u.DiskMiB += DiskMiB(d, func(ref string) (*api.Image, bool) {
				if !strings.Contains(ref, "/") {
					ref = prefix + ref
				}
				return g.images.Get(ref)
			})
		}
	}
	if g.imports != nil {
		u.ImageStorageMiB = g.imports.StorageMiB(project)
	}
	return u
}

// ImageLookup finds the image a VM's disk refers to.
type ImageLookup func(ref string) (*api.Image, bool)

// OfCreate is what a VM create asks for; lookup finds its disks' images.
func OfCreate(req *api.VMCreate, lookup ImageLookup) api.Usage {
	u := api.Usage{VMs: 1, VCPUs: int64(req.VCPUs), MemoryMiB: req.MemoryMiB}
	for _, d := range req.Disks {
		u.DiskMiB += DiskMiB(d, lookup)
	}
	return u
}

// DiskMiB is a disk's provisioned size: its size, or its image's virtual
// size when it keeps that.
func DiskMiB(d api.Disk, lookup ImageLookup) int64 {
	if d.SizeMiB > 0 || d.Image == "" {
		return d.SizeMiB
	}
	if img, ok := lookup(d.Image); ok {
		return (img.VirtualSizeBytes + (1 << 20) - 1) >> 20
	}
	return 0
}
