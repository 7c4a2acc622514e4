package planner

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// randomEstate makes a varied estate: two providers, cordons, labels,
// pins, affinity and anti-affinity groups, histories, demands and bare
// allocations.
func randomEstate(seed uint64, nHosts, nVMs int) Snapshot {
	r := rand.New(rand.NewPCG(seed, 7))
	var s Snapshot
	for i := range nHosts {
		h := Host{
			Name: fmt.Sprintf("h%03d", i), Cluster: fmt.Sprintf("c%d", i%3),
			CPUs: float64(int(8) << r.IntN(3)), MemoryMiB: float64(int(32768) << r.IntN(3)),
			CPUOvercommit: float64(1 + r.IntN(4)), MemoryOvercommit: 1 + r.Float64()/2,
			Cordoned: r.IntN(10) == 0,
		}
		if i%5 == 0 {
			h.Provider = "vc"
		}
		if r.IntN(3) == 0 {
			h.Labels = map[string]string{"ssd": "yes"}
		}
		s.Hosts = append(s.Hosts, h)
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range nVMs {
		h := s.Hosts[r.IntN(nHosts)]
		v := VM{Name: fmt.Sprintf("vm%04d", i), Host: h.Name, Provider: h.Provider,
			VCPUs: float64(1 + r.IntN(8)), MemoryMiB: float64(512 * (1 + r.IntN(16)))}
		switch r.IntN(3) {
		case 0:
			for k := range 12 {
				v.History = append(v.History, Sample{Time: t0.Add(time.Duration(k) * time.Hour), CPU: r.Float64() * v.VCPUs, MemoryMiB: r.Float64() * v.MemoryMiB})
			}
		case 1:
			v.Demand = &Usage{CPU: r.Float64() * v.VCPUs}
		}
		if r.IntN(6) == 0 {
			v.AntiAffinity = []string{fmt.Sprintf("g%d", r.IntN(4))}
		}
		if r.IntN(15) == 0 {
			v.Affinity = fmt.Sprintf("a%d", r.IntN(3))
		}
		if r.IntN(20) == 0 {
			v.Pinned = true
		}
		if r.IntN(10) == 0 {
			v.HostSelector = map[string]string{"ssd": "yes"}
		}
		s.VMs = append(s.VMs, v)
	}
	return s
}

// independentSize sizes a VM on a host as documented, apart from the
// planner's code paths.
func independentSize(v VM, h Host, p float64) (float64, float64) {
	cr, mr := h.CPUOvercommit, h.MemoryOvercommit
	if cr == 0 {
		cr = 1
	}
	if mr == 0 {
		mr = 1
	}
	if len(v.History) > 0 {
		var c, m []float64
		for _, s := range v.History {
			c = append(c, s.CPU)
			m = append(m, s.MemoryMiB)
		}
		return Percentile(c, p), Percentile(m, p)
	}
	cpu, mem := v.VCPUs/cr, v.MemoryMiB/mr
	if v.Demand != nil && v.Demand.CPU > 0 {
		cpu = v.Demand.CPU
	}
	if v.Demand != nil && v.Demand.MemoryMiB > 0 {
		mem = v.Demand.MemoryMiB
	}
	return cpu, mem
}

func TestRandomEstatesKeepConstraints(t *testing.T) {
	for seed := range uint64(40) {
		snap := randomEstate(seed, 20+int(seed), 150+int(seed)*5)
		opts := Options{TargetUtilization: 0.5 + float64(seed%5)/10, Percentile: 90}
		p := mustPlan(t, snap, opts)
		hosts := map[string]Host{}
		for _, h := range snap.Hosts {
			hosts[h.Name] = h
		}
		vms := map[string]VM{}
		for _, v := range snap.VMs {
			vms[v.Name] = v
		}
		cpu, mem := map[string]float64{}, map[string]float64{}
		for _, a := range p.Placement {
			c, m := independentSize(vms[a.VM], hosts[a.Host], opts.Percentile)
			cpu[a.Host] += c
			mem[a.Host] += m
		}
		for name, c := range cpu {
			h := hosts[name]
			if c > h.CPUs*opts.TargetUtilization+1e-6 || mem[name] > h.MemoryMiB*opts.TargetUtilization+1e-6 {
				t.Fatalf("seed %d: host %s holds %.2f cores %.0f MiB over %.2f / %.0f", seed, name, c, mem[name], h.CPUs*opts.TargetUtilization, h.MemoryMiB*opts.TargetUtilization)
			}
		}
		if p.HostsAfter < p.LowerBound {
			t.Fatalf("seed %d: %d hosts below the lower bound %d", seed, p.HostsAfter, p.LowerBound)
		}
	}
}

func TestSameInputSamePlan(t *testing.T) {
	snap := randomEstate(99, 40, 400)
	opts := Options{TargetUtilization: 0.75}
	first, err := json.Marshal(mustPlan(t, snap, opts))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := Snapshot{Hosts: append([]Host(nil), snap.Hosts...), VMs: append([]VM(nil), snap.VMs...)}
		r.Shuffle(len(shuffled.Hosts), func(i, j int) { shuffled.Hosts[i], shuffled.Hosts[j] = shuffled.Hosts[j], shuffled.Hosts[i] })
		r.Shuffle(len(shuffled.VMs), func(i, j int) { shuffled.VMs[i], shuffled.VMs[j] = shuffled.VMs[j], shuffled.VMs[i] })
		again, err := json.Marshal(mustPlan(t, shuffled, opts))
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(first) {
			t.Fatal("the same estate in another order gave another plan")
		}
	}
}
