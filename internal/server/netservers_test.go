package server

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestTwoServersAllocateAddresses: two servers of one installation (the
// second uses the first's etcd, with an index of its own, and its CA) take 100 port
// creates at once through their APIs, in a /26: exactly its 61 addresses
// are handed out, each once; the other creates are refused as a full
// network.
func TestTwoServersAllocateAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, _ := e.second(t, Config{})
	member := e.as(api.RoleMember, "pa")
	onB, err := client.New(client.Config{URL: "https://" + b.Addr().String(), Token: e.tokens[api.RoleMember], CAFile: b.CAFile(), Project: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateNetwork(ctx, api.NetworkCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.CreateSubnet(ctx, api.SubnetCreate{Name: "web-v4", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/26"}}); err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 10*time.Second, "the second server sees the subnet", func() error {
		_, err := onB.GetSubnet(ctx, "web-v4")
		return err
	})
	clients := []*client.Client{member, onB}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var addrs []string
	var refused []error
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := clients[i%2].CreatePort(ctx, api.PortCreate{Name: fmt.Sprintf("p%d", i), PortSpec: api.PortSpec{Network: "web"}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
				return
			}
			addrs = append(addrs, p.Spec.FixedIPs[0].IP)
		}()
	}
	wg.Wait()
	if len(addrs) != 61 {
		t.Errorf("%d ports made, want exactly 61 (refusals: %v)", len(addrs), refused)
	}
	seen := map[string]bool{}
	pool := netip.MustParsePrefix("10.0.0.0/26")
	for _, a := range addrs {
		if seen[a] || !pool.Contains(netip.MustParseAddr(a)) || a == "10.0.0.1" {
			t.Errorf("address %s handed out twice, or outside the pool", a)
		}
		seen[a] = true
	}
	for _, err := range refused {
		if got, field := netField(err); got != 409 || field != "fixedIPs" {
			t.Errorf("a refused create: %v, want 409 naming fixedIPs", err)
		}
	}
}
