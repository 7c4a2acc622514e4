package server

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// TestProviderUsageHistory: the leading server samples a vCenter's
// (VMware's simulator, in this process) VMs' and hosts' quick statistics
// into its provider history; the usage API reads a provider VM's and
// host's points back, the VM's project alone sees the VM's, plans size
// the VM from them, and the balancer's reader reads them.
func TestProviderUsageHistory(t *testing.T) {
	t.Parallel()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	defer m.Remove()
	// vcsim's VMs report no quick statistics: each uses one core of its
	// host's 2294 MHz ones and 512 MiB.
	sctx := m.Service.Context
	for _, ref := range sctx.Map.AllReference("VirtualMachine") {
		sctx.Map.AtomicUpdate(sctx, sctx.Map.Get(ref.Reference()), []types.PropertyChange{
			{Name: "summary.quickStats.overallCpuUsage", Val: int32(2294)},
			{Name: "summary.quickStats.hostMemoryUsage", Val: int32(512)},
		})
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword("admin", "vcsim-pw")}
	sim := m.Service.NewServer()
	defer sim.Close()
	u := *sim.URL
	u.User = nil
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sim.Certificate().Raw}))

	e := newEnv(t, Config{ProviderFactory: registry.New, ProviderResync: time.Minute, UsageInterval: 100 * time.Millisecond})
	ctx := context.Background()
	if _, err := e.super.CreateProvider(ctx, api.ProviderCreate{Name: "vc1", Type: api.ProviderVSphere, URL: u.String(),
		Username: "admin", Password: "vcsim-pw", CACert: ca, Project: "pa"}); err != nil {
		t.Fatal(err)
	}
	pa := e.as(api.RoleViewer, "pa")
	var vm api.VM
	ctlEventually(t, 20*time.Second, "a running vc1 vm mirrored into pa", func() error {
		l, err := pa.ListVMs(ctx, api.ListOptions{Provider: "vc1"})
		if err != nil {
			return err
		}
		for _, v := range l.Items {
			if v.Status.PowerState == api.PowerRunning && v.Spec.Host != "" {
				vm = v
				return nil
			}
		}
		return errString("none yet")
	})
	var h *api.UsageHistory
	ctlEventually(t, 20*time.Second, "points of "+vm.Name, func() error {
		var err error
		if h, err = pa.VMUsage(ctx, vm.Name, client.UsageRange{Since: "1h"}); err == nil && len(h.Points) == 0 {
			return errString("no points yet")
		}
		return err
	})
	p := h.Points[0]
	if math.Abs(p.CPU-1) > 1e-6 || p.MemoryBytes != 512<<20 || p.Samples < 1 || h.StepSeconds != 300 || h.CPUs != vm.Spec.VCPUs {
		t.Errorf("%s's history: %+v, point %+v; want 1 core and 512 MiB in 5-minute steps", vm.Name, h, p)
	}

	// The host's own quick statistics (vcsim's: 67 MHz, 1404 MiB).
	var hu *api.UsageHistory
	ctlEventually(t, 20*time.Second, "points of host "+vm.Spec.Host, func() error {
		var err error
		if hu, err = e.super.HostUsage(ctx, vm.Spec.Host, client.UsageRange{Since: "1h"}); err == nil && len(hu.Points) == 0 {
			return errString("no points yet")
		}
		return err
	})
	if hp := hu.Points[0]; math.Abs(hp.CPU-67.0/2294) > 1e-6 || hp.MemoryBytes != 1404<<20 {
		t.Errorf("host %s's history: point %+v", vm.Spec.Host, hp)
	}

	// Tenancy: another project's member does not see pa's VM, nor its
	// history; the host's history is a superadmin's.
	if _, err := e.as("bob", "pb").VMUsage(ctx, vm.Name, client.UsageRange{}); client.ErrorCode(err) != api.CodeNotFound {
		t.Errorf("pb reading pa's provider vm's history: %v, want not found", err)
	}
	if _, err := e.as(api.RoleAdmin, "pa").HostUsage(ctx, vm.Spec.Host, client.UsageRange{}); client.ErrorCode(err) != api.CodeForbidden {
		t.Errorf("a project admin reading a provider host's history: %v, want forbidden", err)
	}

	// Plans of the live estate size the provider VM from its history.
	plan, err := e.super.PlanConsolidate(ctx, api.PlanRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var size *api.PlanAssignment
	for i := range plan.Placement {
		if plan.Placement[i].VM == vm.Key() {
			size = &plan.Placement[i]
		}
	}
	if size == nil || size.Source != "history" || math.Abs(size.Size.CPU-1) > 1e-3 {
		t.Errorf("%s in the plan: %+v (warnings %q)", vm.Key(), size, plan.Warnings)
	}
	d, err := e.s.UsageDemand().VMDemand(ctx, vm.Key(), time.Hour)
	if err != nil || math.Abs(d.CPU-1) > 1e-6 || d.MemoryBytes != 512<<20 || d.Points < 1 {
		t.Errorf("%s's demand: %+v %v", vm.Key(), d, err)
	}

	// Another server of the control plane keeps none of it: it answers 409
	// naming the leader.
	_, c2 := e.second(t, Config{Name: "usage-second", ProviderFactory: registry.New, UsageInterval: 100 * time.Millisecond})
	leaderName := e.s.ctl.Self().Name
	_, err = c2.WithProject("pa").VMUsage(ctx, vm.Name, client.UsageRange{})
	if client.ErrorCode(err) != api.CodeConflict || !strings.Contains(err.Error(), leaderName) {
		t.Errorf("a provider vm's history from another server: %v, want 409 naming %s", err, leaderName)
	}
	_, err = c2.HostUsage(ctx, vm.Spec.Host, client.UsageRange{})
	if client.ErrorCode(err) != api.CodeConflict || !strings.Contains(err.Error(), leaderName) {
		t.Errorf("a provider host's history from another server: %v, want 409 naming %s", err, leaderName)
	}
}

// TestProviderUsageRecord: cumulative CPU time (libvirt's) becomes cores
// from the second reading on, a restarted VM starts its count again, a
// provider without host readings gets each host's sum of its VMs only in
// rounds where each of them added a point, and what is not mirrored is
// not kept.
func TestProviderUsageRecord(t *testing.T) {
	st, err := usage.Open(t.TempDir(), usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ps := &providerSampler{store: st, last: map[string]cumulativeCPU{}, busy: map[string]bool{}}
	// A libvirt-like provider's mirrored host and two VMs.
	uids := map[string]string{"a": "uid-a", "b": "uid-b"}
	hosts := map[string]string{"H": "lv-host"}
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	round := func(at time.Duration, a, b float64) {
		t.Helper()
		u := &provider.Usage{VMs: []provider.VMUsage{
			{ID: "a", Host: "H", CPUSeconds: a, Cumulative: true, MemoryBytes: 100 << 20},
			{ID: "b", Host: "H", CPUSeconds: b, Cumulative: true, MemoryBytes: 50 << 20},
			{ID: "unmirrored", Host: "H", CPUSeconds: 1, Cumulative: true},
		}}
		if err := ps.recordAs("lv", t0.Add(at), u, uids, hosts); err != nil {
			t.Fatal(err)
		}
	}
	round(0, 10, 100)              // baseline
	round(time.Minute, 70, 130)    // a: 1 core, b: 0.5
	round(10*time.Minute, 100, 5)  // b restarted: no host point
	round(11*time.Minute, 130, 35) // a: 0.5, b: 0.5
	q := func(kind, id string) []usage.Point {
		pts, _, err := st.Query(kind, id, t0, t0.Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		return pts
	}
	a, b, h := q(usage.KindVM, "uid-a"), q(usage.KindVM, "uid-b"), q(usage.KindHost, "lv-host")
	if len(a) != 2 || a[0].CPU != 1 || a[0].MemoryBytes != 100<<20 || math.Abs(a[1].CPU-(30.0/540+0.5)/2) > 1e-6 || a[1].Samples != 2 {
		t.Errorf("vm a: %+v", a)
	}
	if len(b) != 2 || b[0].CPU != 0.5 || b[1].CPU != 0.5 || b[1].Samples != 1 {
		t.Errorf("vm b (restarted in the third round): %+v", b)
	}
	if len(h) != 2 || h[0].CPU != 1.5 || h[0].MemoryBytes != 150<<20 || h[1].CPU != 1 || h[1].Samples != 1 {
		t.Errorf("host: %+v", h)
	}
	for _, id := range []string{"unmirrored", "a"} {
		if pts := q(usage.KindVM, id); len(pts) != 0 {
			t.Errorf("series %q kept: %+v", id, pts)
		}
	}
	// A provider that reads its hosts' use: the host's own reading, not
	// the sum.
	if err := ps.recordAs("vc", t0.Add(30*time.Minute), &provider.Usage{
		VMs:   []provider.VMUsage{{ID: "a", Host: "H", CPUCores: 2}},
		Hosts: []provider.HostUsage{{ID: "H", CPUCores: 3, MemoryBytes: 1 << 30}},
	}, uids, hosts); err != nil {
		t.Fatal(err)
	}
	if h := q(usage.KindHost, "lv-host"); len(h) != 3 || h[2].CPU != 3 || h[2].MemoryBytes != 1<<30 {
		t.Errorf("host read by its provider: %+v", h)
	}
}

// TestProviderUsageSeriesBound: past the store's bound of series, VMs new
// to a round are not sampled (and say so), those sampled before go on,
// and a VM gone makes room: a larger estate does not evict, each round,
// series it writes again the next.
func TestProviderUsageSeriesBound(t *testing.T) {
	st, err := usage.Open(t.TempDir(), usage.Options{MaxSeries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ps := &providerSampler{store: st, last: map[string]cumulativeCPU{}, busy: map[string]bool{}, maxSeries: 2}
	uids := map[string]string{"a": "uid-a", "b": "uid-b", "c": "uid-c"}
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	round := func(i int, ids ...string) error {
		u := &provider.Usage{}
		for _, id := range ids {
			u.VMs = append(u.VMs, provider.VMUsage{ID: id, CPUCores: 1})
		}
		return ps.recordAs("vc", t0.Add(time.Duration(i)*time.Minute), u, uids, nil)
	}
	points := func(uid string) int {
		pts, _, err := st.Query(usage.KindVM, uid, t0, t0.Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range pts {
			n += p.Samples
		}
		return n
	}
	if err := round(0, "a", "b", "c"); err == nil || !strings.Contains(err.Error(), "1 vms and hosts not sampled") {
		t.Errorf("a round past the bound: %v", err)
	}
	// Those sampled go on, whatever order the provider lists them in.
	_ = round(1, "c", "b", "a")
	if pa, pb, pc := points("uid-a"), points("uid-b"), points("uid-c"); pa != 2 || pb != 2 || pc != 0 {
		t.Errorf("samples after two rounds: a %d, b %d, c %d; want 2, 2, 0", pa, pb, pc)
	}
	// a goes: c takes its place.
	_ = round(2, "c", "b")
	if err := round(3, "c", "b"); err != nil {
		t.Errorf("a round within the bound: %v", err)
	}
	if pc := points("uid-c"); pc != 2 {
		t.Errorf("c sampled %d times after a went, want 2", pc)
	}
}
