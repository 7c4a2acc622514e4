package netplane

import (
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// defaultGroup is a project's default security group as the server makes
// it: everything out, in only from the same group.
func defaultGroup(project, id string) api.HostSecurityGroup {
	key := project + "/default"
	return api.HostSecurityGroup{Key: key, ID: id, Rules: []api.SecurityGroupRule{
		{Direction: api.DirectionEgress, EtherType: api.EtherTypeIPv4},
		{Direction: api.DirectionEgress, EtherType: api.EtherTypeIPv6},
		{Direction: api.DirectionIngress, EtherType: api.EtherTypeIPv4, RemoteGroup: key},
		{Direction: api.DirectionIngress, EtherType: api.EtherTypeIPv6, RemoteGroup: key},
	}}
}

func hostPort(project, name, id, network, mac, ip string, groups ...string) api.HostPort {
	return api.HostPort{
		Key: project + "/" + name, ID: id, Network: network, MAC: mac,
		FixedIPs:       []api.FixedIP{{Subnet: network + "-v4", IP: ip}},
		SecurityGroups: groups, PortSecurity: true, VM: project + "/" + name,
	}
}

// twoProjects is a world of two hosts and two projects whose networks use
// the same CIDR: a1 and a2 of project p1 on network a, b1 and b2 of
// project p2 on network b, one of each on each host.
func twoProjects(l *lab) *world {
	w := &world{underlays: []string{l.hosts[0].underlay, l.hosts[1].underlay}}
	w.net(api.HostNetwork{Key: "p1/a", ID: "0000000a01", Type: api.NetworkOverlay, VNI: 101, MTU: 1450, NAT: true,
		Subnets: []api.Subnet{subnet("p1", "a-v4", "a", "10.0.0.0/24")}})
	w.net(api.HostNetwork{Key: "p2/b", ID: "0000000b01", Type: api.NetworkOverlay, VNI: 102, MTU: 1450,
		Subnets: []api.Subnet{subnet("p2", "b-v4", "b", "10.0.0.0/24")}})
	w.group(defaultGroup("p1", "00000000g1"))
	w.group(defaultGroup("p2", "00000000g2"))
	w.port(0, hostPort("p1", "a1", "00000000a1", "p1/a", "52:54:00:aa:00:01", "10.0.0.11", "p1/default"))
	w.port(1, hostPort("p1", "a2", "00000000a2", "p1/a", "52:54:00:aa:00:02", "10.0.0.12", "p1/default"))
	w.port(0, hostPort("p2", "b1", "00000000b1", "p2/b", "52:54:00:bb:00:01", "10.0.0.11", "p2/default"))
	w.port(1, hostPort("p2", "b2", "00000000b2", "p2/b", "52:54:00:bb:00:02", "10.0.0.13", "p2/default"))
	return w
}

func applyAll(l *lab, w *world) []Result {
	var out []Result
	for i, h := range l.hosts {
		out = append(out, h.apply(w.state(i)))
	}
	return out
}

// TestOverlayAcrossHosts: guests of one project on two hosts get their
// addresses by DHCP and reach each other across the overlay; a second
// project's network with the same CIDR is another world, on the same host
// and across hosts.
func TestOverlayAcrossHosts(t *testing.T) {
	l := newLab(t, 2)
	w := twoProjects(l)
	for i, res := range applyAll(l, w) {
		if len(res.Errors) > 0 {
			t.Fatalf("host %d: errors %v", i, res.Errors)
		}
		if len(res.Active) != 2 {
			t.Fatalf("host %d: active ports %v, want 2", i, res.Active)
		}
	}
	a1 := l.hosts[0].attach("a1", TapName("00000000a1"), "52:54:00:aa:00:01")
	a2 := l.hosts[1].attach("a2", TapName("00000000a2"), "52:54:00:aa:00:02")
	b1 := l.hosts[0].attach("b1", TapName("00000000b1"), "52:54:00:bb:00:01")
	b2 := l.hosts[1].attach("b2", TapName("00000000b2"), "52:54:00:bb:00:02")
	for _, c := range []struct {
		g    *guest
		want string
	}{{a1, "10.0.0.11"}, {a2, "10.0.0.12"}, {b1, "10.0.0.11"}, {b2, "10.0.0.13"}} {
		if got := c.g.dhcp(t); got != c.want {
			t.Fatalf("%s got %s by dhcp, want %s", c.g.ns, got, c.want)
		}
	}
	if !a1.ping("10.0.0.12") || !a2.ping("10.0.0.11") {
		t.Fatal("a1 and a2 do not reach each other across the overlay")
	}
	if !b1.ping("10.0.0.13") {
		t.Fatal("b1 does not reach b2 across the overlay")
	}
	if !a1.ping("10.0.0.1") {
		t.Fatal("a1 does not reach its gateway")
	}
	// b2's address exists only in project p2: a1 and a2 never reach it.
	if a1.ping("10.0.0.13") || a2.ping("10.0.0.13") {
		t.Fatal("a guest of p1 reaches b2 of p2")
	}
	// a1 and b1 share an address on one host: each talks to its own peer.
	a2.listen(t, 7000, "a2")
	b2.listen(t, 7000, "b2")
	ingress := api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 7000}
	_ = ingress
	if got := a1.connect("10.0.0.12", 7000); got != "hello from a2" {
		t.Fatalf("a1 to 10.0.0.12:7000 got %q", got)
	}
	if got := b1.connect("10.0.0.13", 7000); got != "hello from b2" {
		t.Fatalf("b1 to 10.0.0.13:7000 got %q", got)
	}
	if got := b1.connect("10.0.0.12", 7000); got != "" {
		t.Fatalf("b1 of p2 reached 10.0.0.12 of p1: %q", got)
	}

	// Applying the same states again changes nothing; neither does a
	// fresh Plane (an agent restarted), and the guests keep talking.
	for i, h := range l.hosts {
		if res := h.apply(w.state(i)); res.Changed != 0 {
			t.Errorf("host %d: applying the same state again changed %v", i, res.Changes)
		}
	}
	for i, h := range l.hosts {
		h.plane = h.newPlane()
		if res := h.apply(w.state(i)); res.Changed != 0 {
			t.Errorf("host %d: a restarted plane changed %v", i, res.Changes)
		}
	}
	if !a1.ping("10.0.0.12") {
		t.Fatal("a1 lost a2 after the restart")
	}
	_ = strings.Contains
	_ = time.Second
}
