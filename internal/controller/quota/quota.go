// Package quota admits what a project asks for against its quota: VMs,
// their vCPUs, memory and disks, the storage and imports of its images,
// and its networks, ports and floating IPs.
package quota

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Gate admits creates and resizes against their project's quota. The
// check and the write it admits are one step in etcd, whichever server
// makes them: the gate decides from the index once it holds at least what
// the project's admission record admitted (package admission), and the
// write's transaction holds that record, and the project, to the versions
// decided from. Of two admissions that decided from the same usage only
// one commits; the other decides again.
type Gate struct {
	projects *store.Collection[api.Project]
	vms      *store.Collection[api.VM]
	images   *store.Collection[api.Image]
	queue    Queue
	imports  *Images
	records  *admission.Records
	counted  func(project string) api.Usage
	volumes  *store.Collection[api.Volume]
}

// Queue is what the gate asks of the operation queue: the size a VM holds
// with the resizes queued for it, exact as of the index.
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
	// Records are the projects' admission records.
	Records *admission.Records
	// Counted, when set, counts what else a project holds against its
	// quota (its networks, ports and floating IPs), from the index.
	Counted func(project string) api.Usage
	// Volumes, when set, count against the projects' volume quota.
	Volumes *store.Collection[api.Volume]
}

// New makes a gate.
func New(cfg Config) *Gate {
	return &Gate{projects: cfg.Projects, vms: cfg.VMs, images: cfg.Images, queue: cfg.Queue, imports: cfg.Imports, records: cfg.Records, counted: cfg.Counted, volumes: cfg.Volumes}
}

// Limited tells whether a quota limits anything.
func Limited(q api.Quota) bool {
	return q.VCPUs != nil || q.MemoryMiB != nil || q.DiskMiB != nil || q.VMs != nil ||
		q.Networks != nil || q.Ports != nil || q.FloatingIPs != nil || q.VolumeMiB != nil
}

// Admit checks that adding delta keeps the project within its quota, and
// returns the conditions the admitted write's transaction carries. A
// project without a quota admits anything, on the condition that it
// still has none.
func (g *Gate) Admit(ctx context.Context, project string, delta api.Usage) ([]store.Op, error) {
	return g.admit(ctx, project, func(*api.Project) api.Usage { return delta })
}

// AdmitResize checks a reconfigure against the quota. Usage counts each
// VM at the larger of its size and any resize still queued for it, so two
// racing resizes cannot pass together either.
func (g *Gate) AdmitResize(ctx context.Context, vm *api.VM, rc api.VMReconfigure) ([]store.Op, error) {
	return g.admit(ctx, vm.Project, func(*api.Project) api.Usage {
		cur := g.queue.PendingSize(vm)
		var d api.Usage
		if rc.VCPUs > 0 {
			d.VCPUs = max(0, int64(rc.VCPUs)-cur.VCPUs)
		}
		if rc.MemoryMiB > 0 {
			d.MemoryMiB = max(0, rc.MemoryMiB-cur.MemoryMiB)
		}
		return d
	})
}

// admit checks the delta asks for against the project's quota, deciding
// from the index once it holds what the project's record admitted.
func (g *Gate) admit(ctx context.Context, project string, asks func(*api.Project) api.Usage) ([]store.Op, error) {
	p, ok := g.projects.Get(project)
	if !ok {
		return nil, api.NotFound("project", project)
	}
	if !Limited(p.Spec.Quota) {
		return []store.Op{g.projects.OpCheck(p.Name, p.Version)}, nil
	}
	t, err := g.records.Read(ctx, admission.ProjectRecord(project))
	if err != nil {
		return nil, err
	}
	// Read the quota again: it may have just changed.
	if p, ok = g.projects.Get(project); !ok {
		return nil, api.NotFound("project", project)
	}
	conds := []store.Op{t.Op(), g.projects.OpCheck(p.Name, p.Version)}
	if !Limited(p.Spec.Quota) {
		return conds, nil
	}
	if err := exceeds(p.Name, p.Spec.Quota, g.UsageOf(p.Name), asks(p)); err != nil {
		return nil, err
	}
	return conds, nil
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
		{"networks", q.Networks, used.Networks, delta.Networks},
		{"ports", q.Ports, used.Ports, delta.Ports},
		{"floatingIPs", q.FloatingIPs, used.FloatingIPs, delta.FloatingIPs},
		{"volumeMiB", q.VolumeMiB, used.VolumeMiB, delta.VolumeMiB},
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
	if g.volumes != nil {
		for _, v := range g.volumes.Select(func(v *api.Volume) bool { return v.Project == project }) {
			u.VolumeMiB += v.Spec.SizeMiB
		}
	}
	if g.imports != nil {
		u.ImageStorageMiB = g.imports.StorageMiB(project)
	}
	if g.counted != nil {
		c := g.counted(project)
		u.Networks, u.Ports, u.FloatingIPs = c.Networks, c.Ports, c.FloatingIPs
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

// AdmitVolume checks that a project's volumes may grow by sizeMiB (a new
// volume, or a volume grown), and returns the conditions of the write.
func (g *Gate) AdmitVolume(ctx context.Context, project string, sizeMiB int64) ([]store.Op, error) {
	return g.admit(ctx, project, func(*api.Project) api.Usage { return api.Usage{VolumeMiB: sizeMiB} })
}
