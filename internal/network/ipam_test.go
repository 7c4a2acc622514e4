package network

import (
	"net/netip"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24":    "10.0.0.255",
		"10.0.0.64/26":   "10.0.0.127",
		"10.0.0.0/8":     "10.255.255.255",
		"fd00::/64":      "fd00::ffff:ffff:ffff:ffff",
		"fd00:1::/48":    "fd00:1:0:ffff:ffff:ffff:ffff:ffff",
		"fd00::/120":     "fd00::ff",
		"192.168.1.4/30": "192.168.1.7",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func plan(t *testing.T, cidr string) *subnetPlan {
	t.Helper()
	p, err := validateSubnetSpec(&api.SubnetSpec{CIDR: cidr})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPickExhaustsPool: a /26 hands out exactly its 61 addresses (64 but
// network, broadcast and gateway), each once, then none.
func TestPickExhaustsPool(t *testing.T) {
	p := plan(t, "10.0.0.0/26")
	taken := map[netip.Addr]bool{}
	for i := range 61 {
		a, ok := p.pick(taken, nil)
		if !ok {
			t.Fatalf("pick %d: pool empty", i)
		}
		if taken[a] || p.usable(a) != nil {
			t.Fatalf("pick %d: %s is taken or unusable (%v)", i, a, p.usable(a))
		}
		taken[a] = true
	}
	if a, ok := p.pick(taken, nil); ok {
		t.Fatalf("pick from a full pool: %s", a)
	}
	for _, bad := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.63"} {
		if taken[netip.MustParseAddr(bad)] {
			t.Errorf("%s was handed out", bad)
		}
	}
}

// TestPickAvoidsThenFallsBack: addresses other callers are trying are
// avoided while others are free, and used when nothing else is.
func TestPickAvoidsThenFallsBack(t *testing.T) {
	p := plan(t, "10.0.0.0/29") // .2-.6 usable
	taken := map[netip.Addr]bool{}
	avoid := map[netip.Addr]bool{}
	for _, s := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"} {
		avoid[netip.MustParseAddr(s)] = true
	}
	for range 20 {
		if a, _ := p.pick(taken, avoid); a.String() != "10.0.0.6" {
			t.Fatalf("pick = %s, want the one address not avoided", a)
		}
	}
	taken[netip.MustParseAddr("10.0.0.6")] = true
	if a, ok := p.pick(taken, avoid); !ok || !avoid[a] {
		t.Fatalf("pick with only avoided addresses free = %s %v", a, ok)
	}
}

// TestPickLargePool: an IPv6 /64 draws at random inside its pool.
func TestPickLargePool(t *testing.T) {
	p := plan(t, "fd00:1::/64")
	seen := map[netip.Addr]bool{}
	for range 100 {
		a, ok := p.pick(seen, nil)
		if !ok || seen[a] || p.usable(a) != nil {
			t.Fatalf("pick = %s %v (usable: %v)", a, ok, p.usable(a))
		}
		seen[a] = true
	}
}
