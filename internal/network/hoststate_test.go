package network

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// render writes a host's state as text, without what is random (MACs,
// ids, VNIs are checked apart), to compare with what a test expects.
func render(st *api.HostNetworkState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %s underlay %s\n", st.Host, st.Underlay)
	for _, n := range st.Networks {
		var cidrs []string
		for _, s := range n.Subnets {
			cidrs = append(cidrs, s.Spec.CIDR+" gw "+s.Spec.Gateway)
		}
		vni := "-"
		if n.VNI > 0 {
			vni = "set"
		}
		fmt.Fprintf(&b, "network %s %s vni %s bridge %q mtu %d nat %v external %v subnets [%s]\n", n.Key, n.Type, vni, n.Bridge, n.MTU, n.NAT, n.External, strings.Join(cidrs, ", "))
	}
	for _, p := range st.Ports {
		var ips []string
		for _, f := range p.FixedIPs {
			ips = append(ips, f.Subnet+"="+f.IP)
		}
		fmt.Fprintf(&b, "port %s on %s ips [%s] groups %v security %v vm %s nic %d\n", p.Key, p.Network, strings.Join(ips, " "), p.SecurityGroups, p.PortSecurity, p.VM, p.NIC)
	}
	for _, r := range st.Remote {
		fmt.Fprintf(&b, "remote %s %v via %s (%s of %s)\n", r.Network, r.IPs, r.Underlay, r.Port, r.VM)
	}
	for _, g := range st.SecurityGroups {
		var rules []string
		for _, r := range g.Rules {
			s := r.Direction + " " + r.EtherType + " " + r.Protocol
			if r.PortMin > 0 {
				s += fmt.Sprintf(" %d-%d", r.PortMin, r.PortMax)
			}
			if r.RemoteGroup != "" {
				s += " from-group " + r.RemoteGroup
			}
			if r.RemoteCIDR != "" {
				s += " cidr " + r.RemoteCIDR
			}
			rules = append(rules, s)
		}
		fmt.Fprintf(&b, "group %s members %v rules [%s]\n", g.Key, g.Members, strings.Join(rules, "; "))
	}
	for _, f := range st.FloatingIPs {
		fmt.Fprintf(&b, "floating %s on %s -> %s %s\n", f.Address, f.Network, f.Port, f.FixedIP)
	}
	return b.String()
}

// checkState compares a host's state, rendered, with want, and checks
// what render leaves out: ids of 10 hex digits, MACs, VNIs.
func checkState(t *testing.T, what string, st *api.HostNetworkState, want string) {
	t.Helper()
	want = strings.TrimLeft(want, "\n")
	if got := render(st); got != want {
		t.Errorf("%s: the state of host %s is\n%s\nwant\n%s", what, st.Host, got, want)
	}
	hexID := regexp.MustCompile(`^[0-9a-f]{10}$`)
	for _, n := range st.Networks {
		if !hexID.MatchString(n.ID) || (n.Type == api.NetworkOverlay) != (n.VNI > 0) {
			t.Errorf("%s: network %s has id %q and VNI %d", what, n.Key, n.ID, n.VNI)
		}
	}
	for _, p := range st.Ports {
		if !hexID.MatchString(p.ID) || !strings.HasPrefix(p.MAC, "52:54:00:") {
			t.Errorf("%s: port %s has id %q and MAC %q", what, p.Key, p.ID, p.MAC)
		}
	}
	for _, g := range st.SecurityGroups {
		if !hexID.MatchString(g.ID) {
			t.Errorf("%s: group %s has id %q", what, g.Key, g.ID)
		}
	}
}

// stateOf recomputes and returns a host's state.
func stateOf(t *testing.T, h *Hub, host string) *api.HostNetworkState {
	t.Helper()
	h.Recompute()
	st, ok := h.State(testCtx(t), host)
	if !ok {
		t.Fatalf("no state for host %s", host)
	}
	return st
}

const defaultRules = "egress IPv4 any; egress IPv6 any; ingress IPv4 any from-group %[1]s/default; ingress IPv6 any from-group %[1]s/default"

func rulesOf(project string) string { return fmt.Sprintf(defaultRules, project) }

// TestHostStates: what each host is sent after each kind of change: VMs on
// networks of two projects with one CIDR, on two hosts; a rule change; a
// floating IP; a VM deleted; a host removed.
func TestHostStates(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	h := e.m.NewHub()
	e.host("h1", "192.0.2.1")
	e.host("h2", "192.0.2.2")
	e.host("h3", "192.0.2.3")
	e.mustNetwork("pa", "web", "10.0.0.0/24")
	e.mustNetwork("pb", "web", "10.0.0.0/24")
	for _, v := range []struct{ project, name, host, ip string }{
		{"pa", "a1", "h1", "10.0.0.11"}, {"pa", "a2", "h2", "10.0.0.12"}, {"pb", "b1", "h1", "10.0.0.11"},
	} {
		if _, err := e.vm(v.project, v.name, v.host, api.NIC{Network: "web", IP: v.ip}); err != nil {
			t.Fatal(err)
		}
	}
	h1 := `
host h1 underlay 192.0.2.1
network pa/web overlay vni set bridge "" mtu 1450 nat false external false subnets [10.0.0.0/24 gw 10.0.0.1]
network pb/web overlay vni set bridge "" mtu 1450 nat false external false subnets [10.0.0.0/24 gw 10.0.0.1]
port pa/a1-nic0 on pa/web ips [web-v4=10.0.0.11] groups [pa/default] security true vm pa/a1 nic 0
port pb/b1-nic0 on pb/web ips [web-v4=10.0.0.11] groups [pb/default] security true vm pb/b1 nic 0
remote pa/web [10.0.0.12] via 192.0.2.2 (pa/a2-nic0 of pa/a2)
group pa/default members [10.0.0.11 10.0.0.12] rules [` + rulesOf("pa") + `]
group pb/default members [10.0.0.11] rules [` + rulesOf("pb") + `]
`
	checkState(t, "two projects on one host", stateOf(t, h, "h1"), h1)
	h2 := `
host h2 underlay 192.0.2.2
network pa/web overlay vni set bridge "" mtu 1450 nat false external false subnets [10.0.0.0/24 gw 10.0.0.1]
port pa/a2-nic0 on pa/web ips [web-v4=10.0.0.12] groups [pa/default] security true vm pa/a2 nic 0
remote pa/web [10.0.0.11] via 192.0.2.1 (pa/a1-nic0 of pa/a1)
group pa/default members [10.0.0.11 10.0.0.12] rules [` + rulesOf("pa") + `]
`
	checkState(t, "the peer host", stateOf(t, h, "h2"), h2)
	checkState(t, "a host with no port", stateOf(t, h, "h3"), "host h3 underlay 192.0.2.3\n")
	a, _ := e.networks.Get("pa/web")
	b, _ := e.networks.Get("pb/web")
	st1 := stateOf(t, h, "h1")
	if st1.Networks[0].VNI != a.Status.VNI || st1.Networks[1].VNI != b.Status.VNI || a.Status.VNI == b.Status.VNI {
		t.Errorf("VNIs of the two networks: %d, %d (stored %d, %d)", st1.Networks[0].VNI, st1.Networks[1].VNI, a.Status.VNI, b.Status.VNI)
	}

	// A rule of pa's default group: both of pa's hosts, not pb's group.
	if _, err := e.m.AddRules(ctx, "pa", "default", []api.SecurityGroupRule{{Direction: "ingress", Protocol: "tcp", PortMin: 22, RemoteCIDR: "10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	rule := "; ingress IPv4 tcp 22-22 cidr 10.0.0.0/8"
	h1 = strings.Replace(h1, rulesOf("pa")+"]", rulesOf("pa")+rule+"]", 1)
	h2 = strings.Replace(h2, rulesOf("pa")+"]", rulesOf("pa")+rule+"]", 1)
	checkState(t, "a rule added", stateOf(t, h, "h1"), h1)
	checkState(t, "a rule added", stateOf(t, h, "h2"), h2)

	// A floating IP of an external network, mapped to a1's port.
	if _, err := e.m.CreateNetwork(ctx, "default", api.NetworkCreate{Name: "ext", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext", External: true}}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSubnet(ctx, "default", api.SubnetCreate{Name: "ext-v4", SubnetSpec: api.SubnetSpec{Network: "ext", CIDR: "203.0.113.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateFloatingIP(ctx, "pa", api.FloatingIPCreate{Name: "f1", FloatingIPSpec: api.FloatingIPSpec{Network: "ext", Address: "203.0.113.10", Port: "a1-nic0"}}); err != nil {
		t.Fatal(err)
	}
	h1 = strings.Replace(h1, "host h1 underlay 192.0.2.1\n", "host h1 underlay 192.0.2.1\nnetwork default/ext bridged vni - bridge \"br-ext\" mtu 1500 nat false external true subnets [203.0.113.0/24 gw 203.0.113.1]\n", 1)
	h1 += "floating 203.0.113.10 on default/ext -> pa/a1-nic0 10.0.0.11\n"
	checkState(t, "a floating IP", stateOf(t, h, "h1"), h1)
	checkState(t, "a floating IP elsewhere", stateOf(t, h, "h2"), h2)

	// The hub delivers: a VM deleted changes the other host's state.
	go h.Run(ctx)
	w, stop := h.Watch("h1")
	defer stop()
	first := <-w
	e.removeVM("pa", "a2")
	h1 = strings.Replace(h1, "remote pa/web [10.0.0.12] via 192.0.2.2 (pa/a2-nic0 of pa/a2)\n", "", 1)
	h1 = strings.Replace(h1, "group pa/default members [10.0.0.11 10.0.0.12]", "group pa/default members [10.0.0.11]", 1)
	next := waitState(t, w, func(st *api.HostNetworkState) bool { return len(st.Remote) == 0 })
	checkState(t, "the peer VM deleted", next, h1)
	if next.Revision <= first.Revision {
		t.Errorf("revision %d after %d", next.Revision, first.Revision)
	}
	checkState(t, "its host emptied", stateOf(t, h, "h2"), "host h2 underlay 192.0.2.2\n")
	if _, ok := e.ports.Get("pa/a2-nic0"); ok {
		t.Error("the deleted VM's port is left")
	}

	// A host removed: the others lose what pointed at it.
	if _, err := e.vm("pa", "a3", "h3", api.NIC{Network: "web", IP: "10.0.0.13"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, func(st *api.HostNetworkState) bool { return len(st.Remote) == 1 })
	if err := e.hosts.Delete(ctx, "h3", 0); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, func(st *api.HostNetworkState) bool { return len(st.Remote) == 0 })
}

// waitState takes states from w until one satisfies ok.
func waitState(t *testing.T, w <-chan *api.HostNetworkState, ok func(*api.HostNetworkState) bool) *api.HostNetworkState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case st := <-w:
			if ok(st) {
				return st
			}
		case <-ctx.Done():
			t.Fatal("timed out waiting for a host state")
		}
	}
}
