package network

import (
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestNetworkValidation: each bad network or subnet is refused with an
// error naming its field, and nothing is made.
func TestNetworkValidation(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		what        string
		req         api.NetworkCreate
		super       bool
		code, field string
	}{
		{"bad name", api.NetworkCreate{Name: "Web_1"}, false, api.CodeInvalid, "name"},
		{"unknown type", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{Type: "vlan"}}, false, api.CodeInvalid, "type"},
		{"bridged by a member", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br0"}}, false, api.CodeForbidden, ""},
		{"external by a member", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{External: true}}, false, api.CodeForbidden, ""},
		{"bridged with no bridge", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged}}, true, api.CodeInvalid, "bridge"},
		{"overlay with a bridge", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{Bridge: "br0"}}, false, api.CodeInvalid, "bridge"},
		{"external overlay", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{External: true}}, true, api.CodeInvalid, "external"},
		{"tiny MTU", api.NetworkCreate{Name: "n", NetworkSpec: api.NetworkSpec{MTU: 100}}, false, api.CodeInvalid, "mtu"},
	} {
		_, err := e.m.CreateNetwork(ctx, "pa", tc.req, tc.super)
		wantErr(t, tc.what, err, tc.code, tc.field)
	}
	if n, _, _ := e.m.Usage("pa"); n != 0 {
		t.Fatalf("%d networks made by refused requests", n)
	}

	e.mustNetwork("pa", "web", "10.0.0.0/24")
	for _, tc := range []struct {
		what  string
		spec  api.SubnetSpec
		field string
	}{
		{"overlapping subnet", api.SubnetSpec{Network: "web", CIDR: "10.0.0.128/25"}, "cidr"},
		{"gateway outside its CIDR", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Gateway: "10.2.0.1"}, "gateway"},
		{"gateway on the broadcast address", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Gateway: "10.1.0.255"}, "gateway"},
		{"host bits", api.SubnetSpec{Network: "web", CIDR: "10.1.0.5/24"}, "cidr"},
		{"no CIDR", api.SubnetSpec{Network: "web"}, "cidr"},
		{"/31", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/31"}, "cidr"},
		{"no such network", api.SubnetSpec{Network: "ghost", CIDR: "10.1.0.0/24"}, "network"},
		{"pool outside", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Pools: []api.IPRange{{Start: "10.1.0.10", End: "10.1.1.10"}}}, "pools[0].end"},
		{"pools overlapping", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Pools: []api.IPRange{{Start: "10.1.0.10", End: "10.1.0.20"}, {Start: "10.1.0.15", End: "10.1.0.30"}}}, "pools[1]"},
		{"bad DNS server", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", DNSServers: []string{"8.8.8.8", "dns.example"}}, "dnsServers[1]"},
		{"next hop off the link", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Routes: []api.Route{{Destination: "192.168.0.0/16", NextHop: "10.9.0.1"}}}, "routes[0].nextHop"},
		{"route of the other family", api.SubnetSpec{Network: "web", CIDR: "10.1.0.0/24", Routes: []api.Route{{Destination: "fd00::/8", NextHop: "10.1.0.1"}}}, "routes[0].destination"},
	} {
		_, err := e.m.CreateSubnet(ctx, "pa", api.SubnetCreate{Name: "s2", SubnetSpec: tc.spec})
		wantErr(t, tc.what, err, api.CodeInvalid, tc.field)
	}
	if _, ok := e.subnets.Get("pa/s2"); ok {
		t.Fatal("a refused subnet was made")
	}
	// Another project's network may use the same CIDR; another subnet of
	// the same network a disjoint one, IPv6 too.
	e.mustNetwork("pb", "web", "10.0.0.0/24")
	if _, err := e.m.CreateSubnet(ctx, "pa", api.SubnetCreate{Name: "web-v6", SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "fd00:1::/64"}}); err != nil {
		t.Fatalf("an IPv6 subnet beside the IPv4 one: %v", err)
	}
	s, _ := e.subnets.Get("pa/web-v4")
	if s.Spec.Gateway != "10.0.0.1" || *s.Spec.DHCP != true || len(s.Spec.Pools) != 1 || s.Spec.Pools[0] != (api.IPRange{Start: "10.0.0.1", End: "10.0.0.254"}) {
		t.Errorf("defaults of a subnet: %+v", s.Spec)
	}
	// Two overlay networks never share a VXLAN id.
	a, _ := e.networks.Get("pa/web")
	b, _ := e.networks.Get("pb/web")
	if a.Status.VNI == 0 || a.Status.VNI == b.Status.VNI {
		t.Errorf("VNIs %d and %d", a.Status.VNI, b.Status.VNI)
	}
}

// TestOverlappingSubnetsAtOnce: of many overlapping subnets created at
// once in one network, exactly one is made.
func TestOverlappingSubnetsAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.mustNetwork("pa", "web", "")
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.m.CreateSubnet(ctx, "pa", api.SubnetCreate{Name: "s" + string(rune('a'+i)), SubnetSpec: api.SubnetSpec{Network: "web", CIDR: "10.0.0.0/" + []string{"24", "25", "23", "26"}[i%4]}})
			errs <- err
		}()
	}
	made := 0
	for range n {
		if err := <-errs; err == nil {
			made++
		} else if ae := apiErr(t, err); ae.Field != "cidr" {
			t.Errorf("a refused overlapping subnet: %v", err)
		}
	}
	if made != 1 {
		t.Fatalf("%d overlapping subnets made, want 1", made)
	}
}

// TestPortValidation: ports with bad or taken addresses, MACs or security
// groups are refused naming the field; nothing is left behind.
func TestPortValidation(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	first, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "p1", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.5"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if first.Spec.FixedIPs[0] != (api.FixedIP{Subnet: "web-v4", IP: "10.0.0.5"}) || !strings.HasPrefix(first.Spec.MAC, "52:54:00:") ||
		len(first.Spec.SecurityGroups) != 1 || first.Spec.SecurityGroups[0] != DefaultGroup {
		t.Errorf("port p1: %+v", first.Spec)
	}
	if _, err := e.m.CreateSecurityGroup(ctx, "pb", api.SecurityGroupCreate{Name: "theirs"}); err != nil {
		t.Fatal(err)
	}
	claims := len(e.m.claimed(""))
	for _, tc := range []struct {
		what        string
		spec        api.PortSpec
		code, field string
	}{
		{"an IP outside the subnet", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.9.0.5"}}}, api.CodeInvalid, "fixedIPs[0].ip"},
		{"an IP taken", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.5"}}}, api.CodeConflict, "fixedIPs[0].ip"},
		{"the gateway", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.1"}}}, api.CodeInvalid, "fixedIPs[0].ip"},
		{"the broadcast address", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.255"}}}, api.CodeInvalid, "fixedIPs[0].ip"},
		{"one IP twice", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.7"}, {IP: "10.0.0.7"}}}, api.CodeInvalid, "fixedIPs[1].ip"},
		{"a subnet of no network", api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{Subnet: "ghost"}}}, api.CodeInvalid, "fixedIPs[0].subnet"},
		{"a MAC taken", api.PortSpec{Network: "web", MAC: strings.ToUpper(first.Spec.MAC)}, api.CodeConflict, "mac"},
		{"a multicast MAC", api.PortSpec{Network: "web", MAC: "01:00:5e:00:00:01"}, api.CodeInvalid, "mac"},
		{"a security group of another project", api.PortSpec{Network: "web", SecurityGroups: []string{"theirs"}}, api.CodeInvalid, "securityGroups[0]"},
		{"a security group named by key", api.PortSpec{Network: "web", SecurityGroups: []string{"pb/theirs"}}, api.CodeInvalid, "securityGroups[0]"},
		{"groups without port security", api.PortSpec{Network: "web", SecurityGroups: []string{"default"}, PortSecurity: new(bool)}, api.CodeInvalid, "securityGroups"},
		{"another project's network", api.PortSpec{Network: "ghost"}, api.CodeInvalid, "network"},
		{"a VM set by the request", api.PortSpec{Network: "web", VM: "pa/x"}, api.CodeInvalid, "vm"},
	} {
		_, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "p2", PortSpec: tc.spec})
		wantErr(t, tc.what, err, tc.code, tc.field)
	}
	if _, ok := e.ports.Get("pa/p2"); ok {
		t.Fatal("a refused port was made")
	}
	if got := len(e.m.claimed("")); got != claims {
		t.Fatalf("refused ports left %d claims behind", got-claims)
	}
	// Deleting the port frees its address for the next.
	if err := e.m.DeletePort(ctx, "pa", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreatePort(ctx, "pa", api.PortCreate{Name: "p3", PortSpec: api.PortSpec{Network: "web", FixedIPs: []api.FixedIP{{IP: "10.0.0.5"}}}}); err != nil {
		t.Fatalf("the freed address: %v", err)
	}
	// A network in use is not deleted; its subnet neither.
	if err := e.m.DeleteNetwork(ctx, "pa", "web"); err == nil || apiErr(t, err).Code != api.CodeConflict {
		t.Errorf("deleting a network in use: %v, want a conflict", err)
	}
	if err := e.m.DeleteSubnet(ctx, "pa", "web-v4"); err == nil || apiErr(t, err).Code != api.CodeConflict {
		t.Errorf("deleting a subnet in use: %v, want a conflict", err)
	}
	if err := e.m.DeletePort(ctx, "pa", "p3"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteNetwork(ctx, "pa", "web"); err != nil {
		t.Fatalf("deleting an unused network: %v", err)
	}
	if _, ok := e.subnets.Get("pa/web-v4"); ok {
		t.Error("the network's subnet outlived it")
	}
	for _, c := range e.m.claimed("") {
		if strings.HasPrefix(c.Owner, "pa/") {
			t.Errorf("claim %s (%s) outlived its network", c.Name, c.Owner)
		}
	}
}

// TestSecurityGroupRules: rules are checked one by one, a request of too
// many is refused whole, a group in use or named is not deleted.
func TestSecurityGroupRules(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	g, err := e.m.CreateSecurityGroup(ctx, "pa", api.SecurityGroupCreate{Name: "web", SecurityGroupSpec: api.SecurityGroupSpec{
		Rules: []api.SecurityGroupRule{{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 80}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := g.Spec.Rules[0]; r.ID == "" || r.PortMax != 80 || r.EtherType != api.EtherTypeIPv4 {
		t.Errorf("rule defaults: %+v", r)
	}
	many := make([]api.SecurityGroupRule, 5000)
	for i := range many {
		many[i] = api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 1 + i}
	}
	_, err = e.m.AddRules(ctx, "pa", "web", many)
	wantErr(t, "5000 rules", err, api.CodeInvalid, "rules")
	_, err = e.m.CreateSecurityGroup(ctx, "pa", api.SecurityGroupCreate{Name: "big", SecurityGroupSpec: api.SecurityGroupSpec{Rules: many}})
	wantErr(t, "a group of 5000 rules", err, api.CodeInvalid, "rules")
	for _, tc := range []struct {
		what  string
		rule  api.SecurityGroupRule
		code  string
		field string
	}{
		{"no direction", api.SecurityGroupRule{}, api.CodeInvalid, "rules[0].direction"},
		{"ports on icmp", api.SecurityGroupRule{Direction: "ingress", Protocol: "icmp", PortMin: 1}, api.CodeInvalid, "rules[0].portMin"},
		{"ports reversed", api.SecurityGroupRule{Direction: "ingress", Protocol: "tcp", PortMin: 90, PortMax: 80}, api.CodeInvalid, "rules[0].portMax"},
		{"both remotes", api.SecurityGroupRule{Direction: "ingress", RemoteCIDR: "10.0.0.0/8", RemoteGroup: "web"}, api.CodeInvalid, "rules[0].remoteGroup"},
		{"CIDR of the other family", api.SecurityGroupRule{Direction: "ingress", RemoteCIDR: "fd00::/8"}, api.CodeInvalid, "rules[0].remoteCIDR"},
		{"a remote group of another project", api.SecurityGroupRule{Direction: "ingress", RemoteGroup: "theirs"}, api.CodeInvalid, "rules[0].remoteGroup"},
		{"the same rule again", api.SecurityGroupRule{Direction: "ingress", Protocol: "tcp", PortMin: 80, PortMax: 80}, api.CodeConflict, "rules[0]"},
		{"an id of the request", api.SecurityGroupRule{ID: "abcdef0123", Direction: "egress"}, api.CodeInvalid, "rules[0].id"},
	} {
		_, err := e.m.AddRules(ctx, "pa", "web", []api.SecurityGroupRule{tc.rule})
		wantErr(t, tc.what, err, tc.code, tc.field)
	}
	if cur, _ := e.groups.Get("pa/web"); len(cur.Spec.Rules) != 1 {
		t.Fatalf("refused rules were added: %d rules", len(cur.Spec.Rules))
	}
	// A group named as another's remote is not deleted until the rule goes.
	if _, err := e.m.CreateSecurityGroup(ctx, "pa", api.SecurityGroupCreate{Name: "db", SecurityGroupSpec: api.SecurityGroupSpec{
		Rules: []api.SecurityGroupRule{{Direction: api.DirectionIngress, RemoteGroup: "web"}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteSecurityGroup(ctx, "pa", "web"); err == nil || apiErr(t, err).Code != api.CodeConflict {
		t.Errorf("deleting a group another names: %v, want a conflict", err)
	}
	db, _ := e.groups.Get("pa/db")
	if _, err := e.m.RemoveRule(ctx, "pa", "db", db.Spec.Rules[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteSecurityGroup(ctx, "pa", "web"); err != nil {
		t.Errorf("deleting a group no longer named: %v", err)
	}
	if err := e.m.DeleteSecurityGroup(ctx, "pa", DefaultGroup); err == nil {
		t.Error("the default group was deleted on its own")
	}
}
