package balancer

import (
	"bufio"
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/planner"
)

// The dynamics harness replays utilization traces through the balancer
// on simulated hosts, a cycle every step (5 minutes), and measures what
// the literature on dynamic consolidation measures (Beloglazov and Buyya,
// "Optimal online deterministic algorithms and adaptive heuristics for
// energy and performance efficient dynamic consolidation of virtual
// machines in cloud data centers", 2012):
//
//   - energy, with a linear host power model P(u) = Pidle + (Pmax - Pidle)·u,
//     u the host's CPU utilization (capped at 1); a host with no VM is off
//     and draws nothing;
//   - migrations;
//   - SLATAH: the mean over active hosts of the share of their active time
//     at 100% CPU (demand at or above capacity);
//   - PDM: the mean over VMs of the CPU lost to migrations (10% of the VM's
//     demand while it migrates, for its memory over the link's bandwidth)
//     over the CPU it asked for;
//   - SLAV = SLATAH × PDM.

// traceVM is one VM of a trace: its allocation and its demand per step.
type traceVM struct {
	name     string
	vcpus    float64
	memMiB   float64
	cpu, mem []float64 // cores busy, MiB in use, per step
}

// simHost is a host shape with its power model.
type simHost struct {
	cpus, memMiB float64
	idleW, maxW  float64
}

// Host shapes: two kinds, like the HP ProLiant G4 and G5 of the
// literature but sized to hold the traces' largest VMs; their idle and
// peak power are those servers' (SPECpower), the model linear in between.
var (
	smallHost = simHost{cpus: 8, memMiB: 32768, idleW: 86, maxW: 117}
	largeHost = simHost{cpus: 16, memMiB: 65536, idleW: 93.7, maxW: 135}
)

const (
	stepSeconds = 300
	// linkMiBps is a 1 Gbit/s migration link.
	linkMiBps = 119.2
)

type policy struct {
	name string
	// off: no balancer at all (the placement stays as it started).
	off bool
	opt Options
}

type dynResult struct {
	policy                string
	energyKWh             float64
	migrations            int
	slatah, pdm, slav     float64
	meanActive, maxActive float64
	overloadedHostSteps   int
	// aloneOverloaded counts the overloaded host-steps of a host with one
	// VM, which no move relieves.
	aloneOverloaded   int
	balanceTime       time.Duration
	byKind            map[string]int
	vms, hosts, steps int
}

// simulate replays vms on hosts under a policy. The first placement packs
// the VMs by allocation (first fit, memory 1:1, CPU 4:1 as Polyvisor's
// scheduler admits them), as a cluster filled over time is.
func simulate(t testing.TB, vms []traceVM, shapes []simHost, p policy) dynResult {
	steps := len(vms[0].cpu)
	in := Input{Moved: map[string]time.Time{}}
	for i, s := range shapes {
		in.Hosts = append(in.Hosts, planner.Host{Name: fmt.Sprintf("h%04d", i), CPUs: s.cpus, MemoryMiB: s.memMiB, CPUOvercommit: 4, MemoryOvercommit: 1})
	}
	allocCPU := make([]float64, len(shapes))
	allocMem := make([]float64, len(shapes))
	hostOf := map[string]int{}
	for _, v := range vms {
		placed := false
		for h, s := range shapes {
			if allocCPU[h]+v.vcpus <= s.cpus*4 && allocMem[h]+v.memMiB <= s.memMiB {
				allocCPU[h] += v.vcpus
				allocMem[h] += v.memMiB
				hostOf[v.name] = h
				in.VMs = append(in.VMs, planner.VM{Name: v.name, Host: in.Hosts[h].Name, VCPUs: v.vcpus, MemoryMiB: v.memMiB})
				placed = true
				break
			}
		}
		if !placed {
			t.Fatalf("vm %s (%v vCPUs, %v MiB) fits on no host", v.name, v.vcpus, v.memMiB)
		}
	}
	hostIdx := map[string]int{}
	for i, h := range in.Hosts {
		hostIdx[h.Name] = i
	}
	res := dynResult{policy: p.name, vms: len(vms), hosts: len(shapes), steps: steps, byKind: map[string]int{}}
	activeSteps := make([]int, len(shapes))
	fullSteps := make([]int, len(shapes))
	lost := make([]float64, len(vms))
	asked := make([]float64, len(vms))
	t0 := time.Date(2013, 7, 1, 0, 0, 0, 0, time.UTC)
	for step := range steps {
		used := make([]float64, len(shapes))
		count := make([]int, len(shapes))
		for i, v := range vms {
			h := hostIdx[in.VMs[i].Host]
			used[h] += v.cpu[step]
			count[h]++
			asked[i] += v.cpu[step] * stepSeconds
			in.VMs[i].Demand = &planner.Usage{CPU: v.cpu[step], MemoryMiB: v.mem[step]}
		}
		active := 0
		for h, s := range shapes {
			if count[h] == 0 {
				continue
			}
			active++
			activeSteps[h]++
			u := used[h] / s.cpus
			if u >= 1 {
				fullSteps[h]++
				res.overloadedHostSteps++
				if count[h] == 1 {
					res.aloneOverloaded++
				}
			}
			res.energyKWh += (s.idleW + (s.maxW-s.idleW)*min(u, 1)) * stepSeconds / 3.6e6
		}
		res.meanActive += float64(active) / float64(steps)
		res.maxActive = max(res.maxActive, float64(active))
		if p.off {
			continue
		}
		o := p.opt
		o.Now = t0.Add(time.Duration(step) * stepSeconds * time.Second)
		start := time.Now()
		r, err := Balance(in, o)
		res.balanceTime += time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Moves {
			i := slices.IndexFunc(in.VMs, func(v planner.VM) bool { return v.Name == m.VM })
			if in.VMs[i].Host != m.From {
				t.Fatalf("step %d: move of %s from %s, but it runs on %s", step, m.VM, m.From, in.VMs[i].Host)
			}
			in.VMs[i].Host = m.To
			in.Moved[m.VM] = o.Now
			res.migrations++
			res.byKind[m.Kind]++
			lost[i] += 0.1 * vms[i].cpu[step] * vms[i].memMiB / linkMiBps
		}
	}
	n := 0
	for h := range shapes {
		if activeSteps[h] > 0 {
			res.slatah += float64(fullSteps[h]) / float64(activeSteps[h])
			n++
		}
	}
	if n > 0 {
		res.slatah /= float64(n)
	}
	m := 0
	for i := range vms {
		if asked[i] > 0 {
			res.pdm += lost[i] / asked[i]
			m++
		}
	}
	if m > 0 {
		res.pdm /= float64(m)
	}
	res.slav = res.slatah * res.pdm
	return res
}

// policies are the ones the harness compares.
func policies(cooldown time.Duration, budget int) []policy {
	return []policy{
		{name: "no balancing", off: true},
		{name: "balance (aggressiveness 3)", opt: Options{MaxMoves: budget, Cooldown: cooldown}},
		{name: "hotspots only (aggressiveness 1)", opt: Options{Aggressiveness: 1, MaxMoves: budget, Cooldown: cooldown}},
		{name: "power saving (aggressiveness 3)", opt: Options{MaxMoves: budget, Cooldown: cooldown, PowerSaving: true}},
	}
}

// syntheticTrace makes a CI-sized trace with a stated model: each VM has 1,
// 2 or 4 vCPUs and 2-8 GiB; its CPU demand follows a daily sine (peak at
// a VM's own hour) between 5% and a peak of 30-95% of its vCPUs, with 10%
// noise and, one step in 50, a burst to all its vCPUs; its memory in use
// is 40-90% of its allocation, slowly varying.
func syntheticTrace(seed uint64, n, steps int) []traceVM {
	rng := rand.New(rand.NewPCG(seed, 99))
	var out []traceVM
	for i := range n {
		v := traceVM{name: fmt.Sprintf("vm%04d", i), vcpus: float64([]int{1, 2, 4}[rng.IntN(3)]), memMiB: float64(2048 * (1 + rng.IntN(4)))}
		peak := 0.3 + 0.65*rng.Float64()
		phase := rng.Float64() * 2 * math.Pi
		memShare := 0.4 + 0.5*rng.Float64()
		for s := range steps {
			day := 2 * math.Pi * float64(s) / 288
			u := 0.05 + (peak-0.05)*(0.5+0.5*math.Sin(day+phase))
			u *= 0.9 + 0.2*rng.Float64()
			if rng.IntN(50) == 0 {
				u = 1
			}
			v.cpu = append(v.cpu, min(u, 1)*v.vcpus)
			v.mem = append(v.mem, v.memMiB*min(1, memShare*(0.95+0.1*math.Sin(day/3+phase))))
		}
		out = append(out, v)
	}
	return out
}

func shapesFor(n int) []simHost {
	var out []simHost
	for i := range n {
		if i%2 == 0 {
			out = append(out, smallHost)
		} else {
			out = append(out, largeHost)
		}
	}
	return out
}

// TestDynamicsSynthetic replays a small synthetic trace (60 VMs, 40 hosts,
// half a day): balancing makes fewer hosts overloaded than none, power
// saving uses less energy than balancing, and nobody migrates without
// bound.
func TestDynamicsSynthetic(t *testing.T) {
	vms := syntheticTrace(1, 60, 144)
	shapes := shapesFor(40)
	byName := map[string]dynResult{}
	for _, p := range policies(time.Hour, 4) {
		r := simulate(t, vms, shapes, p)
		t.Logf("%-34s energy %7.2f kWh, %4d migrations, SLATAH %.4f, PDM %.6f, SLAV %.2e, active hosts %.1f (max %.0f), overloaded host-steps %d",
			r.policy, r.energyKWh, r.migrations, r.slatah, r.pdm, r.slav, r.meanActive, r.maxActive, r.overloadedHostSteps)
		byName[p.name] = r
		if r.migrations > 4*144 {
			t.Errorf("%s: %d migrations, more than the budget allows", p.name, r.migrations)
		}
	}
	none, bal, power := byName["no balancing"], byName["balance (aggressiveness 3)"], byName["power saving (aggressiveness 3)"]
	if none.migrations != 0 || bal.migrations == 0 {
		t.Errorf("migrations: none %d, balance %d", none.migrations, bal.migrations)
	}
	if bal.overloadedHostSteps >= none.overloadedHostSteps {
		t.Errorf("balancing left %d overloaded host-steps, no balancing %d", bal.overloadedHostSteps, none.overloadedHostSteps)
	}
	if power.energyKWh >= bal.energyKWh {
		t.Errorf("power saving used %.2f kWh, balancing %.2f", power.energyKWh, bal.energyKWh)
	}
}

// readGWA reads a day (288 five-minute samples) of each VM of a
// GWA-T-12 (Bitbrains) trace directory: one semicolon-separated file per
// VM with the columns Timestamp [ms]; CPU cores; CPU capacity provisioned
// [MHZ]; CPU usage [MHZ]; CPU usage [%]; Memory capacity provisioned
// [KB]; Memory usage [KB]; ... A VM with no cores or memory provisioned
// during the day is left out.
func readGWA(t testing.TB, dir string, max int) []traceVM {
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".csv") {
			files = append(files, path)
		}
		return nil
	})
	slices.SortFunc(files, func(a, b string) int { return cmp.Compare(a, b) })
	var out []traceVM
	for _, f := range files {
		if len(out) == max {
			break
		}
		v, ok := readGWAFile(t, f)
		if ok && (v.vcpus > largeHost.cpus*4 || v.memMiB > largeHost.memMiB) {
			t.Logf("%s: %v vCPUs, %.0f MiB: larger than the largest host, left out", f, v.vcpus, v.memMiB)
			ok = false
		}
		if ok {
			v.name = strings.TrimSuffix(strings.TrimPrefix(f, dir), ".csv")
			out = append(out, v)
		}
	}
	return out
}

func readGWAFile(t testing.TB, path string) (traceVM, bool) {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Scan() // the header
	var v traceVM
	for sc.Scan() && len(v.cpu) < 288 {
		f := strings.Split(sc.Text(), ";")
		if len(f) < 7 {
			continue
		}
		num := func(i int) float64 {
			x, err := strconv.ParseFloat(strings.TrimSpace(f[i]), 64)
			if err != nil || math.IsNaN(x) || x < 0 {
				return 0
			}
			return x
		}
		cores, capMHz, useMHz, memKB, useKB := num(1), num(2), num(3), num(5), num(6)
		if cores == 0 || capMHz == 0 || memKB == 0 {
			return v, false
		}
		v.vcpus = max(v.vcpus, cores)
		v.memMiB = max(v.memMiB, memKB/1024)
		v.cpu = append(v.cpu, min(useMHz/(capMHz/cores), cores))
		v.mem = append(v.mem, min(useKB, memKB)/1024)
	}
	return v, len(v.cpu) == 288
}

// TestDynamicsTrace replays a day of a GWA-T-12 (Bitbrains) trace
// through the balancer on 800 simulated hosts. Opt-in: set
// POLYVISOR_BALANCE_TRACE to the directory of its CSV files (see
// docs/PLANNING.md for where they come from); POLYVISOR_BALANCE_VMS
// bounds the VMs read (default 1000).
func TestDynamicsTrace(t *testing.T) {
	dir := os.Getenv("POLYVISOR_BALANCE_TRACE")
	if dir == "" {
		t.Skip("set POLYVISOR_BALANCE_TRACE to a GWA-T-12 trace directory to replay it")
	}
	n := 1000
	if s := os.Getenv("POLYVISOR_BALANCE_VMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	vms := readGWA(t, dir, n)
	if len(vms) == 0 {
		t.Fatalf("no VM with a full day read from %s", dir)
	}
	shapes := shapesFor(800)
	t.Logf("%d VMs with a day of 5-minute samples, %d hosts", len(vms), len(shapes))
	for _, p := range policies(time.Hour, 16) {
		r := simulate(t, vms, shapes, p)
		t.Logf("| %s | %.1f | %d (%d hotspot, %d imbalance, %d power) | %.4f | %.5f | %.2e | %.1f | %.0f | %d (%d alone) | %v |",
			r.policy, r.energyKWh, r.migrations, r.byKind["hotspot"], r.byKind["imbalance"], r.byKind["power"], r.slatah, r.pdm, r.slav, r.meanActive, r.maxActive, r.overloadedHostSteps, r.aloneOverloaded, r.balanceTime.Round(time.Millisecond))
	}
}
