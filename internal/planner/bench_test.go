package planner

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// largeEstate is a consolidation benchmark's estate: hosts of two shapes
// (32 cores / 256 GiB and 48 cores / 384 GiB), every VM with a demand (in
// cores and MiB, as an export gives it) and a tenth of them in one of 50
// anti-affinity groups, spread over the hosts as they run now.
func largeEstate(seed uint64, nHosts, nVMs int) Snapshot {
	r := rand.New(rand.NewPCG(seed, 11))
	s := Snapshot{Hosts: make([]Host, nHosts), VMs: make([]VM, nVMs)}
	for i := range s.Hosts {
		h := Host{Name: fmt.Sprintf("h%05d", i), Cluster: fmt.Sprintf("c%02d", i%16), CPUs: 32, MemoryMiB: 256 << 10}
		if i%3 == 0 {
			h.CPUs, h.MemoryMiB = 48, 384<<10
		}
		s.Hosts[i] = h
	}
	for i := range s.VMs {
		vcpus := float64(int(1) << r.IntN(4))  // 1 to 8
		mem := float64(int(1024) << r.IntN(6)) // 1 to 32 GiB
		v := VM{
			Name: fmt.Sprintf("vm%06d", i), Host: s.Hosts[r.IntN(nHosts)].Name, VCPUs: vcpus, MemoryMiB: mem,
			Demand: &Usage{CPU: vcpus * (0.05 + 0.6*r.Float64()), MemoryMiB: mem * (0.3 + 0.7*r.Float64())},
		}
		if r.IntN(10) == 0 {
			v.AntiAffinity = []string{fmt.Sprintf("g%02d", r.IntN(50))}
		}
		s.VMs[i] = v
	}
	return s
}

func benchConsolidate(b *testing.B, hosts, vms int) {
	snap := largeEstate(1, hosts, vms)
	var p *Plan
	b.ResetTimer()
	for b.Loop() {
		var err error
		if p, err = Consolidate(snap, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(p.Unplaced) != 0 {
		b.Fatalf("%d VMs unplaced", len(p.Unplaced))
	}
	b.ReportMetric(float64(p.HostsAfter), "hosts")
	b.ReportMetric(float64(p.LowerBound), "lowerbound")
	b.ReportMetric(100*float64(p.HostsAfter-p.LowerBound)/float64(p.LowerBound), "gap%")
	b.ReportMetric(float64(len(p.Moves)), "moves")
}

// BenchmarkConsolidate10kVMs1kHosts and BenchmarkConsolidate100kVMs10kHosts
// time a whole consolidation (sizing, packing, the improvement passes and
// the plan's tables) and report its host count beside the lower bound.
func BenchmarkConsolidate10kVMs1kHosts(b *testing.B)   { benchConsolidate(b, 1000, 10000) }
func BenchmarkConsolidate100kVMs10kHosts(b *testing.B) { benchConsolidate(b, 10000, 100000) }

// BenchmarkConsolidate1kVMs100Hosts is an estate small enough for the 64
// orders (docs/PLANNING.md).
func BenchmarkConsolidate1kVMs100Hosts(b *testing.B) { benchConsolidate(b, 100, 1000) }
