package network

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// createMany creates n ports at once on network web of project pa through
// the managers in turn, and returns the addresses of those made and the
// errors of the others.
func createMany(t *testing.T, ms []*Manager, n int, prefix string) (addrs []string, errs []error) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := ms[i%len(ms)].CreatePort(ctx, "pa", api.PortCreate{Name: fmt.Sprintf("%s%d", prefix, i), PortSpec: api.PortSpec{Network: "web"}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			addrs = append(addrs, p.Spec.FixedIPs[0].IP)
		}()
	}
	wg.Wait()
	return addrs, errs
}

// checkAllocation: exactly the pool's size made, every address once and
// inside the pool, every other create refused as a full network.
func checkAllocation(t *testing.T, addrs []string, errs []error, pool int, cidr string) {
	t.Helper()
	if len(addrs) != pool {
		t.Errorf("%d ports made, want exactly the pool's %d (errors: %v)", len(addrs), pool, errs)
	}
	seen := map[string]bool{}
	prefix := netip.MustParsePrefix(cidr)
	for _, a := range addrs {
		if seen[a] {
			t.Errorf("address %s given to two ports", a)
		}
		seen[a] = true
		if ip := netip.MustParseAddr(a); !prefix.Contains(ip) {
			t.Errorf("address %s outside %s", a, prefix)
		}
	}
	for _, err := range errs {
		if ae := apiErr(t, err); ae.Code != api.CodeConflict || ae.Field != "fixedIPs" {
			t.Errorf("a refused create: %v, want a conflict on fixedIPs (the network is full)", err)
		}
	}
}

// TestConcurrentPortCreates: 100 ports created at once in a /26 (61
// addresses: 64 less the network, broadcast and gateway addresses): 61
// are made, each with its own address, 39 refused.
func TestConcurrentPortCreates(t *testing.T) {
	e := newEnv(t)
	e.mustNetwork("pa", "web", "10.0.0.0/26")
	addrs, errs := createMany(t, []*Manager{e.m}, 100, "p")
	checkAllocation(t, addrs, errs, 61, "10.0.0.0/26")
	if got := len(e.m.claimed(ipPrefix(mustGet(t, e.networks, "pa/web").UID))); got != 61 {
		t.Errorf("%d address claims, want 61", got)
	}
}

// TestTwoServersAllocate: two servers over one etcd, each with its own
// index that learns the other's writes late, create ports at once: still
// no address twice, and the pool used exactly.
func TestTwoServersAllocate(t *testing.T) {
	a := newEnv(t)
	b := newEnv(t, a.st.Endpoints()...)
	a.mustNetwork("pa", "web", "10.0.0.0/26")
	waitFor(t, "the second server to see the subnet", func() bool { _, ok := b.subnets.Get("pa/web-v4"); return ok })
	addrs, errs := createMany(t, []*Manager{a.m, b.m}, 100, "p")
	checkAllocation(t, addrs, errs, 61, "10.0.0.0/26")
	// Both indexes agree in the end.
	waitFor(t, "both servers to see 61 ports", func() bool {
		_, pa, _ := a.m.Usage("pa")
		_, pb, _ := b.m.Usage("pa")
		return pa == 61 && pb == 61
	})
}

// TestQuotaAcrossServers: two servers over one etcd create ports,
// networks and floating IPs of one project at once under its quota: the
// quota holds exactly, as each admission is held by the transaction that
// writes what it admits (no lock of one process could hold it).
func TestQuotaAcrossServers(t *testing.T) {
	a := newEnv(t)
	b := newEnv(t, a.st.Endpoints()...)
	ctx := testCtx(t)
	a.mustNetwork("pa", "web", "10.0.0.0/24")
	p := mustGet(t, a.projects, "pa")
	q := store.Clone(p)
	five, three := int64(5), int64(3)
	q.Spec.Quota.Ports, q.Spec.Quota.Networks = &five, &three
	if _, err := a.projects.Update(ctx, "pa", q, p.Version); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second server to see the quota and the subnet", func() bool {
		p, ok := b.projects.Get("pa")
		_, sok := b.subnets.Get("pa/web-v4")
		return ok && p.Spec.Quota.Ports != nil && sok
	})
	addrs, errs := createMany(t, []*Manager{a.m, b.m}, 30, "p")
	if len(addrs) != 5 {
		t.Errorf("%d ports made under a quota of 5 (errors: %v)", len(addrs), errs)
	}
	for _, err := range errs {
		if ae := apiErr(t, err); ae.Code != api.CodeUnprocessable || ae.Details["quota"] != "ports" {
			t.Errorf("a refused port: %v, want 422 naming the ports quota", err)
		}
	}
	// Networks: one is used, two more fit.
	var mu sync.Mutex
	var wg sync.WaitGroup
	made := 0
	for i := range 12 {
		wg.Go(func() {
			m := []*Manager{a.m, b.m}[i%2]
			_, err := m.CreateNetwork(ctx, "pa", api.NetworkCreate{Name: fmt.Sprintf("n%d", i)}, false)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				made++
			case apiErr(t, err).Details["quota"] != "networks":
				t.Errorf("a refused network: %v, want 422 naming the networks quota", err)
			}
		})
	}
	wg.Wait()
	if made != 2 {
		t.Errorf("%d networks made with 1 of a quota of 3 used, want 2", made)
	}
	waitFor(t, "both servers to count 5 ports and 3 networks", func() bool {
		an, ap, _ := a.m.Usage("pa")
		bn, bp, _ := b.m.Usage("pa")
		return ap == 5 && bp == 5 && an == 3 && bn == 3
	})
}
