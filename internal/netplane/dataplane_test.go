package netplane

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

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

// hasOurPrefix tells whether a listing of devices names one of ours.
func listsOurDevice(listing string) bool {
	for _, p := range ourPrefixes {
		if strings.Contains(listing, " "+p) {
			return true
		}
	}
	return false
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
}

// TestSecurityGroups: a TCP port of a guest is closed to another until a
// rule allows the other's group, and closed again within a second of the
// rule's removal; answers need no rule (stateful), and a flow open when
// the rule goes keeps going.
func TestSecurityGroups(t *testing.T) {
	l := newLab(t, 2)
	w := &world{underlays: []string{l.hosts[0].underlay, l.hosts[1].underlay}}
	w.net(api.HostNetwork{Key: "p1/a", ID: "0000000a01", Type: api.NetworkOverlay, VNI: 101, MTU: 1450,
		Subnets: []api.Subnet{subnet("p1", "a-v4", "a", "10.0.0.0/24")}})
	web := api.HostSecurityGroup{Key: "p1/web", ID: "000000web1", Rules: []api.SecurityGroupRule{
		{Direction: api.DirectionEgress},
	}}
	client := api.HostSecurityGroup{Key: "p1/client", ID: "000000cli1", Rules: []api.SecurityGroupRule{
		{Direction: api.DirectionEgress},
	}}
	w.group(web)
	w.group(client)
	w.port(0, hostPort("p1", "a1", "00000000a1", "p1/a", "52:54:00:aa:00:01", "10.0.0.11", "p1/client"))
	w.port(1, hostPort("p1", "a2", "00000000a2", "p1/a", "52:54:00:aa:00:02", "10.0.0.12", "p1/web"))
	w.port(1, hostPort("p1", "a3", "00000000a3", "p1/a", "52:54:00:aa:00:03", "10.0.0.13", "p1/client"))
	applyAll(l, w)
	a1 := l.hosts[0].attach("a1", TapName("00000000a1"), "52:54:00:aa:00:01")
	a2 := l.hosts[1].attach("a2", TapName("00000000a2"), "52:54:00:aa:00:02")
	a3 := l.hosts[1].attach("a3", TapName("00000000a3"), "52:54:00:aa:00:03")
	a1.setIP(t, "10.0.0.11/24", "")
	a2.setIP(t, "10.0.0.12/24", "")
	a3.setIP(t, "10.0.0.13/24", "")
	a2.listen(t, 8080, "a2")
	a2.listenEcho(t, 8081)
	a1.listen(t, 9090, "a1")
	if got := a1.connect("10.0.0.12", 8080); got != "" {
		t.Fatalf("a1 reached a2:8080 with no rule allowing it: %q", got)
	}
	// Allow tcp 8080 from the client group.
	web.Rules = append(web.Rules, api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 8080, PortMax: 8081, RemoteGroup: "p1/client"})
	w.group(web)
	applyAll(l, w)
	for _, g := range []*guest{a1, a3} {
		if got := g.connect("10.0.0.12", 8080); got != "hello from a2" {
			t.Fatalf("%s to a2:8080 with the rule: %q", g.ns, got)
		}
	}
	// Nothing comes back in to a1 but answers: a2 cannot open a1's port.
	if got := a2.connect("10.0.0.11", 9090); got != "" {
		t.Fatalf("a2 reached a1:9090: %q", got)
	}
	if a1.ping("10.0.0.12") {
		t.Fatal("a1 pings a2: only tcp 8080-8081 is allowed")
	}
	// A flow opened while the rule holds keeps going when it goes.
	flow := a1.openFlow(t, "10.0.0.12", 8081)
	if !flow.alive() {
		t.Fatal("no echo on a flow to a2:8081")
	}
	web.Rules = web.Rules[:1]
	w.group(web)
	start := time.Now()
	res := l.hosts[1].apply(w.state(1))
	if res.Took > time.Second {
		t.Errorf("removing a rule took %s", res.Took)
	}
	if got := a1.connect("10.0.0.12", 8080); got != "" {
		t.Fatalf("a1 reached a2:8080 %s after the rule was removed: %q", time.Since(start), got)
	}
	if !flow.alive() {
		t.Fatal("the flow opened while the rule held ended with the rule")
	}
}

// flow is a TCP connection held open: the client sends a line a second
// and the server echoes it.
type flow struct {
	g    *guest
	file string
}

// openFlow starts a client that keeps a connection to addr:port sending.
func (g *guest) openFlow(t *testing.T, addr string, port int) *flow {
	t.Helper()
	f := &flow{g: g, file: filepath.Join(t.TempDir(), "flow")}
	cmd := exec.Command("ip", "netns", "exec", g.ns, "busybox", "sh", "-c",
		"while :; do echo ping; sleep 0.2; done | busybox nc "+addr+" "+strconv.Itoa(port)+" >"+f.file)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(500 * time.Millisecond)
	return f
}

// alive tells whether the flow's echoes go on coming.
func (f *flow) alive() bool {
	size := func() int64 {
		fi, err := os.Stat(f.file)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	before := size()
	time.Sleep(time.Second)
	return size() > before
}

// TestAntiSpoofing: a guest that takes another address or MAC, answers ARP
// for another guest's address, serves DHCP or sends router advertisements,
// is not heard; the same
// guest on a port without port security is (the test can fail). The
// guests it talks to, a2 and a3, have no port security themselves: they
// hear whatever reaches them.
func TestAntiSpoofing(t *testing.T) {
	l := newLab(t, 2)
	w := &world{underlays: []string{l.hosts[0].underlay, l.hosts[1].underlay}}
	noDHCP := false
	sn := subnet("p1", "a-v4", "a", "10.0.0.0/24")
	sn.Spec.DHCP = &noDHCP
	w.net(api.HostNetwork{Key: "p1/a", ID: "0000000a01", Type: api.NetworkOverlay, VNI: 101, MTU: 1450, Subnets: []api.Subnet{sn}})
	w.group(defaultGroup("p1", "00000000g1"))
	w.port(0, hostPort("p1", "a1", "00000000a1", "p1/a", "52:54:00:aa:00:01", "10.0.0.11", "p1/default"))
	a2port := hostPort("p1", "a2", "00000000a2", "p1/a", "52:54:00:aa:00:02", "10.0.0.12")
	a3port := hostPort("p1", "a3", "00000000a3", "p1/a", "52:54:00:aa:00:03", "10.0.0.13")
	a2port.PortSecurity, a3port.PortSecurity = false, false
	w.port(1, a2port)
	w.port(0, a3port)
	applyAll(l, w)
	a1 := l.hosts[0].attach("a1", TapName("00000000a1"), "52:54:00:aa:00:01")
	a2 := l.hosts[1].attach("a2", TapName("00000000a2"), "52:54:00:aa:00:02")
	a3 := l.hosts[0].attach("a3", TapName("00000000a3"), "52:54:00:aa:00:03")
	a1.setIP(t, "10.0.0.11/24", "")
	a2.setIP(t, "10.0.0.12/24", "")
	a3.setIP(t, "10.0.0.13/24", "")
	if !a1.ping("10.0.0.13") || !a3.ping("10.0.0.12") {
		t.Fatal("the guests do not reach each other")
	}

	spoofs := func() (ip, mac, arp, dhcp, ra bool) {
		flush := func() {
			run(t, "ip", "-n", a1.ns, "neigh", "flush", "all")
			run(t, "ip", "-n", a3.ns, "neigh", "flush", "all")
		}
		a1.setIP(t, "10.0.0.99/24", "")
		flush()
		ip = a1.ping("10.0.0.13")
		a1.setIP(t, "10.0.0.11/24", "")
		run(t, "ip", "-n", a1.ns, "link", "set", "eth0", "address", "52:54:00:aa:00:99")
		flush()
		mac = a1.ping("10.0.0.13")
		run(t, "ip", "-n", a1.ns, "link", "set", "eth0", "address", a1.mac)
		flush()
		// a1 claims a2's address: a3, which knows a2, would now send a2's
		// traffic to a1. (An entry is not replaced within a second of
		// its last update.)
		if !a3.ping("10.0.0.12") {
			t.Fatal("a3 lost a2")
		}
		time.Sleep(1200 * time.Millisecond)
		a1.sendARPReply(t, "10.0.0.12", a3.mac, "10.0.0.13")
		out, _ := inNS(a3.ns, "ip", "neigh", "show", "10.0.0.12")
		arp = strings.Contains(out, a1.mac)
		flush()
		// a1 serves DHCP on a network whose DHCP is off: a3 must get
		// nothing.
		conf := filepath.Join(t.TempDir(), "udhcpd.conf")
		os.WriteFile(conf, []byte("start 10.0.0.200\nend 10.0.0.210\ninterface eth0\nlease_file "+conf+".leases\n"), 0o644)
		os.WriteFile(conf+".leases", nil, 0o644)
		srv := exec.Command("ip", "netns", "exec", a1.ns, "busybox", "udhcpd", "-f", conf)
		srv.Start()
		defer func() { srv.Process.Kill(); srv.Wait() }()
		time.Sleep(200 * time.Millisecond)
		script := filepath.Join(t.TempDir(), "udhcpc.sh")
		os.WriteFile(script, []byte(udhcpcScript), 0o755)
		_, err := inNS(a3.ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "3", "-T", "1", "-s", script)
		dhcp = err == nil
		a3.setIP(t, "10.0.0.13/24", "")
		// a1 advertises itself as an IPv6 router to all nodes.
		fd := a3.raSocket(t)
		a1.sendRA(t)
		ra = a3.hearsRA(fd, 1500*time.Millisecond)
		return
	}
	ip, mac, arp, dhcp, ra := spoofs()
	if ip || mac || arp || dhcp || ra {
		t.Fatalf("with port security, spoofing got through: address %v, mac %v, arp %v, dhcp server %v, router advertisement %v", ip, mac, arp, dhcp, ra)
	}
	if !a1.ping("10.0.0.12") || !a1.ping("10.0.0.13") {
		t.Fatal("a1 lost its peers after the spoofing")
	}
	// Without port security, each gets through.
	for i := range w.ports {
		if w.ports[i].Key == "p1/a1" {
			w.ports[i].PortSecurity = false
		}
	}
	applyAll(l, w)
	ip, mac, arp, dhcp, ra = spoofs()
	if !ip || !mac || !arp || !dhcp || !ra {
		t.Fatalf("without port security: address %v, mac %v, arp %v, dhcp server %v, router advertisement %v; want all through", ip, mac, arp, dhcp, ra)
	}
}

// outside listens on the lab's outside address and tells from which
// address each connection comes.
func (l *lab) outside(t *testing.T, port int) <-chan string {
	t.Helper()
	h, err := netns.GetFromName(l.ul)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var ln net.Listener
	if err := inNetns(h, func() error {
		var err error
		ln, err = net.Listen("tcp", labOutside+":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	from := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			c.Write([]byte("hello from outside\n"))
			c.Close()
			from <- host
		}
	}()
	return from
}

// TestFloatingIPAndNAT: a floating IP makes a guest reachable from the
// outside, and its traffic leaves from it; another guest's leaves from its
// host's address (NAT); without NAT it does not leave at all.
func TestFloatingIPAndNAT(t *testing.T) {
	l := newLab(t, 2)
	w := &world{underlays: []string{l.hosts[0].underlay, l.hosts[1].underlay}}
	w.net(api.HostNetwork{Key: "admin/ext", ID: "00000000e1", Type: api.NetworkBridged, Bridge: "br-ext", External: true, MTU: 1500,
		Subnets: []api.Subnet{subnet("admin", "ext-v4", "ext", "10.98.0.0/24")}})
	w.net(api.HostNetwork{Key: "p1/a", ID: "0000000a01", Type: api.NetworkOverlay, VNI: 101, MTU: 1450, NAT: true,
		Subnets: []api.Subnet{subnet("p1", "a-v4", "a", "10.0.0.0/24")}})
	g := defaultGroup("p1", "00000000g1")
	g.Rules = append(g.Rules, api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 8080, RemoteCIDR: "10.98.0.0/24"},
		api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolICMP, RemoteCIDR: "0.0.0.0/0"})
	w.group(g)
	w.port(0, hostPort("p1", "a1", "00000000a1", "p1/a", "52:54:00:aa:00:01", "10.0.0.11", "p1/default"))
	w.port(1, hostPort("p1", "a2", "00000000a2", "p1/a", "52:54:00:aa:00:02", "10.0.0.12", "p1/default"))
	w.fips = []api.HostFloatingIP{{Address: "10.98.0.100", Network: "admin/ext", Port: "p1/a1", FixedIP: "10.0.0.11"}}
	for i, res := range applyAll(l, w) {
		if len(res.Errors) > 0 {
			t.Fatalf("host %d: %v", i, res.Errors)
		}
	}
	a1 := l.hosts[0].attach("a1", TapName("00000000a1"), "52:54:00:aa:00:01")
	a2 := l.hosts[1].attach("a2", TapName("00000000a2"), "52:54:00:aa:00:02")
	a1.dhcp(t)
	a2.dhcp(t)
	a1.listen(t, 8080, "a1")
	from := l.outside(t, 9000)

	if out, err := inNS(l.ul, "busybox", "ping", "-c", "2", "-i", "0.2", "-w", "3", "10.98.0.100"); err != nil {
		t.Fatalf("the outside does not reach the floating ip: %v: %s", err, out)
	}
	if out, err := inNS(l.ul, "busybox", "nc", "-w", "2", "10.98.0.100", "8080"); err != nil || !strings.Contains(out, "hello from a1") {
		t.Fatalf("the outside to the floating ip's port 8080: %v: %q", err, out)
	}
	if got := a1.connect(labOutside, 9000); got != "hello from outside" {
		t.Fatalf("a1 to the outside: %q", got)
	}
	if src := <-from; src != "10.98.0.100" {
		t.Fatalf("a1's traffic reached the outside from %s, want its floating ip", src)
	}
	if got := a2.connect(labOutside, 9000); got != "hello from outside" {
		t.Fatalf("a2 to the outside (NAT): %q", got)
	}
	if src := <-from; src != l.hosts[1].underlay {
		t.Fatalf("a2's traffic reached the outside from %s, want its host's address %s", src, l.hosts[1].underlay)
	}
	// The guests never reach the host itself, nor the VXLAN port of the
	// other hosts, through their gateway.
	if a2.ping(l.hosts[1].underlay) {
		t.Fatal("a2 reaches its own host's address")
	}

	// Without NAT nothing leaves but the floating IP's traffic; the
	// floating IP moved away, a1 is no longer reachable.
	w.nets[1].NAT = false
	w.fips = nil
	applyAll(l, w)
	if got := a2.connect(labOutside, 9000); got != "" {
		t.Fatalf("a2 reached the outside without NAT: %q", got)
	}
	if out, err := inNS(l.ul, "busybox", "ping", "-c", "1", "-w", "2", "10.98.0.100"); err == nil {
		t.Fatalf("the outside still reaches the removed floating ip: %s", out)
	}
	out := run(t, "ip", "-n", l.hosts[0].name, "neigh", "show", "proxy")
	if strings.Contains(out, "10.98.0.100") {
		t.Fatalf("proxy arp for the removed floating ip is left: %s", out)
	}
}

// TestRemoval: a port removed leaves nothing behind on any host: its tap,
// its lease, its rules and set elements, the other hosts' forwarding and
// neighbour entries; a host removed leaves no entry pointing at it; the
// last port of a network gone, its devices, router and dnsmasq go too.
func TestRemoval(t *testing.T) {
	l := newLab(t, 2)
	w := twoProjects(l)
	w.port(1, hostPort("p1", "a3", "00000000a3", "p1/a", "52:54:00:aa:00:03", "10.0.0.14", "p1/default"))
	// The QEMU driver's table, as it makes it (qemu/netfilter.go).
	run(t, "ip", "netns", "exec", l.hosts[0].name, "nft", "add table inet polyvisor; add chain inet polyvisor guest-loopback { type filter hook output priority 0; policy accept; }; add rule inet polyvisor guest-loopback meta skuid 65534 counter reject")
	applyAll(l, w)
	a1 := l.hosts[0].attach("a1", TapName("00000000a1"), "52:54:00:aa:00:01")
	a2 := l.hosts[1].attach("a2", TapName("00000000a2"), "52:54:00:aa:00:02")
	a3 := l.hosts[1].attach("a3", TapName("00000000a3"), "52:54:00:aa:00:03")
	for _, g := range []*guest{a1, a2, a3} {
		g.dhcp(t)
	}
	h0, h1 := l.hosts[0], l.hosts[1]
	lease := h1.plane.LeaseFile("0000000a01")
	if got := leases(lease); got["52:54:00:aa:00:02"].String() != "10.0.0.12" {
		t.Fatalf("leases on host 1: %v", got)
	}
	fdb := func(h *labHost) string {
		return run(t, "bridge", "-n", h.name, "fdb", "show", "dev", "pvvx0000000a01") +
			run(t, "ip", "-n", h.name, "neigh", "show", "dev", "pvvx0000000a01")
	}
	if out := fdb(h0); !strings.Contains(out, "52:54:00:aa:00:02") || !strings.Contains(out, "10.0.0.12") {
		t.Fatalf("host 0 has no entry for a2:\n%s", out)
	}
	nftHas := func(h *labHost, what string) bool {
		return strings.Contains(run(t, "ip", "netns", "exec", h.name, "nft", "list", "ruleset"), what)
	}
	if !nftHas(h1, "10.0.0.12") || !nftHas(h0, "10.0.0.12") {
		t.Fatal("a2's address is in no nftables set")
	}

	// a2 is deleted.
	a2.stop()
	w.removePort("p1/a2")
	applyAll(l, w)
	if _, err := inNS(h1.name, "ip", "link", "show", TapName("00000000a2")); err == nil {
		t.Fatal("a2's tap is left on host 1")
	}
	if got := leases(lease); got["52:54:00:aa:00:02"].IsValid() || got["52:54:00:aa:00:03"].String() != "10.0.0.14" {
		t.Fatalf("leases on host 1 after a2 went: %v", got)
	}
	for _, h := range l.hosts {
		if nftHas(h, "10.0.0.12") {
			t.Fatalf("a2's address is left in nftables on %s", h.name)
		}
	}
	if out := fdb(h0); strings.Contains(out, "52:54:00:aa:00:02") || strings.Contains(out, "10.0.0.12") {
		t.Fatalf("host 0 keeps entries for a2:\n%s", out)
	}
	if !a1.ping("10.0.0.14") {
		t.Fatal("a1 lost a3 when a2 went")
	}

	// Host 1 is removed: host 0 keeps no entry pointing at it.
	w.ports = slices.DeleteFunc(w.ports, func(p worldPort) bool { return p.host == 1 })
	h0.apply(w.state(0))
	if out := fdb(h0); strings.Contains(out, h1.underlay) || strings.Contains(out, "52:54:00:aa:00:03") {
		t.Fatalf("host 0 keeps entries for host 1:\n%s", out)
	}

	// The last ports of host 0 go: nothing of the dataplane is left there.
	w.ports = nil
	res := h0.apply(w.state(0))
	if res.Changed == 0 {
		t.Fatal("removing every port changed nothing")
	}
	if out := run(t, "ip", "-n", h0.name, "-o", "link", "show"); listsOurDevice(out) {
		t.Fatalf("devices left on host 0:\n%s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(h0.state, "netns")); len(ents) != 0 {
		t.Fatalf("router namespaces left on host 0: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(h0.state, "run")); len(ents) != 0 {
		t.Fatalf("dhcp files left on host 0: %v", ents)
	}
	if nftHas(h0, "10.0.0.11") || nftHas(h0, "pvbr") {
		t.Fatal("nftables entries left on host 0")
	}
	if tables := run(t, "ip", "netns", "exec", h0.name, "nft", "list", "tables"); strings.Contains(tables, "polyvisor-net") {
		t.Fatalf("nftables tables on host 0 once its last network went:\n%s", tables)
	}
	// The QEMU driver's table on the same host (its guard of the host's
	// loopback) is not the dataplane's to change or remove.
	if out, err := inNS(h0.name, "nft", "list", "chain", "inet", "polyvisor", "guest-loopback"); err != nil || !strings.Contains(out, "counter") {
		t.Fatalf("the qemu driver's table went with the dataplane's:\n%s %v", out, err)
	}
}
