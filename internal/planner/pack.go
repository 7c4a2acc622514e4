package planner

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
)

// hostState is a host while the packer fills it.
type hostState struct {
	h                  *Host
	capCPU, capMem     float64 // capacity at the target utilization
	cpuRatio, memRatio float64
	usedCPU, usedMem   float64
	items              []int // item indexes
	anti               map[string]int
	pinned             int
	part               int // partition, or -1 when it takes no VM
	pos                int // position in its partition's packing order
}

func (hs *hostState) need(it *item) (float64, float64) {
	return it.size.on(hs.cpuRatio, hs.memRatio)
}

func (hs *hostState) free() (float64, float64) {
	return hs.capCPU - hs.usedCPU, hs.capMem - hs.usedMem
}

// load is the host's larger share of its capacity in use.
func (hs *hostState) load() float64 {
	return max(share(hs.usedCPU, hs.capCPU), share(hs.usedMem, hs.capMem))
}

func share(used, capacity float64) float64 {
	if capacity <= 0 {
		if used > 0 {
			return 1e9
		}
		return 0
	}
	return used / capacity
}

// allows says whether the host's labels and the VMs on it let it take the
// item, capacity aside.
func (hs *hostState) allows(it *item) bool {
	for _, g := range it.anti {
		if hs.anti[g] > 0 {
			return false
		}
	}
	for k, v := range it.selector {
		if hs.h.Labels[k] != v {
			return false
		}
	}
	return true
}

func (hs *hostState) fits(it *item) bool {
	c, m := hs.need(it)
	fc, fm := hs.free()
	return c <= fc+slack && m <= fm+slack && hs.allows(it)
}

// partition is the hosts one group of VMs may use, in packing order, with
// the tree that finds room among them.
type partition struct {
	key      string
	order    []int // host indexes
	t        *tree
	maxCPUR  float64 // largest overcommit ratios among its hosts
	maxMemR  float64
	refCPU   float64 // largest capacities among its hosts
	refMem   float64
	disabled []bool // by position: taken out of the search
}

type packer struct {
	rng   *rand.Rand
	hosts []hostState
	items []item
	where []int // item -> host index, or -1
	parts []*partition
}

func (p *packer) place(ii, hi int) {
	it, hs := &p.items[ii], &p.hosts[hi]
	c, m := hs.need(it)
	hs.usedCPU += c
	hs.usedMem += m
	hs.items = append(hs.items, ii)
	if len(it.anti) > 0 && hs.anti == nil {
		hs.anti = map[string]int{}
	}
	for _, g := range it.anti {
		hs.anti[g]++
	}
	if it.pin >= 0 {
		hs.pinned++
	}
	p.where[ii] = hi
	p.refresh(hi)
}

func (p *packer) remove(ii int) {
	hi := p.where[ii]
	it, hs := &p.items[ii], &p.hosts[hi]
	c, m := hs.need(it)
	hs.usedCPU -= c
	hs.usedMem -= m
	if k := slices.Index(hs.items, ii); k >= 0 {
		hs.items = slices.Delete(hs.items, k, k+1)
	}
	for _, g := range it.anti {
		hs.anti[g]--
	}
	if it.pin >= 0 {
		hs.pinned--
	}
	if len(hs.items) == 0 {
		hs.usedCPU, hs.usedMem = 0, 0 // no drift on an empty host
	}
	p.where[ii] = -1
	p.refresh(hi)
}

// refresh updates the host's leaf in its partition's tree.
func (p *packer) refresh(hi int) {
	hs := &p.hosts[hi]
	if hs.part < 0 {
		return
	}
	pt := p.parts[hs.part]
	if pt.disabled[hs.pos] {
		pt.t.set(hs.pos, -1, -1)
		return
	}
	c, m := hs.free()
	pt.t.set(hs.pos, c, m)
}

func (p *packer) setDisabled(hi int, off bool) {
	hs := &p.hosts[hi]
	p.parts[hs.part].disabled[hs.pos] = off
	p.refresh(hi)
}

// findHost returns the first host of the partition, in packing order,
// that takes the item, or -1.
func (p *packer) findHost(pt *partition, ii int) int {
	it := &p.items[ii]
	// The least the item can need on any host of the partition prunes the
	// search; each candidate is then checked exactly.
	minC, minM := it.size.on(pt.maxCPUR, pt.maxMemR)
	pos := pt.t.find(minC, minM, func(pos int) bool { return p.hosts[pt.order[pos]].fits(it) })
	if pos < 0 {
		return -1
	}
	return pt.order[pos]
}

// partitionKey is the group of hosts an item or a host belongs to.
func partitionKey(provider string, cross bool) string {
	if cross {
		return ""
	}
	return provider
}

// buildPartitions splits the hosts that take VMs by provider and orders
// each for first-fit: largest capacity first (fewest hosts), then the
// hosts running most VMs now (fewest moves), then by name.
func (p *packer) buildPartitions(cross bool, vmsOn []int) map[string]int {
	byKey := map[string]int{}
	for hi := range p.hosts {
		hs := &p.hosts[hi]
		hs.part = -1
		if hs.h.Cordoned || hs.capCPU <= 0 && hs.capMem <= 0 {
			continue
		}
		key := partitionKey(hs.h.Provider, cross)
		pi, ok := byKey[key]
		if !ok {
			pi = len(p.parts)
			byKey[key] = pi
			p.parts = append(p.parts, &partition{key: key, maxCPUR: 1, maxMemR: 1})
		}
		pt := p.parts[pi]
		hs.part = pi
		pt.order = append(pt.order, hi)
		pt.maxCPUR = max(pt.maxCPUR, hs.cpuRatio)
		pt.maxMemR = max(pt.maxMemR, hs.memRatio)
		pt.refCPU = max(pt.refCPU, hs.capCPU)
		pt.refMem = max(pt.refMem, hs.capMem)
	}
	for _, pt := range p.parts {
		capShare := func(hi int) float64 {
			hs := &p.hosts[hi]
			return share(hs.capCPU, pt.refCPU) + share(hs.capMem, pt.refMem)
		}
		slices.SortStableFunc(pt.order, func(a, b int) int {
			if c := cmp.Compare(capShare(b), capShare(a)); c != 0 {
				return c
			}
			if c := cmp.Compare(vmsOn[b], vmsOn[a]); c != 0 {
				return c
			}
			return cmp.Compare(a, b) // hosts are sorted by name
		})
		pt.t = newTree(len(pt.order))
		pt.disabled = make([]bool, len(pt.order))
		for pos, hi := range pt.order {
			p.hosts[hi].pos = pos
			p.refresh(hi)
		}
	}
	return byKey
}

// dominant is an item's larger share of the partition's largest host,
// the key first-fit-decreasing sorts by; sum breaks its ties.
func (pt *partition) dominant(it *item) (float64, float64) {
	c, m := it.size.on(pt.maxCPUR, pt.maxMemR)
	sc, sm := share(c, pt.refCPU), share(m, pt.refMem)
	return max(sc, sm), sc + sm
}

// orders are the item orders first-fit-decreasing tries: by dominant
// share, by the sum of the shares, by CPU, by memory.
const orders = 4

// perturbedItems bounds the partitions that also try perturbedRuns orders
// with randomly shaken keys (randomized first-fit decreasing): cheap on
// small estates, where one host more is a large share.
const (
	perturbedItems = 2000
	perturbedRuns  = 60
)

// multiOrderItems bounds the partitions that try every order; larger ones
// try the first only, keeping a plan of 100,000 VMs within seconds. The
// bound depends on the input only, so plans stay deterministic.
const multiOrderItems = 20000

// packBest packs the partition's items in each order, each followed by the
// improvement pass, and keeps the plan that places most VMs on fewest
// hosts (the first order on a tie).
func (p *packer) packBest(pt *partition, itemIdx []int) []int {
	n := 1
	if len(itemIdx) <= multiOrderItems {
		n = orders
	}
	if len(itemIdx) <= perturbedItems {
		n += perturbedRuns
	}
	// The perturbed orders draw from a generator seeded alike every time:
	// the same input gives the same plan.
	p.rng = rand.New(rand.NewPCG(0x706c616e, uint64(len(itemIdx))))
	var bestFailed []int
	var bestWhere []int
	bestHosts := -1
	for o := range n {
		failed := p.pack(pt, itemIdx, o)
		p.improve(pt)
		hosts := 0
		for _, hi := range pt.order {
			if len(p.hosts[hi].items) > 0 {
				hosts++
			}
		}
		if bestHosts < 0 || len(failed) < len(bestFailed) || (len(failed) == len(bestFailed) && hosts < bestHosts) {
			bestFailed, bestHosts = failed, hosts
			bestWhere = make([]int, len(itemIdx))
			for k, ii := range itemIdx {
				bestWhere[k] = p.where[ii]
			}
		}
		if n == 1 {
			return failed
		}
		for _, ii := range itemIdx {
			if p.where[ii] >= 0 {
				p.remove(ii)
			}
		}
	}
	for k, ii := range itemIdx {
		if bestWhere[k] >= 0 {
			p.place(ii, bestWhere[k])
		}
	}
	return bestFailed
}

// pack places the partition's items first-fit-decreasing in the given
// order, pinned ones first, and returns those no host takes.
func (p *packer) pack(pt *partition, itemIdx []int, order int) []int {
	var free, failed []int
	for _, ii := range itemIdx {
		it := &p.items[ii]
		if it.pin < 0 {
			free = append(free, ii)
			continue
		}
		hs := &p.hosts[it.pin]
		if hs.part < 0 || p.parts[hs.part] != pt || !hs.fits(it) {
			failed = append(failed, ii)
			continue
		}
		p.place(ii, it.pin)
	}
	type keyed struct {
		ii     int
		k1, k2 float64
	}
	ks := make([]keyed, len(free))
	for k, ii := range free {
		c, m := p.items[ii].size.on(pt.maxCPUR, pt.maxMemR)
		sc, sm := share(c, pt.refCPU), share(m, pt.refMem)
		switch {
		case order >= orders:
			// Dominant share, each item's key shaken by up to ±25 %.
			ks[k] = keyed{ii, max(sc, sm) * (0.75 + 0.5*p.rng.Float64()), sc + sm}
		case order == 0:
			ks[k] = keyed{ii, max(sc, sm), sc + sm}
		case order == 1:
			ks[k] = keyed{ii, sc + sm, max(sc, sm)}
		case order == 2:
			ks[k] = keyed{ii, sc, sm}
		default:
			ks[k] = keyed{ii, sm, sc}
		}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if c := cmp.Compare(b.k1, a.k1); c != 0 {
			return c
		}
		if c := cmp.Compare(b.k2, a.k2); c != 0 {
			return c
		}
		return cmp.Compare(a.ii, b.ii)
	})
	for _, k := range ks {
		hi := p.findHost(pt, k.ii)
		if hi < 0 {
			failed = append(failed, k.ii)
			continue
		}
		p.place(k.ii, hi)
	}
	return failed
}

// improve tries to empty hosts, least loaded first, by moving their items
// to the other hosts in use; it repeats while a round empties one.
func (p *packer) improve(pt *partition) {
	var used []int
	for _, hi := range pt.order {
		if len(p.hosts[hi].items) == 0 {
			p.setDisabled(hi, true)
		} else {
			used = append(used, hi)
		}
	}
	for round := 0; round < 4; round++ {
		cands := slices.Clone(used)
		slices.SortStableFunc(cands, func(a, b int) int {
			if c := cmp.Compare(p.hosts[a].load(), p.hosts[b].load()); c != 0 {
				return c
			}
			return cmp.Compare(p.hosts[b].pos, p.hosts[a].pos)
		})
		emptied := false
		for _, hi := range cands {
			hs := &p.hosts[hi]
			if hs.pinned > 0 || len(hs.items) == 0 {
				continue
			}
			if p.tryEmpty(pt, hi) {
				emptied = true
			}
		}
		used = slices.DeleteFunc(used, func(hi int) bool { return len(p.hosts[hi].items) == 0 })
		if !emptied {
			break
		}
	}
	for _, hi := range pt.order {
		p.setDisabled(hi, false)
	}
}

// tryEmpty moves every item of host hi elsewhere, or nothing.
func (p *packer) tryEmpty(pt *partition, hi int) bool {
	hs := &p.hosts[hi]
	moving := slices.Clone(hs.items)
	slices.SortStableFunc(moving, func(a, b int) int {
		da, sa := pt.dominant(&p.items[a])
		db, sb := pt.dominant(&p.items[b])
		if c := cmp.Compare(db, da); c != 0 {
			return c
		}
		if c := cmp.Compare(sb, sa); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	p.setDisabled(hi, true)
	var moved []int
	for _, ii := range moving {
		p.remove(ii)
		to := p.findHost(pt, ii)
		if to < 0 {
			// Undo: everything goes back where it was.
			for _, mi := range moved {
				p.remove(mi)
				p.place(mi, hi)
			}
			p.place(ii, hi)
			p.setDisabled(hi, false)
			return false
		}
		p.place(ii, to)
		moved = append(moved, ii)
	}
	return true
}

// shapeKey groups hosts whose contents can be swapped without breaking a
// constraint.
func shapeKey(hs *hostState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%g/%g/%g/%g", hs.capCPU, hs.capMem, hs.cpuRatio, hs.memRatio)
	for _, k := range slices.Sorted(maps.Keys(hs.h.Labels)) {
		fmt.Fprintf(&b, "\x00%s=%s", k, hs.h.Labels[k])
	}
	return b.String()
}

// relabel keeps the host count and cuts moves: among hosts of one shape,
// it hands each planned host's contents to the host already running most
// of its VMs.
func (p *packer) relabel(pt *partition, vms []VM, hostIdx map[string]int) {
	groups := map[string][]int{}
	var keys []string
	for _, hi := range pt.order {
		hs := &p.hosts[hi]
		if hs.pinned > 0 {
			continue
		}
		k := shapeKey(hs)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], hi)
	}
	for _, k := range keys {
		members := groups[k]
		if len(members) < 2 {
			continue
		}
		in := make(map[int]bool, len(members))
		for _, hi := range members {
			in[hi] = true
		}
		type pair struct{ bin, host, w int }
		var pairs []pair
		var bins []int
		for _, hi := range members {
			if len(p.hosts[hi].items) == 0 {
				continue
			}
			bins = append(bins, hi)
			w := map[int]int{}
			for _, ii := range p.hosts[hi].items {
				for _, vi := range p.items[ii].vms {
					if cur, ok := hostIdx[vms[vi].Host]; ok && in[cur] {
						w[cur]++
					}
				}
			}
			for h, n := range w {
				pairs = append(pairs, pair{hi, h, n})
			}
		}
		slices.SortFunc(pairs, func(a, b pair) int {
			if c := cmp.Compare(b.w, a.w); c != 0 {
				return c
			}
			if c := cmp.Compare(a.bin, b.bin); c != 0 {
				return c
			}
			return cmp.Compare(a.host, b.host)
		})
		target := map[int]int{}
		taken := map[int]bool{}
		for _, pr := range pairs {
			if _, done := target[pr.bin]; done || taken[pr.host] {
				continue
			}
			target[pr.bin] = pr.host
			taken[pr.host] = true
		}
		// Bins with no VM at home keep their host if it is free, else take
		// the first free one in packing order.
		for _, b := range bins {
			if _, done := target[b]; done {
				continue
			}
			if !taken[b] {
				target[b], taken[b] = b, true
				continue
			}
			for _, hi := range members {
				if !taken[hi] {
					target[b], taken[hi] = hi, true
					break
				}
			}
		}
		contents := map[int][]int{}
		for _, b := range bins {
			contents[b] = slices.Clone(p.hosts[b].items)
			for _, ii := range contents[b] {
				p.remove(ii)
			}
		}
		for _, b := range bins {
			for _, ii := range contents[b] {
				p.place(ii, target[b])
			}
		}
	}
}

// stayHome puts back on its current host every item the plan moved away
// from a host it still uses, where it fits.
func (p *packer) stayHome(pt *partition, itemIdx []int) {
	for _, ii := range itemIdx {
		it := &p.items[ii]
		from, home := p.where[ii], it.current
		if from < 0 || home < 0 || from == home || it.pin >= 0 {
			continue
		}
		hs := &p.hosts[home]
		if hs.part < 0 || p.parts[hs.part] != pt || len(hs.items) == 0 || !hs.fits(it) {
			continue
		}
		p.remove(ii)
		p.place(ii, home)
	}
}
