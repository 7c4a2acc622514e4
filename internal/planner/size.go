package planner

import (
	"math"
	"slices"
	"strings"
)

// Percentile returns the p-th percentile (nearest rank, p in (0, 100]) of
// values; zero for none. values is not changed.
func Percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

// size is what a VM (or an affinity group) needs: a fixed part (demand,
// in cores and MiB) and an allocated part that a host's overcommit divides.
type size struct {
	cpuFixed, memFixed float64
	cpuAlloc, memAlloc float64
	// fromHistory says where the figures came from, for the plan's report.
	source string
}

// Sources of a VM's size.
const (
	SourceHistory    = "history"
	SourceDemand     = "demand"
	SourceAllocation = "allocation"
)

// sizeOf sizes a VM at percentile p of its history, else its reduced
// demand, else its allocation; each resource separately.
func sizeOf(v *VM, p float64) size {
	if len(v.History) > 0 {
		cpu := make([]float64, len(v.History))
		mem := make([]float64, len(v.History))
		for i, s := range v.History {
			cpu[i], mem[i] = s.CPU, s.MemoryMiB
		}
		return size{cpuFixed: Percentile(cpu, p), memFixed: Percentile(mem, p), source: SourceHistory}
	}
	if v.Demand != nil && (v.Demand.CPU > 0 || v.Demand.MemoryMiB > 0) {
		z := size{source: SourceDemand}
		if v.Demand.CPU > 0 {
			z.cpuFixed = v.Demand.CPU
		} else {
			z.cpuAlloc = v.VCPUs
		}
		if v.Demand.MemoryMiB > 0 {
			z.memFixed = v.Demand.MemoryMiB
		} else {
			z.memAlloc = v.MemoryMiB
		}
		return z
	}
	return size{cpuAlloc: v.VCPUs, memAlloc: v.MemoryMiB, source: SourceAllocation}
}

func (z size) scaled(f float64) size {
	z.cpuFixed *= f
	z.memFixed *= f
	z.cpuAlloc *= f
	z.memAlloc *= f
	return z
}

func (z size) plus(o size) size {
	z.cpuFixed += o.cpuFixed
	z.memFixed += o.memFixed
	z.cpuAlloc += o.cpuAlloc
	z.memAlloc += o.memAlloc
	return z
}

// on is what the size takes of a host with the given overcommit ratios.
func (z size) on(cpuRatio, memRatio float64) (cpu, mem float64) {
	return z.cpuFixed + z.cpuAlloc/cpuRatio, z.memFixed + z.memAlloc/memRatio
}

// item is what the packer places: one VM, or the VMs of an affinity group.
type item struct {
	vms      []int // indexes into the sorted VMs
	name     string
	size     size
	anti     []string
	selector map[string]string
	provider string
	pin      int // host index, or -1
	current  int // host index the item's VMs mostly run on now, or -1
	// conflict says why the item's own constraints contradict each other.
	conflict string
}

// buildItems groups VMs into items (one per VM, one per affinity group),
// in VM order. VMs that cannot be an item (an affinity group pinned to
// two hosts, a pin to a host that does not exist) are returned unplaced.
func buildItems(vms []VM, sizes []size, hostIdx map[string]int) ([]item, []Unplaced) {
	var items []item
	var unplaced []Unplaced
	groups := map[string]int{} // affinity group -> item index
	for i := range vms {
		v := &vms[i]
		pin := -1
		if v.Pinned {
			h, ok := hostIdx[v.Host]
			if !ok {
				unplaced = append(unplaced, Unplaced{VM: v.Name, Reason: "pinned to host " + quote(v.Host) + ", which is not in the estate"})
				continue
			}
			pin = h
		}
		cur := -1
		if h, ok := hostIdx[v.Host]; ok {
			cur = h
		}
		if v.Affinity != "" {
			if gi, ok := groups[v.Affinity]; ok {
				it := &items[gi]
				for _, g := range v.AntiAffinity {
					if slices.Contains(it.anti, g) {
						it.conflict = "its " + it.name + " holds VMs that anti-affinity " + quote(g) + " keeps apart"
					}
				}
				it.vms = append(it.vms, i)
				it.size = it.size.plus(sizes[i])
				it.anti = mergeSorted(it.anti, v.AntiAffinity)
				it.selector = mergeSelector(it.selector, v.HostSelector)
				if pin >= 0 {
					if it.pin >= 0 && it.pin != pin {
						it.conflict = "its " + it.name + " pins VMs to different hosts"
					}
					it.pin = pin
				}
				continue
			}
			groups[v.Affinity] = len(items)
		}
		items = append(items, item{
			vms: []int{i}, name: v.Name, size: sizes[i],
			anti: mergeSorted(nil, v.AntiAffinity), selector: v.HostSelector,
			provider: v.Provider, pin: pin, current: cur,
		})
		if v.Affinity != "" {
			items[len(items)-1].name = "affinity group " + quote(v.Affinity)
		}
	}
	out := items[:0]
	for _, it := range items {
		if it.conflict != "" {
			for _, vi := range it.vms {
				unplaced = append(unplaced, Unplaced{VM: vms[vi].Name, Reason: it.conflict})
			}
			continue
		}
		if len(it.vms) > 1 {
			it.current = majorityHost(vms, it.vms, hostIdx)
			for _, vi := range it.vms[1:] {
				if vms[vi].Provider != it.provider {
					it.provider = "\x00mixed"
				}
			}
		}
		out = append(out, it)
	}
	return out, unplaced
}

func majorityHost(vms []VM, members []int, hostIdx map[string]int) int {
	count := map[int]int{}
	best, bestN := -1, 0
	for _, vi := range members {
		h, ok := hostIdx[vms[vi].Host]
		if !ok {
			continue
		}
		count[h]++
		if n := count[h]; n > bestN || (n == bestN && h < best) {
			best, bestN = h, n
		}
	}
	return best
}

func mergeSorted(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func mergeSelector(a, b map[string]string) map[string]string {
	if len(b) == 0 {
		return a
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if w, ok := out[k]; ok && w != v {
			out[k] = "\x00conflict" // no host label matches it
			continue
		}
		out[k] = v
	}
	return out
}

func quote(s string) string { return "\"" + strings.ReplaceAll(s, "\"", "'") + "\"" }
