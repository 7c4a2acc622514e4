package libvirt

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestUsageDomainStats reads a running test guest's cumulative CPU time
// and memory from the real libvirtd: the CPU time grows between two
// readings, the memory is the guest's, and a defined but stopped domain
// is not read.
func TestUsageDomainStats(t *testing.T) {
	requireDaemon(t)
	guest.RequireQEMU(t)
	g := guest.Build(t)
	raw := rawConn(t, systemURI)
	p := connect(t, systemURI)
	ctx := context.Background()

	dir := t.TempDir()
	var ids []string
	for _, prefix := range []string{"pv-usage", "pv-usage-off"} {
		name := uniqueName(prefix)
		disk := filepath.Join(dir, name+".qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-b", g.Disk, "-F", "qcow2", disk)
		t.Cleanup(func() { removeDomain(raw, name) })
		dom, err := raw.DomainDefineXML(guestDomainXML(t, name, g, disk, filepath.Join(dir, name+".log")))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, uuidString(dom.UUID))
		if prefix == "pv-usage" {
			if err := raw.DomainCreate(dom); err != nil {
				t.Fatal(err)
			}
		}
	}
	on, off := ids[0], ids[1]
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}

	read := func() provider.VMUsage {
		t.Helper()
		u, err := p.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(u.Hosts) != 0 {
			t.Errorf("libvirt reads no host usage, got %+v", u.Hosts)
		}
		var found *provider.VMUsage
		for i, v := range u.VMs {
			if v.ID == off {
				t.Errorf("stopped domain read: %+v", v)
			}
			if v.ID == on {
				found = &u.VMs[i]
			}
		}
		if found == nil {
			t.Fatalf("running domain %s not read: %+v", on, u.VMs)
		}
		return *found
	}
	first := read()
	// The guest boots under the accelerator: it uses CPU at once.
	deadline := time.Now().Add(10 * time.Second)
	second := read()
	for second.CPUSeconds <= first.CPUSeconds && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		second = read()
	}
	if !first.Cumulative || first.CPUSeconds <= 0 || second.CPUSeconds <= first.CPUSeconds {
		t.Errorf("cpu time %+v then %+v: want cumulative and growing", first, second)
	}
	if second.MemoryBytes <= 0 || second.MemoryBytes > 1<<30 {
		t.Errorf("memory %d bytes: want some of the guest's 256 MiB (with QEMU's own)", second.MemoryBytes)
	}
	if second.Host != inv.Hosts[0].ID {
		t.Errorf("host %q, want the inventory's %q", second.Host, inv.Hosts[0].ID)
	}
	t.Logf("cpu %.3fs then %.3fs, memory %d MiB", first.CPUSeconds, second.CPUSeconds, second.MemoryBytes>>20)
}

// TestDomainUsageParams reads the statistics libvirt names, preferring the
// resident set to the balloon's size, and skips a domain without CPU time.
func TestDomainUsageParams(t *testing.T) {
	p := func(f string, v uint64) golibvirt.TypedParam {
		return golibvirt.TypedParam{Field: f, Value: golibvirt.TypedParamValue{D: 4, I: v}}
	}
	u, ok := domainUsage([]golibvirt.TypedParam{p("cpu.time", 2_500_000_000), p("balloon.current", 262144), p("balloon.rss", 100000)})
	if !ok || u.CPUSeconds != 2.5 || !u.Cumulative || u.MemoryBytes != 100000<<10 {
		t.Errorf("%+v %v", u, ok)
	}
	u, ok = domainUsage([]golibvirt.TypedParam{p("cpu.time", 1), p("balloon.current", 262144)})
	if !ok || u.MemoryBytes != 262144<<10 {
		t.Errorf("without rss: %+v %v", u, ok)
	}
	if _, ok := domainUsage([]golibvirt.TypedParam{p("balloon.rss", 1)}); ok {
		t.Error("a domain without cpu.time was read")
	}
}
