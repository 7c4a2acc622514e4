package v2vrun

import (
	"context"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// planned is one VM of a migration as planned: the source as read, and
// what is done to it.
type planned struct {
	src  SourceVM
	plan v2v.VMPlan
	// cutover: a running vSphere VM is copied warm from a snapshot, then
	// powered off and copied again.
	cutover bool
}

// planVMs maps the source VMs onto Polyvisor VMs. It never fails: what
// cannot move is in each plan's blockers.
func (c *Controller) planVMs(m *api.VMMigration, vms []SourceVM) []planned {
	out := make([]planned, len(vms))
	taken := map[string]string{}
	for i, sv := range vms {
		p := v2v.PlanVM(sv.HW, v2v.Options{Host: m.Spec.Host, NetworkMap: m.Spec.NetworkMap, VirtV2V: c.cfg.VirtV2V})
		if sv.Name != "" {
			rename(&p, sv.Name)
		}
		if sv.Err != nil {
			p.Blockers = append([]string{"the source VM cannot be read: " + sv.Err.Error()}, p.Blockers...)
		}
		if other, dup := taken[p.Name]; dup && p.Name != "" {
			p.Blockers = append(p.Blockers, fmt.Sprintf("VM %s of this migration is already called %q: name one of them", other, p.Name))
		}
		taken[p.Name] = sourceLabel(sv)
		pl := planned{src: sv, plan: p}
		switch {
		case sv.Running && sv.Kind == kindVSphere:
			pl.cutover = true
			p.Conversions = append(p.Conversions, "the source runs: copied from a snapshot while it runs, then powered off at cutover and what changed copied (without changed-block tracking: all of it, cold)")
		case sv.Running:
			p.Warnings = append(p.Warnings, "the source VM runs: libvirt's volumes are copied as they are written to, which at best is like a disk after a crash; shut it down for a consistent copy")
		}
		switch m.Spec.SourceDisposition {
		case api.DispositionPowerOff:
			p.Conversions = append(p.Conversions, "the source VM is powered off once its copy runs here")
		case api.DispositionDelete:
			p.Conversions = append(p.Conversions, "the source VM is deleted once its copy runs here")
		}
		pl.plan = p
		out[i] = pl
	}
	return out
}

// rename names the Polyvisor VM (and its images) name.
func rename(p *v2v.VMPlan, name string) {
	p.Name = name
	for i := range p.Disks {
		p.Disks[i].Image = name + "-" + p.Disks[i].Name
	}
}

func sourceLabel(sv SourceVM) string {
	if sv.ID != "" {
		return sv.ID
	}
	return sv.HW.Name
}

// apiPlan is a VM's plan as the record shows it.
func apiPlan(pl planned) *api.VMMigrationVMPlan {
	p := pl.plan
	out := &api.VMMigrationVMPlan{Host: p.Host, VCPUs: p.VCPUs, MemoryMiB: p.MemoryMiB, Firmware: p.Source.Firmware,
		GuestOS: p.Source.GuestOS, Running: pl.src.Running, Adaptation: p.Adaptation, Conversions: p.Conversions,
		Warnings: p.Warnings, Blockers: p.Blockers, CopyBytes: p.CopyBytes, EstimatedSeconds: p.EstimatedSeconds}
	for _, d := range p.Disks {
		out.Disks = append(out.Disks, api.VMMigrationDiskPlan{Name: d.Name, Image: d.Image, SourceBus: d.From.Bus, Bus: d.Bus, CapacityBytes: d.From.CapacityBytes})
	}
	for _, n := range p.NICs {
		out.NICs = append(out.NICs, api.VMMigrationNICPlan{SourceNetwork: n.From.Network, SourceModel: n.From.Model, Network: n.Network, MAC: n.MAC, Model: n.Model})
	}
	return out
}

// readPlan opens the migration's source and plans its VMs.
func (c *Controller) readPlan(ctx context.Context, m *api.VMMigration) (Source, []planned, error) {
	src, err := c.cfg.Sources.Open(ctx, m, c.jobDir(m.UID))
	if err != nil {
		return nil, nil, err
	}
	vms, err := src.Read(ctx)
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	if len(vms) == 0 {
		src.Close()
		return nil, nil, fmt.Errorf("the source holds no VM")
	}
	return src, c.planVMs(m, vms), nil
}

// plan reads the source and writes each VM's plan into the record: it
// is then planned, or pending when it was started meanwhile.
func (c *Controller) plan(ctx context.Context, recs Records, m *api.VMMigration) {
	src, plans, err := c.readPlan(ctx, m)
	if ctx.Err() != nil {
		if src != nil {
			src.Close()
		}
		return
	}
	if err == nil {
		src.Close()
	}
	_, uerr := recs.Update(ctx, m.Key(), m.UID, func(m *api.VMMigration) {
		if m.Status.State != api.VMMigrationPlanning {
			return
		}
		m.Status.Server = c.cfg.Server
		if err != nil {
			m.Status.State, m.Status.Error, m.Status.FinishedAt = api.VMMigrationFailed, cut("planning: "+err.Error()), time.Now().UTC()
			return
		}
		m.Status.VMs, m.Status.CopyBytes, m.Status.EstimatedSeconds = nil, 0, 0
		for _, pl := range plans {
			m.Status.VMs = append(m.Status.VMs, api.VMMigrationVMStatus{Name: pl.plan.Name, SourceID: pl.src.ID,
				SourceName: pl.src.HW.Name, Plan: apiPlan(pl), State: api.VMMigrationPending})
			m.Status.CopyBytes += pl.plan.CopyBytes
			m.Status.EstimatedSeconds += pl.plan.EstimatedSeconds
		}
		m.Status.State = api.VMMigrationPlanned
		if m.Spec.Start {
			m.Status.State = api.VMMigrationPending
		}
	})
	if uerr != nil {
		c.log.Warn("recording a migration's plan", "migration", m.Key(), "err", uerr)
	}
	if err != nil {
		c.cfg.Audit(ctx, "migration.plan", ref(m), "", api.AuditFailure, err.Error())
	}
}

func ref(m *api.VMMigration) api.Ref {
	return api.Ref{Kind: "migration", Name: m.Name, Project: m.Project, UID: m.UID}
}
