package vsphere

import (
	"math"
	"testing"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// setQuickStats sets a VM's quick statistics in the simulator, whose VMs
// report none.
func (e *simEnv) setQuickStats(t testing.TB, id string, cpuMHz, hostMemMiB, guestMemMiB int32) {
	t.Helper()
	ctx := e.model.Service.Context
	obj := ctx.Map.Get(vmRef(id))
	ctx.Map.AtomicUpdate(ctx, obj, []types.PropertyChange{
		{Name: "summary.quickStats.overallCpuUsage", Val: cpuMHz},
		{Name: "summary.quickStats.hostMemoryUsage", Val: hostMemMiB},
		{Name: "summary.quickStats.guestMemoryUsage", Val: guestMemMiB},
	})
}

// TestUsageQuickStats reads the VMs' and hosts' quick statistics from
// vcsim: a VM's MHz over its host's MHz per core, the host memory it
// consumes (its guest's when the host reports none), only running VMs.
func TestUsageQuickStats(t *testing.T) {
	m := simulator.VPX()
	m.Machine = 3
	e := newSim(t, m)
	p := e.connect(t)
	ctx := testCtx(t)
	vms := e.vms(t, "name", "runtime.host", "runtime.powerState")
	if len(vms) < 3 {
		t.Fatalf("vcsim has %d vms", len(vms))
	}
	busy, guestOnly, off := vms[0], vms[1], vms[2]
	e.setQuickStats(t, busy.Self.Value, 2294*3/2, 1536, 700)
	e.setQuickStats(t, guestOnly.Self.Value, 0, 0, 300)
	done(t)(e.vmByName(t, off.Name).PowerOff(ctx))

	u, err := p.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]provider.VMUsage{}
	for _, v := range u.VMs {
		got[v.ID] = v
	}
	if _, ok := got[off.Self.Value]; ok {
		t.Errorf("a stopped vm has usage: %+v", got[off.Self.Value])
	}
	b, ok := got[busy.Self.Value]
	if !ok {
		t.Fatalf("no usage of running vm %s: %+v", busy.Name, u.VMs)
	}
	// vcsim's hosts run at 2294 MHz a core.
	if math.Abs(b.CPUCores-1.5) > 1e-9 || b.MemoryBytes != 1536<<20 || b.Cumulative {
		t.Errorf("busy vm: %+v, want 1.5 cores and 1536 MiB", b)
	}
	if g := got[guestOnly.Self.Value]; g.CPUCores != 0 || g.MemoryBytes != 300<<20 {
		t.Errorf("vm with only guest memory: %+v, want 0 cores and 300 MiB", g)
	}
	if len(u.Hosts) == 0 {
		t.Fatal("no host usage")
	}
	for _, h := range u.Hosts {
		// vcsim's hosts report 67 MHz and 1404 MiB.
		if math.Abs(h.CPUCores-67.0/2294) > 1e-9 || h.MemoryBytes != 1404<<20 {
			t.Errorf("host %s: %+v", h.ID, h)
		}
	}
}
