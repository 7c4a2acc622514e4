package balance

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// HistoryReader reads, in one request to a host, the means of the
// utilization history over the last window of VMs placed on it, keyed by
// the VMs' store keys: CPU in cores, memory in bytes, and how many points
// each mean is of (a VM left out, or with 0 points, has none).
type HistoryReader func(ctx context.Context, host string, vms []*api.VM, window time.Duration) (map[string]HistoryMean, error)

// HistoryMean is a VM's mean use over a window of its history.
type HistoryMean struct {
	CPU         float64
	MemoryBytes int64
	Points      int
}

// Recent is demand from the hosts' utilization history: each VM at its
// mean over the last Window, so that a balancing cycle follows what a VM
// used for minutes, not one instant (a spike between two samples moves
// nothing). Each host is asked once for all its VMs. A VM with no history
// there yet (new, just moved, or a host keeping none) is asked of
// Fallback.
type Recent struct {
	Read     HistoryReader
	Window   time.Duration // 15 minutes when zero
	Fallback Demand
	Parallel int // hosts read at once (8 when zero)
}

var _ Demand = (*Recent)(nil)

// VMDemand reads the history of each host's VMs, then asks the fallback
// for the VMs it had none of.
func (r *Recent) VMDemand(ctx context.Context, vms []*api.VM) (map[string]api.PlanUsage, []string, error) {
	window, parallel := r.Window, r.Parallel
	if window <= 0 {
		window = 15 * time.Minute
	}
	if parallel <= 0 {
		parallel = 8
	}
	byHost := map[string][]*api.VM{}
	var hosts []string
	for _, v := range vms {
		if byHost[v.Spec.Host] == nil {
			hosts = append(hosts, v.Spec.Host)
		}
		byHost[v.Spec.Host] = append(byHost[v.Spec.Host], v)
	}
	sort.Strings(hosts)
	var mu sync.Mutex
	out := map[string]api.PlanUsage{}
	var notes []string
	var rest []*api.VM
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, host := range hosts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			means, err := r.Read(ctx, host, byHost[host], window)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				notes = append(notes, fmt.Sprintf("host %s: history: %v", host, err))
				rest = append(rest, byHost[host]...)
				return
			}
			for _, v := range byHost[host] {
				m, ok := means[v.Key()]
				if !ok || m.Points == 0 {
					rest = append(rest, v)
					continue
				}
				out[v.Key()] = api.PlanUsage{CPU: m.CPU, MemoryMiB: float64(m.MemoryBytes) / (1 << 20)}
			}
		})
	}
	wg.Wait()
	if len(rest) > 0 && r.Fallback != nil {
		sort.Slice(rest, func(i, j int) bool { return rest[i].Key() < rest[j].Key() })
		more, moreNotes, err := r.Fallback.VMDemand(ctx, rest)
		if err != nil && len(out) == 0 {
			return nil, append(notes, moreNotes...), err
		}
		for k, u := range more {
			out[k] = u
		}
		notes = append(notes, moreNotes...)
	}
	sort.Strings(notes)
	return out, notes, nil
}
