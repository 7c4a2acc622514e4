package planner

import (
	"fmt"
	"slices"
)

// maxAddedHosts bounds a change so a typo cannot ask for a billion hosts.
const maxAddedHosts = 100000

// WhatIf plans the estate after the change.
func WhatIf(snap Snapshot, change Change, opts Options) (*WhatIfResult, error) {
	if !finite(change.GrowPercent) || change.GrowPercent <= -100 || change.GrowPercent > 10000 {
		return nil, badInput("growPercent", "must be in (-100, 10000], got %v", change.GrowPercent)
	}
	now, err := Consolidate(snap, opts)
	if err != nil {
		return nil, err
	}
	changed, added, err := apply(snap, change)
	if err != nil {
		return nil, err
	}
	after, err := consolidate(changed, opts, 1+change.GrowPercent/100)
	if err != nil {
		return nil, err
	}
	res := &WhatIfResult{Change: change, Added: added, Fits: len(after.Unplaced) == 0, Now: now, After: after}
	for _, h := range after.Hosts {
		if h.Cordoned {
			continue
		}
		res.Headroom.CPU += h.Capacity.CPU - h.After.CPU
		res.Headroom.MemoryMiB += h.Capacity.MemoryMiB - h.After.MemoryMiB
	}
	res.Headroom = roundU(res.Headroom)
	return res, nil
}

// apply returns a copy of snap with the change's hosts added and removed.
func apply(snap Snapshot, change Change) (Snapshot, []string, error) {
	out := Snapshot{VMs: snap.VMs}
	names := make(map[string]bool, len(snap.Hosts))
	for _, h := range snap.Hosts {
		names[h.Name] = true
	}
	for i, name := range change.RemoveHosts {
		if !names[name] {
			return out, nil, badInput(fmt.Sprintf("removeHosts[%d]", i), "host %q is not in the estate", name)
		}
	}
	for _, h := range snap.Hosts {
		if !slices.Contains(change.RemoveHosts, h.Name) {
			out.Hosts = append(out.Hosts, h)
		}
	}
	total := 0
	var added []string
	n := 0
	for i, s := range change.AddHosts {
		f := fmt.Sprintf("addHosts[%d]", i)
		if s.Count <= 0 {
			return out, nil, badInput(f+".count", "must be at least 1, got %d", s.Count)
		}
		// Checked before adding, so a huge count cannot wrap the sum.
		if s.Count > maxAddedHosts-total {
			return out, nil, badInput(f+".count", "adds more than %d hosts in all", maxAddedHosts)
		}
		total += s.Count
		if !finite(s.CPUs) || s.CPUs <= 0 || !finite(s.MemoryMiB) || s.MemoryMiB <= 0 {
			return out, nil, badInput(f, "cpus and memoryMiB must be finite numbers > 0")
		}
		for range s.Count {
			var name string
			for {
				n++
				name = fmt.Sprintf("new-%d", n)
				if !names[name] {
					break
				}
			}
			names[name] = true
			added = append(added, name)
			out.Hosts = append(out.Hosts, Host{
				Name: name, Cluster: s.Cluster, Provider: s.Provider, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB,
				CPUOvercommit: s.CPUOvercommit, MemoryOvercommit: s.MemoryOvercommit, Labels: s.Labels,
			})
		}
	}
	return out, added, nil
}
