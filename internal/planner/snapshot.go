// Package planner answers capacity questions over a read-only snapshot of
// an estate: the fewest hosts that hold its VMs and where each VM goes
// (Consolidate), the same under changes (WhatIf), and when each cluster
// runs out of CPU or memory at the current trend (Forecast).
//
// It is pure logic: no I/O, no clock, no randomness. The same snapshot and
// options always give the same plan, whatever the order of the input.
package planner

import (
	"fmt"
	"math"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Snapshot is an estate as the planner sees it.
type Snapshot struct {
	Hosts []Host `json:"hosts"`
	VMs   []VM   `json:"vms"`
}

// Host is a machine VMs can run on.
type Host struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster,omitempty"`
	// Provider is the estate the host belongs to ("" for Polyvisor's own
	// hosts). VMs stay within their provider unless the options allow
	// crossing.
	Provider string `json:"provider,omitempty"`
	// CPUs is the host's physical cores; MemoryMiB its memory for VMs.
	CPUs      float64 `json:"cpus"`
	MemoryMiB float64 `json:"memoryMiB"`
	// CPUOvercommit and MemoryOvercommit divide the allocation of a VM
	// sized by its allocation (no demand known): with 4, a 4-vCPU VM takes
	// one core of this host. Zero means 1 (no overcommit).
	CPUOvercommit    float64 `json:"cpuOvercommit,omitempty"`
	MemoryOvercommit float64 `json:"memoryOvercommit,omitempty"`
	// Cordoned hosts take no VM in a plan; the VMs on them move off.
	Cordoned bool              `json:"cordoned,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// VM is a virtual machine with what it is given and what it uses.
type VM struct {
	Name string `json:"name"`
	// Host is where the VM runs now ("" when it is not placed).
	Host     string `json:"host,omitempty"`
	Provider string `json:"provider,omitempty"`
	// VCPUs and MemoryMiB are the VM's allocation: its size when nothing
	// is known of its demand.
	VCPUs     float64 `json:"vcpus"`
	MemoryMiB float64 `json:"memoryMiB"`
	// History is the VM's measured demand over time; the plan sizes the
	// VM at the options' percentile of it.
	History []Sample `json:"history,omitempty"`
	// Demand is a demand already reduced to one figure (an export's
	// current usage, or a percentile computed elsewhere); used when
	// History is empty. Zero fields fall back to the allocation.
	Demand *Usage `json:"demand,omitempty"`
	// Pinned keeps the VM on Host.
	Pinned bool `json:"pinned,omitempty"`
	// Affinity names a group whose VMs all run on one host.
	Affinity string `json:"affinity,omitempty"`
	// AntiAffinity names groups: no two VMs sharing a group run on one host.
	AntiAffinity []string `json:"antiAffinity,omitempty"`
	// HostSelector is labels a host must carry to take the VM.
	HostSelector map[string]string `json:"hostSelector,omitempty"`
}

// Sample is a VM's demand at one time: CPU in cores busy, memory in MiB
// in use.
type Sample struct {
	Time      time.Time `json:"time"`
	CPU       float64   `json:"cpu"`
	MemoryMiB float64   `json:"memoryMiB"`
}

// Result and option types are the API's wire types, so that a plan
// reaches a client as the planner made it.
type (
	Usage           = api.PlanUsage
	Options         = api.PlanOptions
	Plan            = api.Plan
	HostPlan        = api.PlanHost
	Assignment      = api.PlanAssignment
	Move            = api.PlanMove
	Unplaced        = api.PlanUnplaced
	Savings         = api.PlanSavings
	Change          = api.PlanChange
	HostShape       = api.PlanHostShape
	WhatIfResult    = api.WhatIf
	ClusterForecast = api.ClusterForecast
	Trend           = api.ForecastTrend
)

// Defaults of Options.
const (
	DefaultTargetUtilization = 0.8
	DefaultPercentile        = 95
)

// InputError names what is wrong with a snapshot or options.
type InputError struct {
	Field   string
	Message string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Message }

func badInput(field, format string, args ...any) error {
	return &InputError{Field: field, Message: fmt.Sprintf(format, args...)}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// withDefaults checks opts and fills in zero fields.
func withDefaults(o Options, target float64) (Options, error) {
	if o.TargetUtilization == 0 {
		o.TargetUtilization = target
	}
	if !finite(o.TargetUtilization) || o.TargetUtilization <= 0 || o.TargetUtilization > 1 {
		return o, badInput("targetUtilization", "must be in (0, 1], got %v", o.TargetUtilization)
	}
	if o.Percentile == 0 {
		o.Percentile = DefaultPercentile
	}
	if !finite(o.Percentile) || o.Percentile <= 0 || o.Percentile > 100 {
		return o, badInput("percentile", "must be in (0, 100], got %v", o.Percentile)
	}
	return o, nil
}

// validate checks the snapshot: unique names, finite non-negative sizes,
// pins to hosts that exist.
func (s Snapshot) validate() error {
	hosts := make(map[string]bool, len(s.Hosts))
	for i, h := range s.Hosts {
		f := fmt.Sprintf("hosts[%d]", i)
		if h.Name == "" {
			return badInput(f+".name", "is empty")
		}
		if hosts[h.Name] {
			return badInput(f+".name", "host %q appears twice", h.Name)
		}
		hosts[h.Name] = true
		for _, c := range []struct {
			name string
			v    float64
		}{{"cpus", h.CPUs}, {"memoryMiB", h.MemoryMiB}, {"cpuOvercommit", h.CPUOvercommit}, {"memoryOvercommit", h.MemoryOvercommit}} {
			if !finite(c.v) || c.v < 0 {
				return badInput(f+"."+c.name, "host %q: must be a finite number >= 0, got %v", h.Name, c.v)
			}
		}
	}
	vms := make(map[string]bool, len(s.VMs))
	for i, v := range s.VMs {
		f := fmt.Sprintf("vms[%d]", i)
		if v.Name == "" {
			return badInput(f+".name", "is empty")
		}
		if vms[v.Name] {
			return badInput(f+".name", "vm %q appears twice", v.Name)
		}
		vms[v.Name] = true
		if !finite(v.VCPUs) || v.VCPUs < 0 || !finite(v.MemoryMiB) || v.MemoryMiB < 0 {
			return badInput(f, "vm %q: vcpus and memoryMiB must be finite numbers >= 0", v.Name)
		}
		if v.Demand != nil && (!finite(v.Demand.CPU) || v.Demand.CPU < 0 || !finite(v.Demand.MemoryMiB) || v.Demand.MemoryMiB < 0) {
			return badInput(f+".demand", "vm %q: must be finite numbers >= 0", v.Name)
		}
		for j, smp := range v.History {
			if !finite(smp.CPU) || smp.CPU < 0 || !finite(smp.MemoryMiB) || smp.MemoryMiB < 0 {
				return badInput(fmt.Sprintf("%s.history[%d]", f, j), "vm %q: must be finite numbers >= 0", v.Name)
			}
		}
		if v.Pinned && v.Host == "" {
			return badInput(f+".pinned", "vm %q is pinned but names no host", v.Name)
		}
	}
	return nil
}
