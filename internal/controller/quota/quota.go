package server

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/polyvisor/polyvisor/api"
)

// quotaGate makes a project's quota check and the write it admits one
// step: creates and resizes in a project that has a quota take the
// project's lock, read its usage from the index, and write before letting
// the next one look. The store's Txn returns once the index holds the
// write, so the next one sees it.
//
// A project's lock comes after a VM's lock and before the placer's mutex
// (the lock order is written at opController.lockVM): whoever holds it
// never waits for a VM's lock.
type quotaGate struct {
	s     *Server
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func newQuotaGate(s *Server) *quotaGate { return &quotaGate{s: s, locks: map[string]*sync.Mutex{}} }

func (g *quotaGate) lock(project string) func() {
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

func limited(q api.Quota) bool {
	return q.VCPUs != nil || q.MemoryMiB != nil || q.DiskMiB != nil || q.VMs != nil
}

// admit checks that adding delta keeps the project within its quota. On
// success the caller holds the project's lock until it has written (or
// given up) and calls the returned unlock.
func (g *quotaGate) admit(p *api.Project, delta api.Usage) (func(), error) {
	if !limited(p.Spec.Quota) {
		return func() {}, nil
	}
	unlock := g.lock(p.Name)
	// Read the quota again under the lock: it may have just changed.
	if cur, ok := g.s.projects.Get(p.Name); ok {
		p = cur
	}
	if err := exceeds(p.Name, p.Spec.Quota, g.s.usageOf(p.Name), delta); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// admitResize checks a reconfigure against the quota. Usage counts each
// VM at the larger of its size and any resize still queued for it, so two
// racing resizes cannot pass together either; the caller holds the VM's
// lock, and the returned unlock until the resize operation is queued.
func (g *quotaGate) admitResize(p *api.Project, vm *api.VM, rc api.VMReconfigure) (func(), error) {
	if p == nil || !limited(p.Spec.Quota) {
		return func() {}, nil
	}
	unlock := g.lock(p.Name)
	if cur, ok := g.s.projects.Get(p.Name); ok {
		p = cur
	}
	used := g.s.usageOf(p.Name)
	cur := g.s.pendingSize(vm)
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

// pendingSize is the vCPUs and memory a VM counts for: the larger of its
// spec and every resize queued for it.
func (s *Server) pendingSize(vm *api.VM) api.Usage {
	u := api.Usage{VCPUs: int64(vm.Spec.VCPUs), MemoryMiB: vm.Spec.MemoryMiB}
	for _, id := range s.opctl.activeOf(vm.Key()) {
		op, ok := s.ops.Get(id)
		if !ok || op.Kind != api.OpVMReconfigure || op.Status != api.OpPending {
			continue
		}
		var rc api.VMReconfigure
		if json.Unmarshal(op.Params, &rc) == nil {
			u.VCPUs = max(u.VCPUs, int64(rc.VCPUs))
			u.MemoryMiB = max(u.MemoryMiB, rc.MemoryMiB)
		}
	}
	return u
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

// usageOf sums what the project's VMs use, from the index.
func (s *Server) usageOf(project string) api.Usage {
	var u api.Usage
	prefix := project + "/"
	for _, vm := range listAll(s.vms, func(vm *api.VM) bool { return vm.Project == project }) {
		size := s.pendingSize(vm)
		u.VMs++
		u.VCPUs += size.VCPUs
		u.MemoryMiB += size.MemoryMiB
		for _, d := range vm.Spec.Disks {
			u.DiskMiB += s.diskMiB(d, func(ref string) (*api.Image, bool) {
				if !strings.Contains(ref, "/") {
					ref = prefix + ref
				}
				return s.images.Get(ref)
			})
		}
	}
	u.ImageStorageMiB = s.imageStorageMiB(project)
	return u
}

// usageOfCreate is what a VM create asks for.
func (s *Server) usageOfCreate(project string, req *api.VMCreate) api.Usage {
	u := api.Usage{VMs: 1, VCPUs: int64(req.VCPUs), MemoryMiB: req.MemoryMiB}
	lookup := s.imageResolver(project)
	for _, d := range req.Disks {
		u.DiskMiB += s.diskMiB(d, lookup)
	}
	return u
}

// diskMiB is a disk's provisioned size: its size, or its image's virtual
// size when it keeps that.
func (s *Server) diskMiB(d api.Disk, lookup imageLookup) int64 {
	if d.SizeMiB > 0 || d.Image == "" {
		return d.SizeMiB
	}
	if img, ok := lookup(d.Image); ok {
		return (img.VirtualSizeBytes + (1 << 20) - 1) >> 20
	}
	return 0
}

// projectOfVM returns a VM's project.
func (s *Server) projectOfVM(vm *api.VM) *api.Project {
	p, _ := s.projects.Get(vm.Project)
	return p
}
