package api

import "time"

// PlanRequest is the body of POST /v1/plans/consolidate, /v1/plans/what-if
// and /v1/plans/forecast. The plan is made over the live estate (Polyvisor's
// hosts and VMs and the inventory of connected providers), or, when the
// request is multipart/form-data, over the RVTools workbook in its
// "rvtools" part (this body then goes in its "request" part).
type PlanRequest struct {
	Options PlanOptions `json:"options,omitzero"`
	// Change is the hypothetical change of a what-if.
	Change *PlanChange `json:"change,omitempty"`
	// IncludePoweredOff plans a workbook's powered-off VMs too, at their
	// allocation (they are left out by default).
	IncludePoweredOff bool `json:"includePoweredOff,omitempty"`
}

// Plan sources.
const (
	PlanSourceEstate  = "estate"
	PlanSourceRVTools = "rvtools"
)

// PlanOptions tune a plan.
type PlanOptions struct {
	// TargetUtilization is the fraction of a host's capacity a plan may
	// fill, in (0, 1]; default 0.8 for a consolidation or a what-if, 1
	// for a forecast (when capacity runs out entirely).
	TargetUtilization float64 `json:"targetUtilization,omitempty"`
	// Percentile of a VM's demand history it is sized at, in (0, 100];
	// default 95.
	Percentile float64 `json:"percentile,omitempty"`
	// CrossProvider lets VMs be planned onto hosts of another provider
	// (sizing an estate for new hosts before a conversion).
	CrossProvider bool `json:"crossProvider,omitempty"`
}

// PlanUsage is an amount of CPU (cores) and memory (MiB).
type PlanUsage struct {
	CPU       float64 `json:"cpu"`
	MemoryMiB float64 `json:"memoryMiB"`
}

// Plan is where every VM should run to use the fewest hosts, and what it
// takes to get there.
type Plan struct {
	// Source is where the estate came from: estate or rvtools.
	Source string `json:"source,omitempty"`
	// Warnings say what the server made of data it could not use.
	Warnings []string `json:"warnings,omitempty"`
	// Options are the options the plan was made with, defaults filled in.
	Options PlanOptions `json:"options"`
	// HostsBefore counts the hosts running VMs now; HostsAfter the hosts
	// the plan runs VMs on.
	HostsBefore int `json:"hostsBefore"`
	HostsAfter  int `json:"hostsAfter"`
	// LowerBound is a count no plan can beat: per provider, the fewest of
	// the largest hosts whose capacity covers the total demand of CPU and
	// of memory.
	LowerBound int        `json:"lowerBound"`
	Hosts      []PlanHost `json:"hosts"`
	// Placement is every placed VM's host in the plan, by VM name.
	Placement []PlanAssignment `json:"placement"`
	// Moves are the VMs whose host changes, by VM name.
	Moves    []PlanMove     `json:"moves"`
	Unplaced []PlanUnplaced `json:"unplaced,omitempty"`
	Savings  PlanSavings    `json:"savings"`
}

// PlanHost is one host before and after a plan.
type PlanHost struct {
	Name     string `json:"name"`
	Cluster  string `json:"cluster,omitempty"`
	Provider string `json:"provider,omitempty"`
	Cordoned bool   `json:"cordoned,omitempty"`
	// Capacity is what the plan may fill: the host's CPUs and memory at
	// the target utilization.
	Capacity PlanUsage `json:"capacity"`
	// Before and After are the demand of the VMs on the host now and in
	// the plan, sized as the plan sizes them.
	Before    PlanUsage `json:"before"`
	After     PlanUsage `json:"after"`
	VMsBefore int       `json:"vmsBefore"`
	VMsAfter  int       `json:"vmsAfter"`
}

// PlanAssignment is a VM's host in a plan and the size the plan gave it.
type PlanAssignment struct {
	VM     string    `json:"vm"`
	Host   string    `json:"host"`
	Size   PlanUsage `json:"size"`
	Source string    `json:"source"` // history, demand or allocation
}

// PlanMove is a VM a plan runs on another host.
type PlanMove struct {
	VM   string `json:"vm"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// PlanUnplaced is a VM a plan found no host for, and why.
type PlanUnplaced struct {
	VM     string `json:"vm"`
	Reason string `json:"reason"`
}

// PlanSavings is what the hosts a plan leaves empty hold.
type PlanSavings struct {
	// Hosts counts the hosts that take no VM in the plan (cordoned ones
	// aside); Freed names those among them that run VMs now.
	Hosts     int      `json:"hosts"`
	Freed     []string `json:"freed,omitempty"`
	CPUs      float64  `json:"cpus"`
	MemoryMiB float64  `json:"memoryMiB"`
}

// PlanChange is a hypothetical change to an estate.
type PlanChange struct {
	// AddHosts adds Count hosts of each shape.
	AddHosts []PlanHostShape `json:"addHosts,omitempty"`
	// RemoveHosts takes hosts out; their VMs must go elsewhere.
	RemoveHosts []string `json:"removeHosts,omitempty"`
	// GrowPercent grows every VM's demand (and allocation) by this much.
	GrowPercent float64 `json:"growPercent,omitempty"`
}

// PlanHostShape is a kind of host to add.
type PlanHostShape struct {
	Count            int               `json:"count"`
	CPUs             float64           `json:"cpus"`
	MemoryMiB        float64           `json:"memoryMiB"`
	Cluster          string            `json:"cluster,omitempty"`
	Provider         string            `json:"provider,omitempty"`
	CPUOvercommit    float64           `json:"cpuOvercommit,omitempty"`
	MemoryOvercommit float64           `json:"memoryOvercommit,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
}

// WhatIf is an estate's plan after a change, beside its plan now.
type WhatIf struct {
	Source   string     `json:"source,omitempty"`
	Warnings []string   `json:"warnings,omitempty"`
	Change   PlanChange `json:"change"`
	// Added names the hosts the change added.
	Added []string `json:"added,omitempty"`
	// Fits is true when every VM has a host after the change.
	Fits bool `json:"fits"`
	// Now is the consolidation of the estate as it is; After the same
	// after the change.
	Now   *Plan `json:"now"`
	After *Plan `json:"after"`
	// Headroom is the capacity the plan after the change leaves free on
	// its hosts (cordoned ones aside), at the target utilization.
	Headroom PlanUsage `json:"headroom"`
}

// Forecast is, per cluster, when CPU or memory runs out at the trend.
type Forecast struct {
	Source   string            `json:"source,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
	Options  PlanOptions       `json:"options"`
	Clusters []ClusterForecast `json:"clusters"`
}

// ClusterForecast is when a cluster runs out of CPU or memory if demand
// keeps its linear trend.
type ClusterForecast struct {
	Cluster string        `json:"cluster"`
	Hosts   int           `json:"hosts"`
	VMs     int           `json:"vms"`
	CPU     ForecastTrend `json:"cpu"`
	Memory  ForecastTrend `json:"memory"`
	// RunsOut is the resource that runs out first ("cpu" or "memory"),
	// RunsOutAt when; empty when neither grows toward its capacity.
	RunsOut   string     `json:"runsOut,omitempty"`
	RunsOutAt *time.Time `json:"runsOutAt,omitempty"`
}

// ForecastTrend is a least-squares line through a cluster's total demand
// of one resource over its history.
type ForecastTrend struct {
	// Capacity is the cluster's hosts' total at the threshold.
	Capacity float64 `json:"capacity"`
	// Now is the trend's value at the last sample; PerDay its slope.
	Now    float64 `json:"now"`
	PerDay float64 `json:"perDay"`
	// Points is how many time points the line was fitted to.
	Points    int        `json:"points"`
	RunsOutAt *time.Time `json:"runsOutAt,omitempty"`
	DaysLeft  *float64   `json:"daysLeft,omitempty"`
	// Note says why there is no date ("no history", "not growing"), or
	// that the cluster is "already over capacity".
	Note string `json:"note,omitempty"`
}
