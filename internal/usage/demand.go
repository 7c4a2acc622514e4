package usage

import (
	"context"
	"time"
)

// Demand is what a VM or a host used over a window: the mean of its
// points, CPU in cores and memory in bytes.
type Demand struct {
	CPU         float64
	MemoryBytes int64
	// Points is how many consolidated points the mean is of; 0 means no
	// history in the window.
	Points int
}

// DemandReader reads demand from the history, for a balancer or a
// planner. vm is a VM's key as the API names it (project/name); host a
// host's name.
type DemandReader interface {
	VMDemand(ctx context.Context, vm string, window time.Duration) (Demand, error)
	HostDemand(ctx context.Context, host string, window time.Duration) (Demand, error)
}

// Mean reduces points to their mean.
func Mean(pts []Point) Demand {
	var d Demand
	var cpu, mem, n float64
	for _, p := range pts {
		w := float64(p.Samples)
		cpu += p.CPU * w
		mem += p.MemoryBytes * w
		n += w
		d.Points++
	}
	if n > 0 {
		d.CPU, d.MemoryBytes = cpu/n, int64(mem/n)
	}
	return d
}
