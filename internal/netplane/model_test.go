package netplane

import (
	"github.com/google/nftables"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func baseState() *api.HostNetworkState {
	w := &world{underlays: []string{"192.0.2.1", "192.0.2.2"}}
	w.net(api.HostNetwork{Key: "p1/a", ID: "0000000a01", Type: api.NetworkOverlay, VNI: 101,
		Subnets: []api.Subnet{subnet("p1", "a-v4", "a", "10.0.0.0/24")}})
	w.group(defaultGroup("p1", "00000000g1"))
	w.port(0, hostPort("p1", "a1", "00000000a1", "p1/a", "52:54:00:aa:00:01", "10.0.0.11", "p1/default"))
	w.port(1, hostPort("p1", "a2", "00000000a2", "p1/a", "52:54:00:aa:00:02", "10.0.0.12", "p1/default"))
	return w.state(0)
}

// TestCompileRefuses: what a host cannot make is refused with its reason,
// port by port or network by network; the rest is made.
func TestCompileRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(st *api.HostNetworkState)
		port   string // the port refused, "" for a network
		want   string
	}{
		{"multicast mac", func(st *api.HostNetworkState) { st.Ports[0].MAC = "01:00:5e:00:00:01" }, "p1/a1", "not a unicast"},
		{"bad mac", func(st *api.HostNetworkState) { st.Ports[0].MAC = "52:54:00:aa:00" }, "p1/a1", "not an Ethernet address"},
		{"ip outside", func(st *api.HostNetworkState) { st.Ports[0].FixedIPs[0].IP = "10.1.0.5" }, "p1/a1", "in none of its network's subnets"},
		{"gateway ip", func(st *api.HostNetworkState) { st.Ports[0].FixedIPs[0].IP = "10.0.0.1" }, "p1/a1", "gateway"},
		{"unknown group", func(st *api.HostNetworkState) { st.Ports[0].SecurityGroups = []string{"p1/nope"} }, "p1/a1", "security group p1/nope"},
		{"unknown network", func(st *api.HostNetworkState) { st.Ports[0].Network = "p1/nope" }, "p1/a1", "not in the host's state"},
		{"vni", func(st *api.HostNetworkState) { st.Networks[0].VNI = 1 << 24 }, "", "vni"},
		{"no underlay", func(st *api.HostNetworkState) { st.Underlay = "" }, "", "no underlay"},
		{"bridge name", func(st *api.HostNetworkState) {
			st.Networks[0].Type, st.Networks[0].Bridge = api.NetworkBridged, "br/../x"
		}, "", "not a device name"},
		{"our bridge name", func(st *api.HostNetworkState) {
			st.Networks[0].Type, st.Networks[0].Bridge = api.NetworkBridged, "pvbr0000000001"
		}, "", "named like a device Polyvisor makes"},
		{"overlapping subnets", func(st *api.HostNetworkState) {
			st.Networks[0].Subnets = append(st.Networks[0].Subnets, subnet("p1", "a-2", "a", "10.0.0.128/25"))
		}, "", "overlaps"},
		{"gateway outside", func(st *api.HostNetworkState) { st.Networks[0].Subnets[0].Spec.Gateway = "10.9.9.9" }, "", "gateway"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := baseState()
			c.change(st)
			d := compile(st)
			var got string
			if c.port != "" {
				got = d.portErrs[c.port]
			} else {
				got = d.netErrs["p1/a"]
				if d.portErrs["p1/a1"] == "" {
					t.Errorf("the port of a refused network is not refused")
				}
			}
			if !strings.Contains(got, c.want) {
				t.Fatalf("refusal %q, want it to say %q (ports %v, networks %v)", got, c.want, d.portErrs, d.netErrs)
			}
		})
	}
	// Two ports with one address on one network: the second is refused.
	st := baseState()
	dup := st.Ports[0]
	dup.Key, dup.ID, dup.MAC = "p1/a9", "00000000a9", "52:54:00:aa:00:09"
	st.Ports = append(st.Ports, dup)
	if d := compile(st); !strings.Contains(d.portErrs["p1/a9"], "10.0.0.11 is that of port p1/a1") || d.ports["p1/a1"] == nil {
		t.Fatalf("duplicate address: %v", d.portErrs)
	}
}

// TestRuleSetSize: the host's rules do not grow with ports or security
// group rules, only set elements do (one lookup per decision).
func TestRuleSetSize(t *testing.T) {
	rules := func(ports, rulesPerGroup int) (chains, rulesN, elems int) {
		st := benchState(ports, rulesPerGroup, 10)
		d := compile(st)
		for _, tab := range hostTables(newNFTParts(), d, map[string]int{}, 4789) {
			chains += len(tab.chains)
			for _, c := range tab.chains {
				rulesN += len(c.rules)
			}
			for _, s := range tab.sets {
				elems += len(s.elems)
			}
		}
		return
	}
	c1, r1, e1 := rules(10, 1000)
	c2, r2, e2 := rules(1000, 1000)
	if c1 != c2 || r1 != r2 {
		t.Fatalf("chains and rules grow with ports and rules: %d/%d for 10 ports and 1000 rules, %d/%d for 1000 ports and 10000", c1, r1, c2, r2)
	}
	if e2 <= e1 {
		t.Fatalf("set elements %d then %d", e1, e2)
	}
}

// TestElementBatches: set elements go to the kernel in lists whose netlink
// attribute length (16 bits) cannot wrap; a list that did silently kept
// only its first few dozen elements.
func TestElementBatches(t *testing.T) {
	d := compile(benchState(1000, 100, 10))
	var vm *nftSet
	for _, s := range inetTable(newNFTParts(), d, map[string]int{}, 4789).sets {
		if s.name == "in4" {
			vm = s
		}
	}
	var elems []nftables.SetElement
	for _, e := range vm.elems {
		elems = append(elems, e)
	}
	if len(elems) != 1000 {
		t.Fatalf("in4 has %d elements", len(elems))
	}
	total := 0
	for _, b := range batches(elems) {
		total += len(b)
		size := 0
		for _, e := range b {
			// NLA header, key and data nests, verdict: what the library encodes.
			size += 4 + 4 + 4 + len(e.Key) + 4 + 4 + 8 + 4 + len(e.VerdictData.Chain) + 4
		}
		if size >= 1<<16 {
			t.Fatalf("a batch of %d elements encodes to %d bytes", len(b), size)
		}
	}
	if total != len(elems) {
		t.Fatalf("batches hold %d of %d elements", total, len(elems))
	}
}
