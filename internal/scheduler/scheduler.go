// Package scheduler places VMs on hosts. It is pure logic over a read-only
// Snapshot of the hosts: no I/O, no clocks, no randomness, so the same
// snapshot and request always give the same answer.
package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Defaults applied by Config for fields left at zero.
const (
	DefaultCPUOvercommit     = 4.0
	DefaultMemoryOvercommit  = 1.0
	DefaultReservedMemoryMiB = 256
)

// Snapshot is the scheduler's read-only view of the cluster.
type Snapshot struct {
	Hosts []HostInfo
}

// HostInfo is one host as the scheduler sees it.
type HostInfo struct {
	Name string
	// Ready is false when the host's heartbeat was lost.
	Ready bool
	// Unschedulable keeps new VMs off the host, pinned ones included.
	Unschedulable bool
	// CPUs and MemoryMiB are the host's physical resources.
	CPUs      int
	MemoryMiB int64
	// AllocatedVCPUs and AllocatedMemoryMiB sum the VMs already placed on
	// the host, running or not.
	AllocatedVCPUs     int
	AllocatedMemoryMiB int64
	Labels             map[string]string
}

// Request is the size of the VM to place.
type Request struct {
	VCPUs     int
	MemoryMiB int64
	// Host pins the VM to the named host; empty lets Place choose.
	Host string
	// Choices, when above 1, spreads the choice over that many of the
	// best hosts: Seed picks one of them. Placements decided at the same
	// time by several servers, from the same state, then seldom choose
	// the same host. 0 or 1 chooses the best.
	Choices int
	Seed    uint64
}

// Config tunes placement. The zero value means the defaults.
type Config struct {
	// CPUOvercommit is how many vCPUs a host offers per physical CPU
	// (zero or less: DefaultCPUOvercommit).
	CPUOvercommit float64
	// MemoryOvercommit multiplies the memory a host offers to VMs
	// (zero or less: DefaultMemoryOvercommit).
	MemoryOvercommit float64
	// ReservedMemoryMiB is kept for the host itself and never offered to
	// VMs (zero: DefaultReservedMemoryMiB; negative: nothing reserved).
	ReservedMemoryMiB int64
	// SamplePercent is the share of a large fleet's hosts a placement
	// looks for room on before it chooses among those that have it (see
	// SampleSize). Zero: a share that shrinks as the fleet grows; 100 or
	// more: every host.
	SamplePercent int
}

// withDefaults returns cfg with zero fields replaced by the defaults. It is
// idempotent: a negative reservation stays negative and counts as none.
func (cfg Config) withDefaults() Config {
	if cfg.CPUOvercommit <= 0 {
		cfg.CPUOvercommit = DefaultCPUOvercommit
	}
	if cfg.MemoryOvercommit <= 0 {
		cfg.MemoryOvercommit = DefaultMemoryOvercommit
	}
	if cfg.ReservedMemoryMiB == 0 {
		cfg.ReservedMemoryMiB = DefaultReservedMemoryMiB
	}
	return cfg
}

// Capacity is what a host offers to VMs under a Config, and what of it is
// still free.
type Capacity struct {
	VCPUs         int
	MemoryMiB     int64
	FreeVCPUs     int
	FreeMemoryMiB int64
}

// HostCapacity computes a host's capacity: its CPUs times the CPU
// overcommit, and its memory minus the reservation times the memory
// overcommit, both rounded down. Free amounts may be negative when a host
// is over-allocated (after a change of configuration).
func HostCapacity(cfg Config, h HostInfo) Capacity {
	cfg = cfg.withDefaults()
	vcpus := int(floor(float64(h.CPUs) * cfg.CPUOvercommit))
	reserved := max(cfg.ReservedMemoryMiB, 0)
	mem := int64(floor(float64(max(h.MemoryMiB-reserved, 0)) * cfg.MemoryOvercommit))
	return Capacity{
		VCPUs:         vcpus,
		MemoryMiB:     mem,
		FreeVCPUs:     vcpus - h.AllocatedVCPUs,
		FreeMemoryMiB: mem - h.AllocatedMemoryMiB,
	}
}

// floor rounds down, forgiving the float error of products such as
// 100*0.29 (28.999999999999996) that are meant to be whole.
func floor(x float64) float64 {
	return math.Floor(x + 1e-9)
}

// Place chooses the host for a VM of the requested size.
//
// With a pin, the pinned host is checked and returned when it fits; an
// unknown pin is an *UnknownHostError. Otherwise Place picks, among the
// ready, schedulable hosts the VM fits on, the one with the most free
// memory (spreading VMs), breaking ties by name. When nothing fits, the
// error is a *NoRoomError giving each host's reason.
//
// A VM fits on a host when it has no more vCPUs than the host has physical
// CPUs, and the host's free overcommitted vCPUs and memory cover it.
func Place(cfg Config, snap Snapshot, req Request) (string, error) {
	if req.VCPUs < 1 {
		return "", fmt.Errorf("placing vm: vcpus must be at least 1, got %d", req.VCPUs)
	}
	if req.MemoryMiB < 1 {
		return "", fmt.Errorf("placing vm: memory must be at least 1 MiB, got %d", req.MemoryMiB)
	}
	cfg = cfg.withDefaults()

	if req.Host != "" {
		i := slices.IndexFunc(snap.Hosts, func(h HostInfo) bool { return h.Name == req.Host })
		if i < 0 {
			return "", &UnknownHostError{Host: req.Host}
		}
		if reason := refusal(cfg, snap.Hosts[i], req); reason != "" {
			return "", &NoRoomError{Request: req, Reasons: []HostReason{{Host: req.Host, Reason: reason}}}
		}
		return req.Host, nil
	}

	type fit struct {
		name string
		free int64
	}
	var (
		fits    []fit
		reasons []HostReason
	)
	for _, h := range snap.Hosts {
		if reason := refusal(cfg, h, req); reason != "" {
			reasons = append(reasons, HostReason{Host: h.Name, Reason: reason})
			continue
		}
		fits = append(fits, fit{h.Name, HostCapacity(cfg, h).FreeMemoryMiB})
	}
	if len(fits) == 0 {
		slices.SortStableFunc(reasons, func(a, b HostReason) int { return cmp.Compare(a.Host, b.Host) })
		return "", &NoRoomError{Request: req, Reasons: reasons}
	}
	// The most free memory first (spreading VMs), ties by name.
	better := func(a, b fit) int {
		if c := cmp.Compare(b.free, a.free); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	}
	if req.Choices <= 1 {
		return slices.MinFunc(fits, better).name, nil
	}
	// The best Choices hosts, in order, kept as the hosts go by: a fleet
	// of thousands is not sorted for the few it chooses among.
	k := min(req.Choices, len(fits))
	best := make([]fit, 0, k)
	for _, f := range fits {
		if len(best) == k && better(f, best[k-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, f, better)
		if len(best) < k {
			best = append(best, fit{})
		}
		copy(best[i+1:], best[i:len(best)-1])
		best[i] = f
	}
	return best[req.Seed%uint64(k)].name, nil
}

// Refusal says why the VM cannot go on h, or "" when it fits.
func Refusal(cfg Config, h HostInfo, req Request) string {
	return refusal(cfg.withDefaults(), h, req)
}

// refusal says why the VM cannot go on h, or "" when it fits.
func refusal(cfg Config, h HostInfo, req Request) string {
	switch {
	case !h.Ready:
		return "not ready"
	case h.Unschedulable:
		return "unschedulable"
	case req.VCPUs > h.CPUs:
		return fmt.Sprintf("needs %d vcpus, host has %d cpus", req.VCPUs, h.CPUs)
	}
	c := HostCapacity(cfg, h)
	if req.VCPUs > c.FreeVCPUs {
		return fmt.Sprintf("needs %d vcpus, %d free", req.VCPUs, max(c.FreeVCPUs, 0))
	}
	if req.MemoryMiB > c.FreeMemoryMiB {
		return fmt.Sprintf("needs %d MiB memory, %d MiB free", req.MemoryMiB, max(c.FreeMemoryMiB, 0))
	}
	return ""
}

// Sampling: a placement on a large fleet stops looking once it found
// room on enough hosts, as Kubernetes' scheduler does: scoring every one
// of 10,000 hosts for each create costs more than the spread it buys.
const (
	// MinSample is the fewest hosts that fit a placement looks for: a
	// fleet this size or smaller is always looked at whole.
	MinSample = 100
	// minSamplePercent is the smallest share of the adaptive default.
	minSamplePercent = 5
)

// SampleSize is how many hosts with room a placement over a fleet of n
// hosts looks for before it chooses: all of a fleet of MinSample hosts
// or fewer; otherwise the share of cfg.SamplePercent, by default 50 %
// less one point per 125 hosts, never below 5 % (Kubernetes' adaptive
// percentageOfNodesToScore), and never below MinSample hosts.
func SampleSize(cfg Config, n int) int {
	if n <= MinSample || cfg.SamplePercent >= 100 {
		return n
	}
	pct := cfg.SamplePercent
	if pct <= 0 {
		pct = max(50-n/125, minSamplePercent)
	}
	return max(n*pct/100, MinSample)
}

// MaxVCPUs is the most vCPUs a single VM could ever get: the largest
// physical CPU count of any host, whatever its state or allocation. A
// request above it can never be placed; one below it may still find no
// room. It is 0 when there are no hosts.
func MaxVCPUs(snap Snapshot) int {
	n := 0
	for _, h := range snap.Hosts {
		n = max(n, h.CPUs)
	}
	return n
}

// MaxMemoryMiB is the largest physical memory of any host, whatever its
// state or allocation: no VM larger than it can ever be placed. The
// reservation and overcommit of a Config may make the real bound lower.
// It is 0 when there are no hosts.
func MaxMemoryMiB(snap Snapshot) int64 {
	var n int64
	for _, h := range snap.Hosts {
		n = max(n, h.MemoryMiB)
	}
	return n
}
