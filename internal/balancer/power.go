package balancer

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/polyvisor/polyvisor/api"
)

// powerMoves empties one lightly loaded host, when every VM on it can go
// elsewhere within the budget without filling its target past
// powerFillFactor of the hotspot threshold. The emptied host is then on
// standby: no later move of the cycle (or of the cycles after, while it
// stays empty) lands on it.
func (st *state) powerMoves(budget int, o Options) []Move {
	limit := o.HotspotThreshold * powerFillFactor
	// Hysteresis: no host is emptied while another is a hotspot, nor when
	// the active hosts left would be loaded past powerMeanLoad on average
	// (demand moves; hosts emptied then would soon be woken again).
	if len(st.hotspots()) > 0 {
		return nil
	}
	var light []int
	for i := range st.hosts {
		if h := &st.hosts[i]; h.excluded == "" && len(h.vms) > 0 && st.score(i) < PowerLowLoad {
			light = append(light, i)
		}
	}
	if st.n-len(light) < 1 && len(light) > 0 {
		light = light[:len(light)-1] // one host stays on
	}
	slices.SortFunc(light, func(a, b int) int {
		if c := cmp.Compare(st.score(a), st.score(b)); c != 0 {
			return c
		}
		return cmp.Compare(st.hosts[a].name, st.hosts[b].name)
	})
	for _, s := range light {
		if !st.roomWithout(s) {
			continue
		}
		if moves, ok := st.evacuate(s, budget, limit); ok {
			return moves
		}
	}
	return nil
}

// evacuate moves every VM off host s, largest first, each to the least
// loaded host that holds it under limit (so that the balancing of later
// cycles has nothing to undo); it undoes what it did and reports false
// when one VM finds no room or they are more than the budget.
func (st *state) evacuate(s, budget int, limit float64) ([]Move, bool) {
	h := &st.hosts[s]
	if len(h.vms) > budget {
		return nil, false
	}
	vms := slices.Clone(h.vms)
	for _, v := range vms {
		if !st.movable(v) {
			return nil, false
		}
	}
	slices.SortFunc(vms, func(a, b int) int {
		if c := cmp.Compare(max(st.vms[b].cpu/h.cpus, st.vms[b].mem/h.mem), max(st.vms[a].cpu/h.cpus, st.vms[a].mem/h.mem)); c != 0 {
			return c
		}
		return cmp.Compare(st.vms[a].name, st.vms[b].name)
	})
	// The host being emptied takes nothing back.
	h.excluded = "being emptied"
	st.sum()
	type done struct{ v, from int }
	var made []done
	var moves []Move
	fb := st.load(s)
	for _, v := range vms {
		t := -1
		for _, c := range st.byLoad(false, len(st.hosts)) {
			if st.fits(v, c, limit) {
				t = c
				break
			}
		}
		if t < 0 {
			for i := len(made) - 1; i >= 0; i-- {
				st.move(made[i].v, made[i].from)
			}
			h.excluded = ""
			st.sum()
			return nil, false
		}
		tb := st.load(t)
		before := st.imbalance()
		st.move(v, t)
		made = append(made, done{v, s})
		vm := &st.vms[v]
		moves = append(moves, Move{
			ID: MoveID(vm.name, h.name, st.hosts[t].name), VM: vm.name, From: h.name, To: st.hosts[t].name,
			Kind: api.BalancePower, Demand: api.PlanUsage{CPU: round(vm.cpu), MemoryMiB: round(vm.mem)}, DemandSource: vm.source,
			ImbalanceBefore: round(before), ImbalanceAfter: round(st.imbalance()),
			FromBefore: roundLoad(fb), FromAfter: roundLoad(st.load(s)), ToBefore: roundLoad(tb), ToAfter: roundLoad(st.load(t)),
			Reason: fmt.Sprintf("power saving: host %s is lightly loaded (CPU %s, memory %s); its %d VMs fit on the others, so it can be emptied and powered off",
				h.name, pct(fb.CPU), pct(fb.Memory), len(vms)),
		})
	}
	h.excluded = "emptied: on standby (power saving)"
	st.sum()
	return moves, true
}

// wake brings the largest host on standby (then the first by name) back
// into the domain when a hotspot remains, and reports whether it did. It
// is undone when no move lands on it (the next cycle finds it empty and
// on standby again).
func (st *state) wake() bool {
	if len(st.hotspots()) == 0 {
		return false
	}
	best := -1
	for i := range st.hosts {
		h := &st.hosts[i]
		if h.excluded != standbyNote || len(h.vms) > 0 {
			continue
		}
		if best < 0 || h.cpus > st.hosts[best].cpus || (h.cpus == st.hosts[best].cpus && h.mem > st.hosts[best].mem) {
			best = i
		}
	}
	if best < 0 {
		return false
	}
	st.hosts[best].excluded = ""
	st.sum()
	return true
}

// roomWithout says whether the domain's other hosts hold the demand of
// all its hosts within powerMeanLoad of their capacity, CPU and memory.
func (st *state) roomWithout(s int) bool {
	var cpu, mem, capCPU, capMem float64
	for i := range st.hosts {
		h := &st.hosts[i]
		if h.excluded != "" {
			continue
		}
		cpu += h.usedCPU
		mem += h.usedMem
		if i != s {
			capCPU += h.cpus
			capMem += h.mem
		}
	}
	return cpu <= powerMeanLoad*capCPU && mem <= powerMeanLoad*capMem
}
