package balancer

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/planner"
)

// randomEstate makes an estate with every kind of constraint.
func randomEstate(rng *rand.Rand, nh, nv int) Input {
	var in Input
	in.Fixed = map[string]string{}
	for i := range nh {
		h := host(fmt.Sprintf("h%03d", i), float64(4+4*rng.IntN(4)), float64(8192*(1+rng.IntN(4))))
		switch rng.IntN(12) {
		case 0:
			h.Cordoned = true
		case 1:
			h.Provider = "vc"
		}
		if rng.IntN(2) == 0 {
			h.Labels = map[string]string{"zone": fmt.Sprint(rng.IntN(2))}
		}
		in.Hosts = append(in.Hosts, h)
	}
	for i := range nv {
		h := in.Hosts[rng.IntN(nh)]
		v := planner.VM{Name: fmt.Sprintf("v%04d", i), Host: h.Name, Provider: h.Provider,
			VCPUs: float64(1 + rng.IntN(4)), MemoryMiB: float64(512 * (1 + rng.IntN(8)))}
		if rng.IntN(5) > 0 {
			v.Demand = &planner.Usage{CPU: rng.Float64() * v.VCPUs, MemoryMiB: v.MemoryMiB * (0.2 + 0.8*rng.Float64())}
		}
		switch rng.IntN(10) {
		case 0:
			v.Pinned = true
		case 1:
			v.AntiAffinity = []string{fmt.Sprint("g", rng.IntN(3))}
		case 2:
			v.HostSelector = map[string]string{"zone": fmt.Sprint(rng.IntN(2))}
		case 3:
			in.Fixed[v.Name] = "busy"
		case 4:
			v.Affinity = "pair"
		}
		in.VMs = append(in.VMs, v)
	}
	return in
}

// checkMoves applies moves to the estate and fails on any constraint a
// move broke.
func checkMoves(t *testing.T, in *Input, moves []Move, threshold float64) {
	t.Helper()
	hosts := map[string]*planner.Host{}
	for i := range in.Hosts {
		hosts[in.Hosts[i].Name] = &in.Hosts[i]
	}
	vms := map[string]*planner.VM{}
	for i := range in.VMs {
		vms[in.VMs[i].Name] = &in.VMs[i]
	}
	groups := map[string]int{}
	for _, v := range in.VMs {
		if v.Affinity != "" {
			groups[v.Affinity]++
		}
	}
	seen := map[string]bool{}
	for _, m := range moves {
		v, th := vms[m.VM], hosts[m.To]
		switch {
		case seen[m.VM]:
			t.Errorf("%s moves twice in one cycle", m.VM)
		case v.Host != m.From:
			t.Errorf("%s moves from %s but runs on %s", m.VM, m.From, v.Host)
		case v.Pinned || v.Provider != "" || in.Fixed[m.VM] != "" || groups[v.Affinity] > 1 && v.Affinity != "":
			t.Errorf("%s may not move (pinned %v, provider %q, fixed %q, affinity %q)", m.VM, v.Pinned, v.Provider, in.Fixed[m.VM], v.Affinity)
		case th.Cordoned || th.Provider != "" || hosts[m.From].Cordoned:
			t.Errorf("%s moves from %s to %s: a cordoned or provider host", m.VM, m.From, m.To)
		}
		for k, want := range v.HostSelector {
			if th.Labels[k] != want {
				t.Errorf("%s lands on %s without label %s=%s", m.VM, m.To, k, want)
			}
		}
		seen[m.VM] = true
		v.Host = m.To
	}
	// After the cycle: anti-affinity holds where it held, and every host
	// a move landed on is within its allocation room and the threshold.
	for _, m := range moves {
		h := hosts[m.To]
		var alloc, mem, cpu, used float64
		groups := map[string]int{}
		for _, v := range in.VMs {
			if v.Host != h.Name {
				continue
			}
			alloc += v.VCPUs
			mem += v.MemoryMiB
			if v.Demand != nil {
				cpu += v.Demand.CPU
				used += v.Demand.MemoryMiB
			} else {
				cpu += v.VCPUs / h.CPUOvercommit
				used += v.MemoryMiB
			}
			for _, g := range v.AntiAffinity {
				groups[g]++
			}
		}
		if alloc > h.CPUs*h.CPUOvercommit+1e-9 || mem > h.MemoryMiB*h.MemoryOvercommit+1e-9 {
			t.Errorf("host %s past its allocation room: %v vCPUs of %v, %v MiB of %v", h.Name, alloc, h.CPUs*h.CPUOvercommit, mem, h.MemoryMiB)
		}
		if cpu/h.CPUs > threshold+1e-9 || used/h.MemoryMiB > threshold+1e-9 {
			t.Errorf("host %s past the threshold after %s landed: CPU %.3f memory %.3f", h.Name, m.VM, cpu/h.CPUs, used/h.MemoryMiB)
		}
		for _, v := range in.VMs {
			if v.Name == m.VM {
				for _, g := range v.AntiAffinity {
					if groups[g] > 1 {
						t.Errorf("%s lands on %s beside another VM of anti-affinity group %s", m.VM, h.Name, g)
					}
				}
			}
		}
	}
}

// TestBalanceProperties: over random estates, no move breaks a
// constraint, the output does not depend on the input's order, and
// cycles on a steady demand come to rest without moving a VM back.
func TestBalanceProperties(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		in := randomEstate(rng, 4+rng.IntN(12), 10+rng.IntN(60))
		o := Options{Aggressiveness: 1 + rng.IntN(5), MaxMoves: 1 + rng.IntN(6), PowerSaving: rng.IntN(3) == 0,
			Cooldown: 30 * time.Minute, Now: t0}
		res, err := Balance(in, o)
		if err != nil {
			t.Fatal(err)
		}
		// The same estate in another order gives the same moves.
		sh := in
		sh.Hosts = append([]planner.Host(nil), in.Hosts...)
		sh.VMs = append([]planner.VM(nil), in.VMs...)
		rng.Shuffle(len(sh.Hosts), func(i, j int) { sh.Hosts[i], sh.Hosts[j] = sh.Hosts[j], sh.Hosts[i] })
		rng.Shuffle(len(sh.VMs), func(i, j int) { sh.VMs[i], sh.VMs[j] = sh.VMs[j], sh.VMs[i] })
		again, err := Balance(sh, o)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(res, again) {
			t.Errorf("seed %d: the order of the input changed the result:\n%v\n%v", seed, moveNames(res), moveNames(again))
		}
		// Cycles five minutes apart on the same demand, no cooldown: each
		// cycle lowers the cost, so they come to rest, and no VM goes back
		// to a host it left (but in power-saving mode, see below).
		cur := in
		cur.VMs = append([]planner.VM(nil), in.VMs...)
		o.Cooldown = 0
		left := map[string]map[string]bool{}
		rest := false
		for cycle := range 30 {
			o.Now = t0.Add(time.Duration(cycle) * 5 * time.Minute)
			r, err := Balance(cur, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Moves) == 0 {
				rest = true
				break
			}
			checkMoves(t, &cur, r.Moves, 0.8)
			for _, m := range r.Moves {
				// In power-saving mode the set of active hosts changes (one
				// is emptied, one woken), and a VM may then rightly return
				// to a host it left: there the cooldown keeps it.
				if left[m.VM][m.To] && !o.PowerSaving {
					t.Errorf("seed %d cycle %d: %s goes back to %s", seed, cycle, m.VM, m.To)
				}
				if left[m.VM] == nil {
					left[m.VM] = map[string]bool{}
				}
				left[m.VM][m.From] = true
			}
		}
		if !rest {
			t.Errorf("seed %d: still moving after 30 cycles on a steady demand", seed)
		}
	}
}

// TestBalanceNoOscillationNoisy: demand that wobbles by ±10% around a
// balanced state makes no moves: the tolerance and the minimum gain
// absorb it.
func TestBalanceNoOscillationNoisy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	in := Input{Snapshot: planner.Snapshot{Hosts: []planner.Host{host("a", 8, 32768), host("b", 8, 32768), host("c", 8, 32768)}}}
	for i := range 12 {
		in.VMs = append(in.VMs, vm(fmt.Sprintf("v%02d", i), in.Hosts[i%3].Name, 1.2, 4096))
	}
	moves := 0
	for cycle := range 100 {
		cur := in
		cur.VMs = nil
		for _, v := range in.VMs {
			v.Demand = &planner.Usage{CPU: 1.2 * (0.9 + 0.2*rng.Float64()), MemoryMiB: 4096}
			cur.VMs = append(cur.VMs, v)
		}
		res, err := Balance(cur, Options{Now: t0.Add(time.Duration(cycle) * 5 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		moves += len(res.Moves)
	}
	if moves != 0 {
		t.Errorf("%d moves over 100 cycles of noise around a balanced estate", moves)
	}
}
