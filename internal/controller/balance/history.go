package balance

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// HistoryReader reads the mean of a VM's utilization history over the
// last window on its current host: CPU in cores, memory in bytes, and how
// many points the mean is of (0: none).
type HistoryReader func(ctx context.Context, vm string, window time.Duration) (cpu float64, memoryBytes int64, points int, err error)

// Recent is demand from the hosts' utilization history: each VM at its
// mean over the last Window, so that a balancing cycle follows what a VM
// used for minutes, not one instant (a spike between two samples moves
// nothing). A VM with no history there yet (new, just moved, or a host
// keeping none) is asked of Fallback.
type Recent struct {
	Read     HistoryReader
	Window   time.Duration // 15 minutes when zero
	Fallback Demand
	Parallel int // reads at once (8 when zero)
}

var _ Demand = (*Recent)(nil)

// VMDemand reads each VM's history, then asks the fallback for the VMs
// it had none of.
func (r *Recent) VMDemand(ctx context.Context, vms []*api.VM) (map[string]api.PlanUsage, []string, error) {
	window, parallel := r.Window, r.Parallel
	if window <= 0 {
		window = 15 * time.Minute
	}
	if parallel <= 0 {
		parallel = 8
	}
	var mu sync.Mutex
	out := map[string]api.PlanUsage{}
	var notes []string
	var rest []*api.VM
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, v := range vms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cpu, mem, points, err := r.Read(ctx, v.Key(), window)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				notes = append(notes, fmt.Sprintf("%s: history: %v", v.Key(), err))
				rest = append(rest, v)
			case points == 0:
				rest = append(rest, v)
			default:
				out[v.Key()] = api.PlanUsage{CPU: cpu, MemoryMiB: float64(mem) / (1 << 20)}
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
