package balancer

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/planner"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func host(name string, cpus, mem float64) planner.Host {
	return planner.Host{Name: name, CPUs: cpus, MemoryMiB: mem, CPUOvercommit: 4, MemoryOvercommit: 1}
}

// vm is a VM with a measured demand of cpu cores and mem MiB.
func vm(name, on string, cpu, mem float64) planner.VM {
	return planner.VM{Name: name, Host: on, VCPUs: 2, MemoryMiB: 2048, Demand: &planner.Usage{CPU: cpu, MemoryMiB: mem}}
}

func balance(t *testing.T, in Input, o Options) Result {
	t.Helper()
	if o.Now.IsZero() {
		o.Now = t0
	}
	res, err := Balance(in, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func moveNames(r Result) []string {
	var out []string
	for _, m := range r.Moves {
		out = append(out, m.VM+":"+m.From+">"+m.To)
	}
	return out
}

// TestBalanceImbalanceOneMove: three equal VMs on one of two equal hosts;
// one move evens them out as far as whole VMs allow, and a second would
// only mirror the first.
func TestBalanceImbalanceOneMove(t *testing.T) {
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 4, 16384), host("b", 4, 16384)},
		VMs:   []planner.VM{vm("v1", "a", 1, 1024), vm("v2", "a", 1, 1024), vm("v3", "a", 1, 1024)},
	}}
	res := balance(t, in, Options{})
	if got, want := moveNames(res), []string{"v1:a>b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("moves %v, want %v", got, want)
	}
	m := res.Moves[0]
	if m.Kind != api.BalanceImbalance || !strings.Contains(m.Reason, "uneven") || m.Gain <= 0 || m.ImbalanceAfter >= m.ImbalanceBefore {
		t.Errorf("move %+v: want an imbalance move with a positive gain", m)
	}
	if m.FromBefore.CPU != 0.75 || m.FromAfter.CPU != 0.5 || m.ToAfter.CPU != 0.25 || m.DemandSource != SourceMeasured {
		t.Errorf("loads of the move %+v", m)
	}
	if m.ID != MoveID("v1", "a", "b") || len(m.ID) != 12 {
		t.Errorf("move id %q", m.ID)
	}
}

// TestBalanceHotspot: a host over the threshold is relieved even at the
// lowest aggressiveness, which leaves mere imbalance alone.
func TestBalanceHotspot(t *testing.T) {
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 4, 16384), host("b", 4, 16384), host("c", 4, 16384)},
		VMs:   []planner.VM{vm("big", "a", 2, 1024), vm("small", "a", 1.8, 1024), vm("x", "b", 1, 1024), vm("y", "c", 1.5, 1024)},
	}}
	res := balance(t, in, Options{Aggressiveness: 1})
	if len(res.Moves) != 1 {
		t.Fatalf("moves %v, want one", moveNames(res))
	}
	m := res.Moves[0]
	if m.Kind != api.BalanceHotspot || m.From != "a" || m.To != "b" || !strings.Contains(m.Reason, "hotspot") {
		t.Errorf("move %+v: want a hotspot move from a to b", m)
	}
	if m.FromAfter.CPU > 0.8 || m.ToAfter.CPU > 0.8 {
		t.Errorf("the move leaves a hotspot: %+v", m)
	}
	// Imbalance alone (no hotspot) is left alone at aggressiveness 1.
	in.VMs = []planner.VM{vm("v1", "a", 1, 1024), vm("v2", "a", 1, 1024), vm("v3", "a", 1, 1024)}
	if res := balance(t, in, Options{Aggressiveness: 1}); len(res.Moves) != 0 {
		t.Errorf("aggressiveness 1 moved %v without a hotspot", moveNames(res))
	}
}

// TestBalanceTolerance: a small imbalance is left alone at the default
// aggressiveness and acted on at the highest.
func TestBalanceTolerance(t *testing.T) {
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 8, 16384), host("b", 8, 16384)},
		VMs:   []planner.VM{vm("v1", "a", 1, 1024), vm("v2", "a", 0.5, 1024), vm("v3", "b", 0.5, 1024)},
	}}
	if res := balance(t, in, Options{}); len(res.Moves) != 0 {
		t.Errorf("aggressiveness 3 moved %v on a spread of %.3f", moveNames(res), res.Imbalance)
	}
	if res := balance(t, in, Options{Aggressiveness: 5}); !reflect.DeepEqual(moveNames(res), []string{"v2:a>b"}) {
		t.Errorf("aggressiveness 5 moved %v, want v2 from a to b", moveNames(res))
	}
}

// TestBalanceConstraints: pinned, fixed, recently moved, provider VMs and
// affinity groups stay; cordoned and provider hosts, hosts whose labels
// do not match, hosts with an anti-affinity peer and hosts without room
// take nothing.
func TestBalanceConstraints(t *testing.T) {
	hosts := []planner.Host{host("a", 4, 16384), host("cordoned", 4, 16384), host("far", 4, 16384),
		host("peer", 4, 16384), host("small", 4, 1024), host("ok", 4, 16384)}
	hosts[1].Cordoned = true
	hosts[2].Provider = "vcenter"
	hosts[5].Labels = map[string]string{"zone": "1"}
	hosts[3].Labels = map[string]string{"zone": "1"}
	mk := func(name string) planner.VM {
		v := vm(name, "a", 0.6, 512)
		v.HostSelector = map[string]string{"zone": "1"}
		return v
	}
	pinned, fixed, recent, prov, aff1, aff2, anti := mk("pinned"), mk("fixed"), mk("recent"), mk("prov"), mk("aff1"), mk("aff2"), mk("anti")
	pinned.Pinned = true
	prov.Provider = "vcenter"
	aff1.Affinity, aff2.Affinity = "g", "g"
	anti.AntiAffinity = []string{"db"}
	peer := vm("dbpeer", "peer", 0.1, 512)
	peer.AntiAffinity = []string{"db"}
	in := Input{
		Snapshot: planner.Snapshot{Hosts: hosts, VMs: []planner.VM{pinned, fixed, recent, prov, aff1, aff2, anti, peer}},
		Fixed:    map[string]string{"fixed": "an operation is in flight"},
		Moved:    map[string]time.Time{"recent": t0.Add(-time.Minute)},
	}
	res := balance(t, in, Options{Aggressiveness: 5, MaxMoves: 10, Cooldown: time.Hour})
	if got, want := moveNames(res), []string{"anti:a>ok"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("moves %v, want %v", got, want)
	}
	// Once the cooldown passed, the recently moved VM may move too.
	res = balance(t, in, Options{Aggressiveness: 5, MaxMoves: 10, Cooldown: time.Hour, Now: t0.Add(2 * time.Hour)})
	if !slices.ContainsFunc(res.Moves, func(m Move) bool { return m.VM == "recent" }) {
		t.Errorf("after the cooldown: moves %v, want recent among them", moveNames(res))
	}
	for _, h := range res.Hosts {
		if (h.Name == "cordoned" || h.Name == "far") && h.Excluded == "" {
			t.Errorf("host %s not reported excluded: %+v", h.Name, h)
		}
	}
}

// TestBalanceAllocationRoom: a target whose allocation (under its
// overcommit) is full takes nothing, however idle it is.
func TestBalanceAllocationRoom(t *testing.T) {
	full := host("full", 1, 16384) // 4 vCPUs under overcommit 4
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 4, 16384), full},
		VMs:   []planner.VM{vm("v1", "a", 1.5, 1024), vm("v2", "a", 1.5, 1024), vm("idle", "full", 0, 1024), vm("idle2", "full", 0, 1024)},
	}}
	if res := balance(t, in, Options{Aggressiveness: 5}); len(res.Moves) != 0 {
		t.Errorf("moved %v onto a host with no vCPU room", moveNames(res))
	}
}

// TestBalanceUnmeasured: a VM without a measured demand counts at its
// allocation, and says so.
func TestBalanceUnmeasured(t *testing.T) {
	v := planner.VM{Name: "v1", Host: "a", VCPUs: 8, MemoryMiB: 4096}
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 4, 16384), host("b", 4, 16384)},
		VMs:   []planner.VM{v, vm("v2", "a", 1, 1024)},
	}}
	res := balance(t, in, Options{})
	if res.Measured != 1 {
		t.Errorf("measured %d, want 1", res.Measured)
	}
	if len(res.Moves) != 1 || res.Moves[0].VM != "v1" || res.Moves[0].DemandSource != SourceAllocation || res.Moves[0].Demand.CPU != 2 {
		t.Errorf("moves %+v: want v1 at its allocation (8 vCPUs / 4 = 2 cores)", res.Moves)
	}
}

// TestBalancePowerSaving: a lightly loaded host is emptied onto the
// others, which stay under the fill limit; an empty host takes nothing.
func TestBalancePowerSaving(t *testing.T) {
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 8, 16384), host("b", 8, 16384), host("c", 8, 16384), host("off", 8, 16384)},
		VMs: []planner.VM{vm("a1", "a", 3, 2048), vm("b1", "b", 3.5, 2048),
			vm("c1", "c", 0.5, 1024), vm("c2", "c", 0.3, 1024)},
	}}
	res := balance(t, in, Options{PowerSaving: true, MaxMoves: 4})
	var power []string
	for _, m := range res.Moves {
		if m.Kind == api.BalancePower {
			power = append(power, m.VM+":"+m.From+">"+m.To)
		}
		if m.To == "off" || m.To == "c" {
			t.Errorf("move %s lands on an emptied or standby host", m.VM)
		}
	}
	if want := []string{"c1:c>a", "c2:c>a"}; !reflect.DeepEqual(power, want) {
		t.Errorf("power moves %v, want %v (the least loaded host that holds each)", power, want)
	}
	// Without power saving the light host is a fine target instead.
	res = balance(t, in, Options{MaxMoves: 4})
	for _, m := range res.Moves {
		if m.Kind == api.BalancePower {
			t.Errorf("power move %s without power saving", m.VM)
		}
	}
	// A host whose VMs cannot all move is not emptied.
	in.VMs[3].Pinned = true
	res = balance(t, in, Options{PowerSaving: true, MaxMoves: 4})
	for _, m := range res.Moves {
		if m.Kind == api.BalancePower {
			t.Errorf("power move %s off a host with a pinned VM", m.VM)
		}
	}
}

// TestBalanceBudget: no more moves than the budget.
func TestBalanceBudget(t *testing.T) {
	var vms []planner.VM
	for i := range 10 {
		vms = append(vms, vm(fmt.Sprintf("v%02d", i), "a", 0.35, 512))
	}
	in := Input{Snapshot: planner.Snapshot{Hosts: []planner.Host{host("a", 4, 16384), host("b", 4, 16384), host("c", 4, 16384)}, VMs: vms}}
	for _, budget := range []int{1, 2, 3} {
		if res := balance(t, in, Options{MaxMoves: budget}); len(res.Moves) != budget {
			t.Errorf("budget %d: %d moves", budget, len(res.Moves))
		}
	}
}

// TestBalanceBadInput: bad options and snapshots name their field.
func TestBalanceBadInput(t *testing.T) {
	for _, c := range []struct {
		in    Input
		o     Options
		field string
	}{
		{Input{}, Options{Aggressiveness: 6}, "aggressiveness"},
		{Input{}, Options{HotspotThreshold: 1.5}, "hotspotThreshold"},
		{Input{}, Options{MaxMoves: -1}, "maxMoves"},
		{Input{Snapshot: planner.Snapshot{Hosts: []planner.Host{host("a", 1, 1), host("a", 1, 1)}}}, Options{}, "hosts[1].name"},
		{Input{Snapshot: planner.Snapshot{VMs: []planner.VM{vm("v", "a", -1, 0)}}}, Options{}, "vms[0]"},
	} {
		_, err := Balance(c.in, c.o)
		ie, ok := err.(*planner.InputError)
		if !ok || ie.Field != c.field {
			t.Errorf("%+v: error %v, want one naming %s", c.o, err, c.field)
		}
	}
}

// TestBalancePowerWake: in power-saving mode a hotspot the active hosts
// cannot take wakes a host on standby.
func TestBalancePowerWake(t *testing.T) {
	in := Input{Snapshot: planner.Snapshot{
		Hosts: []planner.Host{host("a", 4, 16384), host("b", 4, 16384), host("c", 4, 16384), host("standby", 8, 16384)},
		VMs: []planner.VM{vm("a1", "a", 2, 1024), vm("a2", "a", 1.6, 1024), vm("b1", "b", 3, 1024),
			vm("c1", "c", 2.4, 1024)},
	}}
	res := balance(t, in, Options{PowerSaving: true})
	if got, want := moveNames(res), []string{"a1:a>standby"}; !reflect.DeepEqual(got, want) {
		t.Errorf("moves %v, want %v: the hotspot relieved on the woken host, the only one with room", got, want)
	}
}
