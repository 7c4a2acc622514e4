package planner

import (
	"cmp"
	"math"
	"slices"
)

// Consolidate plans the estate onto the fewest hosts at the target
// utilization: first-fit-decreasing by dominant resource (and, for up to
// 20,000 VMs per provider, three other orders, keeping the best), each
// followed by a pass that empties lightly loaded hosts, then passes that
// keep VMs where they run when that costs no host.
func Consolidate(snap Snapshot, opts Options) (*Plan, error) {
	return consolidate(snap, opts, 1)
}

func consolidate(snap Snapshot, opts Options, grow float64) (*Plan, error) {
	opts, err := withDefaults(opts, DefaultTargetUtilization)
	if err != nil {
		return nil, err
	}
	if err := snap.validate(); err != nil {
		return nil, err
	}
	hosts := slices.Clone(snap.Hosts)
	slices.SortFunc(hosts, func(a, b Host) int { return cmp.Compare(a.Name, b.Name) })
	vms := slices.Clone(snap.VMs)
	slices.SortFunc(vms, func(a, b VM) int { return cmp.Compare(a.Name, b.Name) })
	hostIdx := make(map[string]int, len(hosts))
	for i := range hosts {
		hostIdx[hosts[i].Name] = i
	}

	p := &packer{hosts: make([]hostState, len(hosts))}
	for i := range hosts {
		h := &hosts[i]
		p.hosts[i] = hostState{
			h: h, capCPU: h.CPUs * opts.TargetUtilization, capMem: h.MemoryMiB * opts.TargetUtilization,
			cpuRatio: ratio(h.CPUOvercommit), memRatio: ratio(h.MemoryOvercommit),
		}
	}
	sizes := make([]size, len(vms))
	vmsOn := make([]int, len(hosts))
	for i := range vms {
		sizes[i] = sizeOf(&vms[i], opts.Percentile).scaled(grow)
		if h, ok := hostIdx[vms[i].Host]; ok {
			vmsOn[h]++
		}
	}
	items, unplaced := buildItems(vms, sizes, hostIdx)
	p.items = items
	p.where = make([]int, len(items))
	for i := range p.where {
		p.where[i] = -1
	}
	byKey := p.buildPartitions(opts.CrossProvider, vmsOn)

	perPart := make([][]int, len(p.parts))
	var failed []int
	for ii := range p.items {
		it := &p.items[ii]
		pi, ok := byKey[partitionKey(it.provider, opts.CrossProvider)]
		if !ok {
			failed = append(failed, ii)
			continue
		}
		perPart[pi] = append(perPart[pi], ii)
	}
	lower := 0
	for pi, pt := range p.parts {
		failed = append(failed, p.packBest(pt, perPart[pi])...)
		p.relabel(pt, vms, hostIdx)
		p.stayHome(pt, perPart[pi])
		lower += p.lowerBound(pt, perPart[pi])
	}
	slices.Sort(failed)
	for _, ii := range failed {
		for _, vi := range p.items[ii].vms {
			unplaced = append(unplaced, Unplaced{VM: vms[vi].Name, Reason: p.whyUnplaced(ii, byKey, opts.CrossProvider)})
		}
	}
	slices.SortFunc(unplaced, func(a, b Unplaced) int { return cmp.Compare(a.VM, b.VM) })

	plan := &Plan{Options: opts, LowerBound: lower, Unplaced: unplaced, Placement: []Assignment{}, Moves: []Move{}}
	vmWhere := make([]int, len(vms))
	for i := range vmWhere {
		vmWhere[i] = -1
	}
	for ii, hi := range p.where {
		for _, vi := range p.items[ii].vms {
			vmWhere[vi] = hi
		}
	}
	before := make([]Usage, len(hosts))
	after := make([]Usage, len(hosts))
	vmsAfter := make([]int, len(hosts))
	for vi := range vms {
		z := sizes[vi]
		if cur, ok := hostIdx[vms[vi].Host]; ok {
			c, m := z.on(p.hosts[cur].cpuRatio, p.hosts[cur].memRatio)
			before[cur].CPU += c
			before[cur].MemoryMiB += m
		}
		hi := vmWhere[vi]
		if hi < 0 {
			continue
		}
		c, m := z.on(p.hosts[hi].cpuRatio, p.hosts[hi].memRatio)
		after[hi].CPU += c
		after[hi].MemoryMiB += m
		vmsAfter[hi]++
		plan.Placement = append(plan.Placement, Assignment{VM: vms[vi].Name, Host: hosts[hi].Name, Size: Usage{CPU: round(c), MemoryMiB: round(m)}, Source: z.source})
		if vms[vi].Host != hosts[hi].Name {
			plan.Moves = append(plan.Moves, Move{VM: vms[vi].Name, From: vms[vi].Host, To: hosts[hi].Name})
		}
	}
	for hi := range hosts {
		h, hs := &hosts[hi], &p.hosts[hi]
		plan.Hosts = append(plan.Hosts, HostPlan{
			Name: h.Name, Cluster: h.Cluster, Provider: h.Provider, Cordoned: h.Cordoned,
			Capacity: Usage{CPU: round(hs.capCPU), MemoryMiB: round(hs.capMem)},
			Before:   roundU(before[hi]), After: roundU(after[hi]),
			VMsBefore: vmsOn[hi], VMsAfter: vmsAfter[hi],
		})
		if vmsOn[hi] > 0 {
			plan.HostsBefore++
		}
		if vmsAfter[hi] > 0 {
			plan.HostsAfter++
			continue
		}
		if h.Cordoned {
			continue
		}
		plan.Savings.Hosts++
		plan.Savings.CPUs += h.CPUs
		plan.Savings.MemoryMiB += h.MemoryMiB
		if vmsOn[hi] > 0 {
			plan.Savings.Freed = append(plan.Savings.Freed, h.Name)
		}
	}
	return plan, nil
}

func ratio(r float64) float64 {
	if r <= 0 {
		return 1
	}
	return r
}

// round keeps figures readable and stable in JSON.
func round(v float64) float64 { return math.Round(v*1000) / 1000 }

func roundU(u Usage) Usage { return Usage{CPU: round(u.CPU), MemoryMiB: round(u.MemoryMiB)} }

// whyUnplaced says why no host took the item.
func (p *packer) whyUnplaced(ii int, byKey map[string]int, cross bool) string {
	it := &p.items[ii]
	if it.provider == "\x00mixed" && !cross {
		return "its " + it.name + " spans providers"
	}
	if it.pin >= 0 {
		hs := &p.hosts[it.pin]
		switch {
		case hs.h.Cordoned:
			return "pinned to host " + quote(hs.h.Name) + ", which is cordoned"
		case !hs.allows(it):
			return "pinned to host " + quote(hs.h.Name) + ", whose labels or VMs exclude it"
		default:
			return "pinned to host " + quote(hs.h.Name) + ", which has no room for it at the target utilization"
		}
	}
	if _, ok := byKey[partitionKey(it.provider, cross)]; !ok {
		if it.provider == "" {
			return "no host outside a provider can take VMs"
		}
		return "no host of provider " + quote(it.provider) + " can take VMs"
	}
	pt := p.parts[byKey[partitionKey(it.provider, cross)]]
	anyRoom := false
	for _, hi := range pt.order {
		hs := &p.hosts[hi]
		c, m := hs.need(it)
		if c <= hs.capCPU+slack && m <= hs.capMem+slack {
			anyRoom = true
			break
		}
	}
	if !anyRoom {
		return "larger than any host at the target utilization"
	}
	return "no host has room for it within its constraints (capacity, anti-affinity, host selector)"
}

// lowerBound is the fewest hosts of the partition whose capacity covers
// its items' total demand, each resource alone.
func (p *packer) lowerBound(pt *partition, itemIdx []int) int {
	var cpu, mem float64
	for _, ii := range itemIdx {
		c, m := p.items[ii].size.on(pt.maxCPUR, pt.maxMemR)
		cpu += c
		mem += m
	}
	count := func(total float64, capOf func(*hostState) float64) int {
		caps := make([]float64, 0, len(pt.order))
		for _, hi := range pt.order {
			caps = append(caps, capOf(&p.hosts[hi]))
		}
		slices.SortFunc(caps, func(a, b float64) int { return cmp.Compare(b, a) })
		n, sum := 0, 0.0
		for _, c := range caps {
			if sum >= total-slack {
				break
			}
			sum += c
			n++
		}
		return n
	}
	return max(count(cpu, func(h *hostState) float64 { return h.capCPU }),
		count(mem, func(h *hostState) float64 { return h.capMem }))
}
