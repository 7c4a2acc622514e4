package placement

import "github.com/polyvisor/polyvisor/api"

// hostCapacity is what a host has: its CPUs and memory.
type hostCapacity struct {
	cpus   int
	memory int64
}

// ownCapacities counts Polyvisor's own hosts by CPUs and by memory, so
// that the largest of each is found among the distinct sizes (few) rather
// than among the hosts (thousands).
type ownCapacities struct {
	byHost map[string]hostCapacity
	cpus   map[int]int   // CPUs -> own hosts with that many
	memory map[int64]int // MiB -> own hosts with that much
}

// set records host name as h (an own host or not), or, with ok false,
// its removal.
func (o *ownCapacities) set(name string, h *api.Host, ok bool) {
	if old, had := o.byHost[name]; had {
		delete(o.byHost, name)
		if o.cpus[old.cpus]--; o.cpus[old.cpus] <= 0 {
			delete(o.cpus, old.cpus)
		}
		if o.memory[old.memory]--; o.memory[old.memory] <= 0 {
			delete(o.memory, old.memory)
		}
	}
	if !ok || h == nil || !OwnHosts(h) {
		return
	}
	c := hostCapacity{cpus: h.Status.CPUs, memory: h.Status.MemoryMiB}
	o.byHost[name] = c
	o.cpus[c.cpus]++
	o.memory[c.memory]++
}

// max is the most CPUs and the most memory of any own host; zero when
// there is none.
func (o *ownCapacities) max() (cpus int, memory int64) {
	for c := range o.cpus {
		cpus = max(cpus, c)
	}
	for m := range o.memory {
		memory = max(memory, m)
	}
	return cpus, memory
}
