package network

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
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
