package api

import "time"

// UsagePoint is one point of a utilization history: the mean and the
// largest of the samples taken in [time, time+step). CPU is in cores
// busy, memory in bytes.
type UsagePoint struct {
	Time           time.Time `json:"time"`
	CPU            float64   `json:"cpu"`
	CPUMax         float64   `json:"cpuMax"`
	MemoryBytes    int64     `json:"memoryBytes"`
	MemoryMaxBytes int64     `json:"memoryMaxBytes"`
	Samples        int       `json:"samples"`
}

// UsageHistory is the utilization history of a host or a VM (GET
// /v1/hosts/{name}/usage, GET /v1/vms/{name}/usage).
type UsageHistory struct {
	Kind  string    `json:"kind"` // host or vm
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// StepSeconds is the points' step: the finest kept that reaches back
	// to since, or the step asked for (a multiple of it).
	StepSeconds int64        `json:"stepSeconds"`
	Points      []UsagePoint `json:"points"`
	// CPUs and MemoryMiB are the VM's allocation, or the host's capacity.
	CPUs      int   `json:"cpus,omitempty"`
	MemoryMiB int64 `json:"memoryMiB,omitempty"`
}

// UsageQuery asks a host's agent for history (a StreamRequest of console
// "usage"): of the host, of one VM by UID, or of several VMs by UID.
type UsageQuery struct {
	Kind        string    `json:"kind"` // host, vm
	UIDs        []string  `json:"uids,omitempty"`
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
	StepSeconds int64     `json:"stepSeconds,omitempty"`
}

// UsageAnswer is an agent's answer to a UsageQuery: the series by UID (the
// host's under its name), all at one step.
type UsageAnswer struct {
	StepSeconds int64                   `json:"stepSeconds"`
	Series      map[string][]UsagePoint `json:"series"`
	Error       string                  `json:"error,omitempty"`
}
