package placement

import (
	"context"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestOwnLimitsFollowTheHosts: the largest own host's CPUs and memory,
// kept as hosts come, change and go, always match a scan of the fleet;
// a provider's hosts never count.
func TestOwnLimitsFollowTheHosts(t *testing.T) {
	p, _ := newTestPlacer(t, 8, 8192, "a", "b")
	ctx := context.Background()
	check := func(step string, cpus int, mem int64) {
		t.Helper()
		got, scan := p.OwnLimits(), p.Limits(OwnHosts)
		if got.MaxVCPUs != scan.MaxVCPUs || got.MaxMemoryMiB != scan.MaxMemoryMiB {
			t.Fatalf("%s: kept %d cpus %d MiB, a scan finds %d, %d", step, got.MaxVCPUs, got.MaxMemoryMiB, scan.MaxVCPUs, scan.MaxMemoryMiB)
		}
		if got.MaxVCPUs != cpus || got.MaxMemoryMiB != mem {
			t.Fatalf("%s: %d cpus %d MiB, want %d, %d", step, got.MaxVCPUs, got.MaxMemoryMiB, cpus, mem)
		}
	}
	check("two hosts alike", 8, 8192)
	put := func(name string, h *api.Host) {
		t.Helper()
		cur, ok := p.hosts.Get(name)
		var err error
		if ok {
			_, err = p.hosts.Update(ctx, name, h, cur.Version)
		} else {
			_, err = p.hosts.Create(ctx, name, h)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	host := func(name string, cpus int, mem int64, prov *api.ProviderRef) *api.Host {
		return &api.Host{Meta: api.Meta{Name: name}, Provider: prov, Status: api.HostStatus{State: api.HostReady, CPUs: cpus, MemoryMiB: mem}}
	}
	put("big", host("big", 64, 4096, nil))
	check("a host with more cpus", 64, 8192)
	put("vc-1", host("vc-1", 128, 1<<20, &api.ProviderRef{Name: "vc"}))
	check("a provider's host", 64, 8192)
	put("b", host("b", 8, 65536, nil))
	check("a host grown", 64, 65536)
	put("b", host("b", 8, 8192, nil))
	check("a host shrunk", 64, 8192)
	cur, _ := p.hosts.Get("big")
	if err := p.hosts.Delete(ctx, "big", cur.Version); err != nil {
		t.Fatal(err)
	}
	check("the largest gone", 8, 8192)
	for _, n := range []string{"a", "b"} {
		cur, _ := p.hosts.Get(n)
		if err := p.hosts.Delete(ctx, n, cur.Version); err != nil {
			t.Fatal(err)
		}
	}
	check("no own host", 0, 0)
	if l := p.OwnLimits(); l.HostExists("vc-1") || l.HostExists("a") {
		t.Fatal("a provider's or a deleted host exists among the own hosts")
	}
}
