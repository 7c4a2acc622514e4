package server

import (
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

// checkResize checks a reconfigure against the quota. A resize needs a
// stopped VM and is carried out by the VM's host, so only the change is
// checked (two racing resizes of one project could pass together, and are
// then both counted).
func (g *quotaGate) checkResize(p *api.Project, vm *api.VM, rc api.VMReconfigure) error {
	if p == nil || !limited(p.Spec.Quota) {
		return nil
	}
	var d api.Usage
	if rc.VCPUs > 0 {
		d.VCPUs = int64(rc.VCPUs - vm.Spec.VCPUs)
	}
	if rc.MemoryMiB > 0 {
		d.MemoryMiB = rc.MemoryMiB - vm.Spec.MemoryMiB
	}
	if d.VCPUs <= 0 && d.MemoryMiB <= 0 {
		return nil
	}
	unlock := g.lock(p.Name)
	defer unlock()
	return exceeds(p.Name, p.Spec.Quota, g.s.usageOf(p.Name), d)
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
		u.VMs++
		u.VCPUs += int64(vm.Spec.VCPUs)
		u.MemoryMiB += vm.Spec.MemoryMiB
		for _, d := range vm.Spec.Disks {
			u.DiskMiB += s.diskMiB(d, func(ref string) (*api.Image, bool) {
				if !strings.Contains(ref, "/") {
					ref = prefix + ref
				}
				return s.images.Get(ref)
			})
		}
	}
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
