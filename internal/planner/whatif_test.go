package planner

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestWhatIf(t *testing.T) {
	snap := Snapshot{Hosts: hostsNamed("h", 3, 10, 64), VMs: []VM{
		vm("a", "h01", 5, 8), vm("b", "h01", 5, 8), vm("c", "h02", 5, 8), vm("d", "h02", 5, 8), vm("e", "h03", 5, 8),
	}}
	full := Options{TargetUtilization: 1}

	// Removing a host the estate needs leaves a VM without one.
	res, err := WhatIf(snap, Change{RemoveHosts: []string{"h03"}}, full)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fits || len(res.After.Unplaced) != 1 || res.Now.HostsAfter != 3 {
		t.Fatalf("remove h03: fits %v unplaced %v", res.Fits, res.After.Unplaced)
	}
	checkPlan(t, snap, res.Now)

	// Adding two big hosts in its place holds everything on one of them.
	res, err = WhatIf(snap, Change{RemoveHosts: []string{"h03"}, AddHosts: []HostShape{{Count: 2, CPUs: 32, MemoryMiB: 256 * 1024}}}, full)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Fits || res.After.HostsAfter != 1 || len(res.Added) != 2 || res.Added[0] != "new-1" {
		t.Fatalf("add: fits %v hosts %d added %v", res.Fits, res.After.HostsAfter, res.Added)
	}
	if res.Headroom.CPU != 32+32+10+10-25 {
		t.Fatalf("headroom %+v", res.Headroom)
	}

	// Growth by 20% turns 2 VMs of 5 into 12 cores: each needs its own host.
	res, err = WhatIf(snap, Change{GrowPercent: 20}, full)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fits || res.Now.HostsAfter != 3 {
		t.Fatalf("grow: fits %v now %d after %d unplaced %v", res.Fits, res.Now.HostsAfter, res.After.HostsAfter, res.After.Unplaced)
	}
	if res.After.Placement[0].Size.CPU != 6 {
		t.Fatalf("grown size %+v", res.After.Placement[0])
	}

	for _, c := range []struct {
		change Change
		field  string
	}{
		{Change{RemoveHosts: []string{"h9"}}, "removeHosts[0]"},
		{Change{AddHosts: []HostShape{{Count: 0, CPUs: 1, MemoryMiB: 1}}}, "addHosts[0].count"},
		{Change{AddHosts: []HostShape{{Count: 1, CPUs: 0, MemoryMiB: 1}}}, "addHosts[0]"},
		{Change{GrowPercent: -100}, "growPercent"},
		// A count that would wrap the running sum negative is refused,
		// not looped over.
		{Change{AddHosts: []HostShape{{Count: 1, CPUs: 1, MemoryMiB: 1}, {Count: math.MaxInt, CPUs: 1, MemoryMiB: 1}}}, "addHosts[1].count"},
		{Change{AddHosts: []HostShape{{Count: maxAddedHosts, CPUs: 1, MemoryMiB: 1}, {Count: 1, CPUs: 1, MemoryMiB: 1}}}, "addHosts[1].count"},
	} {
		_, err := WhatIf(snap, c.change, full)
		if ie, ok := err.(*InputError); !ok || ie.Field != c.field {
			t.Errorf("%+v: error %v, want one naming %s", c.change, err, c.field)
		}
	}
}

func TestForecast(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	// Cluster a: 2 hosts of 10 cores, 64 GiB. One VM grows by 1 core a day
	// from 2 cores; another, without history, takes 4 cores always. CPU
	// reaches 20 cores when 2+d+4 = 20: on day 14.
	grow := VM{Name: "grow", Host: "a1", VCPUs: 16, MemoryMiB: 4096}
	for d := range 8 {
		grow.History = append(grow.History, Sample{Time: t0.Add(time.Duration(d) * 24 * time.Hour), CPU: 2 + float64(d), MemoryMiB: 2048})
	}
	snap := Snapshot{
		Hosts: []Host{
			{Name: "a1", Cluster: "a", CPUs: 10, MemoryMiB: 65536}, {Name: "a2", Cluster: "a", CPUs: 10, MemoryMiB: 65536},
			{Name: "b1", Cluster: "b", CPUs: 10, MemoryMiB: 65536},
		},
		VMs: []VM{grow, vm("fixed", "a2", 4, 4), vm("idle", "b1", 1, 1)},
	}
	fs, err := Forecast(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || fs[0].Cluster != "a" || fs[1].Cluster != "b" {
		t.Fatalf("clusters %+v", fs)
	}
	a := fs[0]
	if a.RunsOut != "cpu" || a.CPU.PerDay != 1 || a.CPU.Now != 13 || a.CPU.Capacity != 20 {
		t.Fatalf("cluster a: %+v", a)
	}
	want := t0.Add(14 * 24 * time.Hour)
	if a.RunsOutAt == nil || !a.RunsOutAt.Equal(want) || *a.CPU.DaysLeft != 7 {
		t.Fatalf("runs out at %v (%v days), want %v", a.RunsOutAt, a.CPU.DaysLeft, want)
	}
	if a.Memory.RunsOutAt != nil || !strings.Contains(a.Memory.Note, "not growing") {
		t.Fatalf("memory is flat: %+v", a.Memory)
	}
	if fs[1].RunsOutAt != nil || fs[1].CPU.Note != "no history" {
		t.Fatalf("cluster b has no history: %+v", fs[1])
	}
	// At 65% of capacity (13 cores) cluster a is already over.
	fs, err = Forecast(snap, Options{TargetUtilization: 0.65})
	if err != nil {
		t.Fatal(err)
	}
	if fs[0].CPU.Note != "already over capacity" || *fs[0].CPU.DaysLeft != 0 {
		t.Fatalf("%+v", fs[0].CPU)
	}
}
