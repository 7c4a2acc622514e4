package balancer

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/planner"
)

// standbyNote marks an empty host in power-saving mode.
const standbyNote = "empty: on standby (power saving)"

// slack absorbs rounding in capacity checks.
const slack = 1e-9

// Demand sources of a VM (Move.DemandSource).
const (
	SourceMeasured   = "measured"
	SourceAllocation = "allocation"
)

type hostState struct {
	name string
	// cpus and mem are what demand is measured against; cpuRatio and
	// memRatio the overcommit the placer admits allocations under.
	cpus, mem          float64
	cpuRatio, memRatio float64
	labels             map[string]string
	// usedCPU and usedMem are the demand of its VMs; allocCPU and
	// allocMem their allocation.
	usedCPU, usedMem   float64
	allocCPU, allocMem float64
	vms                []int
	anti               map[string]int
	// excluded says why the host takes no part; in the domain when empty.
	excluded string
}

type vmState struct {
	name string
	host int // host index, -1 when outside the domain
	// cpuFixed/memFixed is a measured demand; cpuAlloc/memAlloc an
	// allocation a host's overcommit divides (unmeasured).
	cpuFixed, memFixed float64
	cpuAlloc           float64
	vcpus, memAlloc    float64
	cpu, mem           float64 // demand on its current host
	source             string
	anti               []string
	selector           map[string]string
	// fixed says why the VM does not move; empty when it may.
	fixed string
}

type state struct {
	hosts   []hostState
	vms     []vmState
	vmIndex map[string]int
	// sums over the hosts in the domain of the CPU and memory loads and
	// their squares, and the hotspot overshoot
	n                    int
	sc, sc2, sm, sm2     float64
	over, threshold      float64
	measured             int
	hostIndex            map[string]int
	cooldown             time.Duration
	now                  time.Time
	powerSaving, standby bool
}

func newState(in Input, o Options) (*state, error) {
	if err := validate(in.Snapshot); err != nil {
		return nil, err
	}
	st := &state{vmIndex: map[string]int{}, hostIndex: map[string]int{}, threshold: o.HotspotThreshold,
		cooldown: o.Cooldown, now: o.Now, powerSaving: o.PowerSaving}
	hosts := slices.Clone(in.Hosts)
	slices.SortFunc(hosts, func(a, b planner.Host) int { return cmp.Compare(a.Name, b.Name) })
	for _, h := range hosts {
		hs := hostState{name: h.Name, cpus: h.CPUs, mem: h.MemoryMiB, cpuRatio: ratio(h.CPUOvercommit),
			memRatio: ratio(h.MemoryOvercommit), labels: h.Labels, anti: map[string]int{}}
		switch {
		case h.Provider != "":
			hs.excluded = "belongs to provider " + h.Provider + ", which decides where its VMs run"
		case h.Cordoned:
			hs.excluded = "cordoned, draining or not ready"
		case h.CPUs <= 0 || h.MemoryMiB <= 0:
			hs.excluded = "reports no CPU or memory"
		}
		st.hostIndex[h.Name] = len(st.hosts)
		st.hosts = append(st.hosts, hs)
	}
	vms := slices.Clone(in.VMs)
	slices.SortFunc(vms, func(a, b planner.VM) int { return cmp.Compare(a.Name, b.Name) })
	groups := map[string]int{}
	for _, v := range vms {
		if v.Affinity != "" {
			groups[v.Affinity]++
		}
	}
	for _, v := range vms {
		vs := vmState{name: v.Name, host: -1, vcpus: v.VCPUs, memAlloc: v.MemoryMiB,
			anti: v.AntiAffinity, selector: v.HostSelector, source: SourceAllocation,
			cpuAlloc: v.VCPUs, memFixed: v.MemoryMiB}
		if d := v.Demand; d != nil && (d.CPU > 0 || d.MemoryMiB > 0) {
			vs.source = SourceMeasured
			vs.cpuFixed, vs.cpuAlloc = d.CPU, 0
			if d.MemoryMiB > 0 {
				vs.memFixed = d.MemoryMiB
			}
			st.measured++
		}
		switch {
		case v.Provider != "":
			vs.fixed = "belongs to provider " + v.Provider
		case v.Pinned:
			vs.fixed = "pinned to its host"
		case v.Affinity != "" && groups[v.Affinity] > 1:
			vs.fixed = "shares affinity group " + v.Affinity + " with other VMs"
		case in.Fixed[v.Name] != "":
			vs.fixed = in.Fixed[v.Name]
		}
		if at, ok := in.Moved[v.Name]; ok && vs.fixed == "" && o.Cooldown > 0 && o.Now.Sub(at) < o.Cooldown {
			vs.fixed = "moved " + o.Now.Sub(at).Round(time.Second).String() + " ago, within the cooldown"
		}
		if hi, ok := st.hostIndex[v.Host]; ok {
			vs.host = hi
		}
		st.vmIndex[v.Name] = len(st.vms)
		st.vms = append(st.vms, vs)
	}
	// Every VM counts on its host, in the domain or not (an excluded
	// host's load is reported too).
	for i := range st.vms {
		v := &st.vms[i]
		if v.host < 0 {
			continue
		}
		h := &st.hosts[v.host]
		v.cpu, v.mem = v.on(h)
		h.usedCPU += v.cpu
		h.usedMem += v.mem
		h.allocCPU += v.vcpus
		h.allocMem += v.memAlloc
		h.vms = append(h.vms, i)
		for _, g := range v.anti {
			h.anti[g]++
		}
	}
	if o.PowerSaving {
		for i := range st.hosts {
			if h := &st.hosts[i]; h.excluded == "" && len(h.vms) == 0 {
				h.excluded = standbyNote
			}
		}
	}
	st.sum()
	return st, nil
}

func ratio(r float64) float64 {
	if r <= 0 {
		return 1
	}
	return r
}

// validate checks what the balancer relies on: unique names, finite
// figures.
func validate(s planner.Snapshot) error {
	seen := map[string]bool{}
	for i, h := range s.Hosts {
		if h.Name == "" || seen[h.Name] {
			return &planner.InputError{Field: fmt.Sprintf("hosts[%d].name", i), Message: fmt.Sprintf("empty or repeated host name %q", h.Name)}
		}
		seen[h.Name] = true
		for _, f := range []float64{h.CPUs, h.MemoryMiB, h.CPUOvercommit, h.MemoryOvercommit} {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return &planner.InputError{Field: fmt.Sprintf("hosts[%d]", i), Message: fmt.Sprintf("host %q: sizes must be finite numbers >= 0", h.Name)}
			}
		}
	}
	seen = map[string]bool{}
	for i, v := range s.VMs {
		if v.Name == "" || seen[v.Name] {
			return &planner.InputError{Field: fmt.Sprintf("vms[%d].name", i), Message: fmt.Sprintf("empty or repeated vm name %q", v.Name)}
		}
		seen[v.Name] = true
		fs := []float64{v.VCPUs, v.MemoryMiB}
		if v.Demand != nil {
			fs = append(fs, v.Demand.CPU, v.Demand.MemoryMiB)
		}
		for _, f := range fs {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return &planner.InputError{Field: fmt.Sprintf("vms[%d]", i), Message: fmt.Sprintf("vm %q: sizes and demand must be finite numbers >= 0", v.Name)}
			}
		}
	}
	return nil
}

// on is the VM's demand on host h.
func (v *vmState) on(h *hostState) (float64, float64) {
	return v.cpuFixed + v.cpuAlloc/h.cpuRatio, v.memFixed
}

func (h *hostState) loadOf(cpu, mem float64) Load {
	return Load{CPU: cpu / h.cpus, Memory: mem / h.mem}
}

func (st *state) load(hi int) Load {
	h := &st.hosts[hi]
	if h.cpus <= 0 || h.mem <= 0 {
		return Load{}
	}
	return h.loadOf(h.usedCPU, h.usedMem)
}

func (st *state) overOf(l Load) float64 {
	return max(0, l.CPU-st.threshold) + max(0, l.Memory-st.threshold)
}

// sum recomputes the domain's sums.
func (st *state) sum() {
	st.n, st.sc, st.sc2, st.sm, st.sm2, st.over = 0, 0, 0, 0, 0, 0
	for i := range st.hosts {
		if st.hosts[i].excluded != "" {
			continue
		}
		l := st.load(i)
		st.n++
		st.sc += l.CPU
		st.sc2 += l.CPU * l.CPU
		st.sm += l.Memory
		st.sm2 += l.Memory * l.Memory
		st.over += st.overOf(l)
	}
}

// imbalance is the standard deviation of the hosts' load, CPU and
// memory combined: sqrt(var(cpu) + var(memory)).
func (st *state) imbalance() float64 {
	if st.n == 0 {
		return 0
	}
	n := float64(st.n)
	v := st.sc2/n - (st.sc/n)*(st.sc/n) + st.sm2/n - (st.sm/n)*(st.sm/n)
	return math.Sqrt(max(v, 0))
}

// costOf is the cost of the given sums: the squared deviations of the
// loads from their mean (n times the variance, so that one move's gain
// does not shrink as the cluster grows), and the hotspot overshoot.
func (st *state) costOf(sc, sc2, sm, sm2, over float64) float64 {
	if st.n == 0 {
		return 0
	}
	n := float64(st.n)
	return (sc2 - sc*sc/n) + (sm2 - sm*sm/n) + hotspotWeight*over
}

func (st *state) cost() float64 { return st.costOf(st.sc, st.sc2, st.sm, st.sm2, st.over) }

// costAfter is the cost once VM v moved from s to t (both in the domain).
func (st *state) costAfter(v, s, t int) float64 {
	sc, sc2, sm, sm2, over := st.sc, st.sc2, st.sm, st.sm2, st.over
	vm := &st.vms[v]
	hs, ht := &st.hosts[s], &st.hosts[t]
	tc, tm := vm.on(ht)
	for _, d := range []struct {
		h        *hostState
		old, new Load
	}{
		{hs, hs.loadOf(hs.usedCPU, hs.usedMem), hs.loadOf(hs.usedCPU-vm.cpu, hs.usedMem-vm.mem)},
		{ht, ht.loadOf(ht.usedCPU, ht.usedMem), ht.loadOf(ht.usedCPU+tc, ht.usedMem+tm)},
	} {
		sc += d.new.CPU - d.old.CPU
		sc2 += d.new.CPU*d.new.CPU - d.old.CPU*d.old.CPU
		sm += d.new.Memory - d.old.Memory
		sm2 += d.new.Memory*d.new.Memory - d.old.Memory*d.old.Memory
		over += st.overOf(d.new) - st.overOf(d.old)
	}
	return st.costOf(sc, sc2, sm, sm2, over)
}

// move moves VM v to host t in the state.
func (st *state) move(v, t int) {
	vm := &st.vms[v]
	s := vm.host
	hs, ht := &st.hosts[s], &st.hosts[t]
	inS, inT := hs.excluded == "", ht.excluded == ""
	st.account(s, inS, -1)
	st.account(t, inT, -1)
	hs.usedCPU -= vm.cpu
	hs.usedMem -= vm.mem
	hs.allocCPU -= vm.vcpus
	hs.allocMem -= vm.memAlloc
	hs.vms = slices.DeleteFunc(hs.vms, func(i int) bool { return i == v })
	for _, g := range vm.anti {
		hs.anti[g]--
	}
	vm.cpu, vm.mem = vm.on(ht)
	vm.host = t
	ht.usedCPU += vm.cpu
	ht.usedMem += vm.mem
	ht.allocCPU += vm.vcpus
	ht.allocMem += vm.memAlloc
	ht.vms = append(ht.vms, v)
	slices.Sort(ht.vms)
	for _, g := range vm.anti {
		ht.anti[g]++
	}
	st.account(s, inS, 1)
	st.account(t, inT, 1)
}

// account adds (sign 1) or removes (-1) a domain host's load from the sums.
func (st *state) account(hi int, in bool, sign float64) {
	if !in {
		return
	}
	l := st.load(hi)
	st.sc += sign * l.CPU
	st.sc2 += sign * l.CPU * l.CPU
	st.sm += sign * l.Memory
	st.sm2 += sign * l.Memory * l.Memory
	st.over += sign * st.overOf(l)
}

func (st *state) hot(hi int) bool {
	l := st.load(hi)
	return l.CPU > st.threshold+slack || l.Memory > st.threshold+slack
}

// hotspots are the domain's hosts over the threshold, by name.
func (st *state) hotspots() []int {
	var out []int
	for i := range st.hosts {
		if st.hosts[i].excluded == "" && st.hot(i) {
			out = append(out, i)
		}
	}
	return out
}

func (st *state) score(hi int) float64 {
	l := st.load(hi)
	return max(l.CPU, l.Memory)
}

// byLoad returns up to k domain hosts, the most loaded first (desc) or
// the least loaded first.
func (st *state) byLoad(desc bool, k int) []int {
	var idx []int
	for i := range st.hosts {
		if st.hosts[i].excluded == "" {
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(a, b int) int {
		c := cmp.Compare(st.score(a), st.score(b))
		if desc {
			c = -c
		}
		if c != 0 {
			return c
		}
		return cmp.Compare(st.hosts[a].name, st.hosts[b].name)
	})
	return idx[:min(k, len(idx))]
}

// movable says whether a VM may move at all.
func (st *state) movable(v int) bool {
	vm := &st.vms[v]
	return vm.fixed == "" && vm.host >= 0 && st.hosts[vm.host].excluded == ""
}

// fits says whether VM v may go to host t: its labels, the VMs on it,
// the room the placer admits (allocation under overcommit), and its
// demand without passing the load limit.
func (st *state) fits(v, t int, limit float64) bool {
	vm, h := &st.vms[v], &st.hosts[t]
	if h.excluded != "" || vm.host == t {
		return false
	}
	for k, want := range vm.selector {
		if h.labels[k] != want {
			return false
		}
	}
	for _, g := range vm.anti {
		if h.anti[g] > 0 {
			return false
		}
	}
	if h.allocCPU+vm.vcpus > h.cpus*h.cpuRatio+slack || h.allocMem+vm.memAlloc > h.mem*h.memRatio+slack {
		return false
	}
	c, m := vm.on(h)
	l := h.loadOf(h.usedCPU+c, h.usedMem+m)
	return l.CPU <= limit+slack && l.Memory <= limit+slack
}

// report is every host of the snapshot with its load, by name.
func (st *state) report() []api.BalanceHost {
	out := make([]api.BalanceHost, 0, len(st.hosts))
	for i, h := range st.hosts {
		out = append(out, api.BalanceHost{Name: h.name, Load: roundLoad(st.load(i)), VMs: len(h.vms), Excluded: h.excluded})
	}
	return out
}
