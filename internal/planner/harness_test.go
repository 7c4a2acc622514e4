package planner

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// host and vm build a small estate tersely: sizes in cores and GiB.
func host(name string, cpus, memGiB float64) Host {
	return Host{Name: name, CPUs: cpus, MemoryMiB: memGiB * 1024}
}

func vm(name, on string, cpus, memGiB float64) VM {
	return VM{Name: name, Host: on, VCPUs: cpus, MemoryMiB: memGiB * 1024}
}

func hostsNamed(prefix string, n int, cpus, memGiB float64) []Host {
	var hs []Host
	for i := range n {
		hs = append(hs, host(fmt.Sprintf("%s%02d", prefix, i+1), cpus, memGiB))
	}
	return hs
}

func mustPlan(t *testing.T, snap Snapshot, opts Options) *Plan {
	t.Helper()
	p, err := Consolidate(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, snap, p)
	return p
}

func placementOf(p *Plan) map[string]string {
	m := map[string]string{}
	for _, a := range p.Placement {
		m[a.VM] = a.Host
	}
	return m
}

// TestKnownOptima runs hand-made estates whose fewest hosts are known.
func TestKnownOptima(t *testing.T) {
	full := Options{TargetUtilization: 1}
	cases := []struct {
		name string
		snap Snapshot
		opts Options
		want int
	}{
		{
			name: "pairs that sum to a host",
			snap: Snapshot{Hosts: hostsNamed("h", 6, 10, 64), VMs: []VM{
				vm("a", "h01", 6, 1), vm("b", "h02", 4, 1), vm("c", "h03", 6, 1),
				vm("d", "h04", 4, 1), vm("e", "h05", 5, 1), vm("f", "h06", 5, 1),
			}},
			opts: full, want: 3,
		},
		{
			name: "cpu-heavy and memory-heavy VMs pair up",
			snap: Snapshot{Hosts: hostsNamed("h", 6, 10, 10), VMs: []VM{
				vm("cpu1", "h01", 8, 2), vm("cpu2", "h02", 8, 2), vm("cpu3", "h03", 8, 2),
				vm("mem1", "h04", 2, 8), vm("mem2", "h05", 2, 8), vm("mem3", "h06", 2, 8),
			}},
			opts: full, want: 3,
		},
		{
			name: "target utilization leaves headroom",
			snap: Snapshot{Hosts: hostsNamed("h", 4, 10, 64), VMs: func() []VM {
				var vs []VM
				for i := range 10 {
					vs = append(vs, vm(fmt.Sprintf("v%d", i), "h01", 2, 1))
				}
				return vs
			}()},
			opts: Options{TargetUtilization: 0.8}, want: 3,
		},
		{
			name: "the same at full utilization",
			snap: Snapshot{Hosts: hostsNamed("h", 4, 10, 64), VMs: func() []VM {
				var vs []VM
				for i := range 10 {
					vs = append(vs, vm(fmt.Sprintf("v%d", i), "h01", 2, 1))
				}
				return vs
			}()},
			opts: full, want: 2,
		},
		{
			name: "anti-affinity spreads a group",
			snap: Snapshot{Hosts: hostsNamed("h", 3, 64, 512), VMs: []VM{
				{Name: "db1", VCPUs: 1, MemoryMiB: 1024, AntiAffinity: []string{"db"}},
				{Name: "db2", VCPUs: 1, MemoryMiB: 1024, AntiAffinity: []string{"db"}},
				{Name: "db3", VCPUs: 1, MemoryMiB: 1024, AntiAffinity: []string{"db"}},
				{Name: "web", VCPUs: 1, MemoryMiB: 1024},
			}},
			opts: full, want: 3,
		},
		{
			name: "overcommit divides allocations",
			snap: Snapshot{Hosts: []Host{
				{Name: "a", CPUs: 4, MemoryMiB: 65536, CPUOvercommit: 4},
				{Name: "b", CPUs: 4, MemoryMiB: 65536, CPUOvercommit: 4},
			}, VMs: func() []VM {
				var vs []VM
				for i := range 16 {
					vs = append(vs, vm(fmt.Sprintf("v%02d", i), []string{"a", "b"}[i%2], 1, 1))
				}
				return vs
			}()},
			opts: full, want: 1,
		},
		{
			name: "large hosts first when hosts differ",
			snap: Snapshot{Hosts: []Host{host("small1", 8, 32), host("small2", 8, 32), host("small3", 8, 32), host("big", 32, 128)},
				VMs: []VM{vm("a", "small1", 4, 16), vm("b", "small1", 4, 16), vm("c", "small2", 4, 16), vm("d", "small2", 4, 16), vm("e", "small3", 4, 16), vm("f", "small3", 4, 16)}},
			opts: full, want: 1,
		},
		{
			name: "an affinity group shares a host",
			snap: Snapshot{Hosts: hostsNamed("h", 2, 10, 64), VMs: []VM{
				{Name: "app", VCPUs: 6, MemoryMiB: 1024, Affinity: "shop", Host: "h01"},
				{Name: "cache", VCPUs: 4, MemoryMiB: 1024, Affinity: "shop", Host: "h02"},
			}},
			opts: full, want: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlan(t, tc.snap, tc.opts)
			if p.HostsAfter != tc.want {
				t.Fatalf("hostsAfter = %d, want %d; placement %v", p.HostsAfter, tc.want, placementOf(p))
			}
			if p.LowerBound > p.HostsAfter {
				t.Fatalf("lower bound %d above the plan's %d hosts", p.LowerBound, p.HostsAfter)
			}
			if len(p.Unplaced) != 0 {
				t.Fatalf("unplaced: %v", p.Unplaced)
			}
		})
	}
}

func TestPercentileSizesFromHistory(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	spiky := func(name string) VM {
		v := VM{Name: name, VCPUs: 8, MemoryMiB: 8192}
		for i := range 100 {
			cpu := 1.0
			if i == 50 {
				cpu = 8
			}
			v.History = append(v.History, Sample{Time: t0.Add(time.Duration(i) * 5 * time.Minute), CPU: cpu, MemoryMiB: 1024})
		}
		return v
	}
	snap := Snapshot{Hosts: hostsNamed("h", 4, 8, 64), VMs: []VM{spiky("a"), spiky("b"), spiky("c"), spiky("d")}}
	p95 := mustPlan(t, snap, Options{TargetUtilization: 1, Percentile: 95})
	if p95.HostsAfter != 1 {
		t.Fatalf("at p95 the spike is ignored and one host holds all: got %d", p95.HostsAfter)
	}
	if got := p95.Placement[0]; got.Source != SourceHistory || got.Size.CPU != 1 {
		t.Fatalf("a sized %+v, want 1 core from history", got)
	}
	p100 := mustPlan(t, snap, Options{TargetUtilization: 1, Percentile: 100})
	if p100.HostsAfter != 4 {
		t.Fatalf("at p100 every VM needs its spike: got %d hosts, want 4", p100.HostsAfter)
	}
	// Without history the allocation sizes the VM.
	snap.VMs = []VM{vm("x", "", 8, 8), vm("y", "", 8, 8)}
	if p := mustPlan(t, snap, Options{TargetUtilization: 1}); p.HostsAfter != 2 || p.Placement[0].Source != SourceAllocation {
		t.Fatalf("allocation fallback: %+v", p)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	vals := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{95, 10}, {90, 9}, {50, 5}, {10, 1}, {100, 10}, {1, 1}} {
		if got := Percentile(vals, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if vals[0] != 5 {
		t.Fatal("Percentile sorted its input in place")
	}
}

func TestConstraintsHold(t *testing.T) {
	hs := hostsNamed("h", 4, 16, 64)
	hs[0].Cordoned = true
	hs[1].Labels = map[string]string{"gpu": "yes"}
	hs = append(hs, Host{Name: "esx1", Provider: "vc", CPUs: 64, MemoryMiB: 1 << 20})
	snap := Snapshot{Hosts: hs, VMs: []VM{
		vm("on-cordoned", "h01", 2, 2),
		{Name: "pinned", Host: "h04", Pinned: true, VCPUs: 1, MemoryMiB: 1024},
		{Name: "needs-gpu", Host: "h03", VCPUs: 1, MemoryMiB: 1024, HostSelector: map[string]string{"gpu": "yes"}},
		{Name: "vsphere-vm", Host: "esx1", Provider: "vc", VCPUs: 1, MemoryMiB: 1024},
		{Name: "too-big", Host: "h02", VCPUs: 100, MemoryMiB: 1024},
		{Name: "pinned-cordoned", Host: "h01", Pinned: true, VCPUs: 1, MemoryMiB: 1024},
		{Name: "pinned-gone", Host: "h99", Pinned: true, VCPUs: 1, MemoryMiB: 1024},
	}}
	p := mustPlan(t, snap, Options{TargetUtilization: 1})
	where := placementOf(p)
	if where["pinned"] != "h04" || where["needs-gpu"] != "h02" || where["vsphere-vm"] != "esx1" {
		t.Fatalf("placement %v", where)
	}
	if h := where["on-cordoned"]; h == "" || h == "h01" {
		t.Fatalf("the VM on the cordoned host went to %q", h)
	}
	reasons := map[string]string{}
	for _, u := range p.Unplaced {
		reasons[u.VM] = u.Reason
	}
	for vmName, want := range map[string]string{
		"too-big": "larger than any host", "pinned-cordoned": "cordoned", "pinned-gone": "not in the estate",
	} {
		if !strings.Contains(reasons[vmName], want) {
			t.Errorf("%s: reason %q, want it to say %q", vmName, reasons[vmName], want)
		}
	}
	if len(p.Unplaced) != 3 {
		t.Fatalf("unplaced %v", p.Unplaced)
	}
}

func TestNoMovesWhenAlreadyOptimal(t *testing.T) {
	// Two of three identical hosts already hold everything as tightly as
	// possible: the plan keeps it, with no move.
	snap := Snapshot{Hosts: hostsNamed("h", 3, 10, 64), VMs: []VM{
		vm("a", "h02", 6, 1), vm("b", "h02", 4, 1), vm("c", "h03", 5, 1), vm("d", "h03", 5, 1),
	}}
	p := mustPlan(t, snap, Options{TargetUtilization: 1})
	if p.HostsAfter != 2 || len(p.Moves) != 0 {
		t.Fatalf("hosts %d, moves %v", p.HostsAfter, p.Moves)
	}
	if p.Savings.Hosts != 1 || len(p.Savings.Freed) != 0 {
		t.Fatalf("savings %+v: h01 was idle already", p.Savings)
	}
	// Spread over three, the plan frees one host and says which.
	snap.VMs = []VM{vm("a", "h01", 6, 1), vm("b", "h02", 4, 1), vm("c", "h03", 5, 1), vm("d", "h03", 5, 1)}
	p = mustPlan(t, snap, Options{TargetUtilization: 1})
	if p.HostsBefore != 3 || p.HostsAfter != 2 || len(p.Moves) != 1 || len(p.Savings.Freed) != 1 {
		t.Fatalf("before %d after %d moves %v savings %+v", p.HostsBefore, p.HostsAfter, p.Moves, p.Savings)
	}
	if p.Savings.CPUs != 10 || p.Savings.MemoryMiB != 64*1024 {
		t.Fatalf("savings %+v", p.Savings)
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	for _, c := range []struct {
		snap  Snapshot
		opts  Options
		field string
	}{
		{Snapshot{}, Options{TargetUtilization: 1.5}, "targetUtilization"},
		{Snapshot{}, Options{Percentile: -1}, "percentile"},
		{Snapshot{Hosts: []Host{host("a", 1, 1), host("a", 1, 1)}}, Options{}, "hosts[1].name"},
		{Snapshot{Hosts: []Host{{Name: "a", CPUs: -1}}}, Options{}, "hosts[0].cpus"},
		{Snapshot{VMs: []VM{{Name: "v", Pinned: true}}}, Options{}, "vms[0].pinned"},
	} {
		_, err := Consolidate(c.snap, c.opts)
		ie, ok := err.(*InputError)
		if !ok || ie.Field != c.field {
			t.Errorf("error %v, want one naming %s", err, c.field)
		}
	}
}

// checkPlan holds a plan to the constraints, computed from the snapshot
// apart from the planner's own bookkeeping.
func checkPlan(t *testing.T, snap Snapshot, p *Plan) {
	t.Helper()
	hosts := map[string]Host{}
	for _, h := range snap.Hosts {
		hosts[h.Name] = h
	}
	vms := map[string]VM{}
	for _, v := range snap.VMs {
		vms[v.Name] = v
	}
	seen := map[string]bool{}
	type load struct{ cpu, mem float64 }
	loads := map[string]*load{}
	groupsOn := map[string]map[string]string{}
	affinityHost := map[string]string{}
	for _, a := range p.Placement {
		if seen[a.VM] {
			t.Fatalf("vm %s placed twice", a.VM)
		}
		seen[a.VM] = true
		v, h := vms[a.VM], hosts[a.Host]
		if h.Name == "" {
			t.Fatalf("vm %s placed on unknown host %s", a.VM, a.Host)
		}
		if h.Cordoned {
			t.Fatalf("vm %s placed on cordoned host %s", a.VM, a.Host)
		}
		if v.Pinned && a.Host != v.Host {
			t.Fatalf("pinned vm %s moved to %s", a.VM, a.Host)
		}
		if !p.Options.CrossProvider && v.Provider != h.Provider {
			t.Fatalf("vm %s of provider %q on host %s of %q", a.VM, v.Provider, a.Host, h.Provider)
		}
		for k, want := range v.HostSelector {
			if h.Labels[k] != want {
				t.Fatalf("vm %s wants %s=%s, host %s has %q", a.VM, k, want, a.Host, h.Labels[k])
			}
		}
		if v.Affinity != "" {
			if prev, ok := affinityHost[v.Affinity]; ok && prev != a.Host {
				t.Fatalf("affinity group %s split over %s and %s", v.Affinity, prev, a.Host)
			}
			affinityHost[v.Affinity] = a.Host
		}
		if groupsOn[a.Host] == nil {
			groupsOn[a.Host] = map[string]string{}
		}
		for _, g := range v.AntiAffinity {
			if other, ok := groupsOn[a.Host][g]; ok {
				t.Fatalf("anti-affinity %s: %s and %s both on %s", g, other, a.VM, a.Host)
			}
			groupsOn[a.Host][g] = a.VM
		}
		if loads[a.Host] == nil {
			loads[a.Host] = &load{}
		}
		loads[a.Host].cpu += a.Size.CPU
		loads[a.Host].mem += a.Size.MemoryMiB
	}
	for _, u := range p.Unplaced {
		if seen[u.VM] {
			t.Fatalf("vm %s both placed and unplaced", u.VM)
		}
		seen[u.VM] = true
	}
	if len(seen) != len(snap.VMs) {
		t.Fatalf("%d VMs accounted for, %d in the estate", len(seen), len(snap.VMs))
	}
	target := p.Options.TargetUtilization
	for name, l := range loads {
		h := hosts[name]
		if l.cpu > h.CPUs*target+1e-3 || l.mem > h.MemoryMiB*target+1e-3 {
			t.Fatalf("host %s over capacity: %.3f cores / %.3f MiB of %.3f / %.3f", name, l.cpu, l.mem, h.CPUs*target, h.MemoryMiB*target)
		}
	}
	moved := 0
	for _, a := range p.Placement {
		if vms[a.VM].Host != a.Host {
			moved++
		}
	}
	if moved != len(p.Moves) {
		t.Fatalf("%d VMs change host, %d moves listed", moved, len(p.Moves))
	}
	used := map[string]bool{}
	for _, a := range p.Placement {
		used[a.Host] = true
	}
	if len(used) != p.HostsAfter {
		t.Fatalf("placement uses %d hosts, plan says %d", len(used), p.HostsAfter)
	}
	if slices.ContainsFunc(p.Hosts, func(h HostPlan) bool { return h.VMsAfter > 0 && !used[h.Name] }) {
		t.Fatal("host table disagrees with the placement")
	}
}

func TestContradictoryGroupsAreRefused(t *testing.T) {
	snap := Snapshot{Hosts: hostsNamed("h", 2, 16, 64), VMs: []VM{
		{Name: "a", Host: "h01", VCPUs: 1, MemoryMiB: 1, Affinity: "x", AntiAffinity: []string{"g"}},
		{Name: "b", Host: "h02", VCPUs: 1, MemoryMiB: 1, Affinity: "x", AntiAffinity: []string{"g"}},
		{Name: "c", Host: "h01", Pinned: true, VCPUs: 1, MemoryMiB: 1, Affinity: "y"},
		{Name: "d", Host: "h02", Pinned: true, VCPUs: 1, MemoryMiB: 1, Affinity: "y"},
		{Name: "e", Host: "h02", VCPUs: 1, MemoryMiB: 1},
	}}
	p := mustPlan(t, snap, Options{})
	if len(p.Unplaced) != 4 || !strings.Contains(p.Unplaced[0].Reason, "anti-affinity") || !strings.Contains(p.Unplaced[2].Reason, "different hosts") {
		t.Fatalf("unplaced %v", p.Unplaced)
	}
}
