package balance

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Demand tells the balancer what VMs use. The live implementation
// samples the agents (LiveStats); a utilization history can answer the
// same question from its recent points (a percentile over a window)
// without touching the hosts.
type Demand interface {
	// VMDemand returns what each VM given uses now: CPU in cores busy and
	// memory in MiB, keyed by the VM's store key (project/name). A VM it
	// has no figure for is left out, and the balancer counts it at its
	// allocation. Notes say what could not be read; an error, that
	// nothing could.
	VMDemand(ctx context.Context, vms []*api.VM) (demand map[string]api.PlanUsage, notes []string, err error)
}

// Sampler reads one sample of a running VM's use from its host
// (api.VMStats: cumulative CPU seconds and resident memory).
type Sampler func(ctx context.Context, vm *api.VM) (api.VMStats, error)

// LiveStats is Demand from the stats the agents serve: the CPU a VM uses
// is the difference of the CPU seconds of two samples of one QEMU process
// over the time between them, its memory the resident memory of the last
// sample. The VMs it has not sampled before (or whose process changed:
// they restarted or migrated) are sampled twice, Window apart (one wait
// for all of them).
type LiveStats struct {
	Sample Sampler
	// Window is the time between a VM's two first samples (1 s when zero).
	Window time.Duration
	// Parallel bounds the samples taken at once (8 when zero).
	Parallel int

	mu   sync.Mutex
	prev map[string]sample
}

type sample struct {
	host string
	pid  int
	st   api.VMStats
}

var _ Demand = (*LiveStats)(nil)

// VMDemand samples each VM once (twice for one seen first).
func (l *LiveStats) VMDemand(ctx context.Context, vms []*api.VM) (map[string]api.PlanUsage, []string, error) {
	window, parallel := l.Window, l.Parallel
	if window <= 0 {
		window = time.Second
	}
	if parallel <= 0 {
		parallel = 8
	}
	total := len(vms)
	l.mu.Lock()
	if l.prev == nil {
		l.prev = map[string]sample{}
	}
	prev := make(map[string]sample, len(vms))
	live := map[string]bool{}
	for _, v := range vms {
		live[v.Key()] = true
		if p, ok := l.prev[v.Key()]; ok && p.host == v.Spec.Host && p.pid == v.Status.PID {
			prev[v.Key()] = p
		}
	}
	for k := range l.prev {
		if !live[k] {
			delete(l.prev, k) // gone, stopped or moved away from sampling
		}
	}
	l.mu.Unlock()

	var mu sync.Mutex
	out := map[string]api.PlanUsage{}
	var notes []string
	note := func(key string, err error) {
		mu.Lock()
		notes = append(notes, fmt.Sprintf("%s: sampling: %v", key, err))
		mu.Unlock()
	}
	// each samples the VMs in parallel, at most parallel at once.
	each := func(vms []*api.VM, f func(v *api.VM, st api.VMStats)) {
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for _, v := range vms {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				st, err := l.Sample(ctx, v)
				if err != nil {
					note(v.Key(), err)
					return
				}
				f(v, st)
			})
		}
		wg.Wait()
	}
	// The VMs seen first are sampled once, then all a window later.
	var fresh []*api.VM
	for _, v := range vms {
		if _, ok := prev[v.Key()]; !ok {
			fresh = append(fresh, v)
		}
	}
	if len(fresh) > 0 {
		each(fresh, func(v *api.VM, st api.VMStats) {
			mu.Lock()
			prev[v.Key()] = sample{host: v.Spec.Host, pid: v.Status.PID, st: st}
			mu.Unlock()
		})
		var again []*api.VM
		for _, v := range vms {
			if _, ok := prev[v.Key()]; ok {
				again = append(again, v)
			}
		}
		vms = again
		select {
		case <-ctx.Done():
			return nil, notes, ctx.Err()
		case <-time.After(window):
		}
	}
	each(vms, func(v *api.VM, st api.VMStats) {
		key := v.Key()
		cur := sample{host: v.Spec.Host, pid: v.Status.PID, st: st}
		l.mu.Lock()
		l.prev[key] = cur
		l.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		p := prev[key]
		dt := st.Time.Sub(p.st.Time).Seconds()
		dc := st.CPUSeconds - p.st.CPUSeconds
		if dt <= 0 || dc < 0 {
			return // another process, or a clock that went back: next time
		}
		out[key] = api.PlanUsage{CPU: dc / dt, MemoryMiB: float64(st.MemoryBytes) / (1 << 20)}
	})
	sort.Strings(notes)
	if total > 0 && len(out) == 0 && len(notes) >= total {
		return nil, notes, fmt.Errorf("no vm could be sampled")
	}
	return out, notes, nil
}
