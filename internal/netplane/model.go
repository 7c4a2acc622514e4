package netplane

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/polyvisor/polyvisor/api"
)

// desired is what a host's dataplane should be: a HostNetworkState checked
// and compiled into devices, addresses and entries. compile is pure; what
// it refuses is reported per port (the port is left out) or per network.
type desired struct {
	underlay netip.Addr
	networks map[string]*dNet   // by network key
	ports    map[string]*dPort  // by port key, the ports that can be made
	groups   map[string]*dGroup // by group key
	fips     []*dFIP
	// portErrs says why a port of the state cannot be made, by port key.
	portErrs map[string]string
	// netErrs says why a network of the state cannot be made, by key.
	netErrs map[string]string
}

// dNet is one network on this host.
type dNet struct {
	key, id  string
	overlay  bool
	vni      int
	underlay netip.Addr // this host's VXLAN address
	bridge   string     // device name: ours for overlays, the provider's for bridged
	vxlan    string     // overlays only
	mtu      int
	nat      bool
	external bool
	subnets  []*dSubnet
	gwMAC    net.HardwareAddr
	ports    []*dPort // local, sorted by key
	remotes  []*dRemote
}

// router tells whether the network has a router namespace on this host:
// overlays do (their distributed gateway, DHCP and DNS, NAT and floating
// IPs); bridged networks use the provider's router.
func (n *dNet) router() bool { return n.overlay }

// dSubnet is one subnet of a network.
type dSubnet struct {
	key     string
	prefix  netip.Prefix
	gateway netip.Addr
	dhcp    bool
	dns     []netip.Addr
	routes  []dRoute
}

type dRoute struct {
	dst     netip.Prefix
	nextHop netip.Addr
}

// dPort is one port on this host.
type dPort struct {
	key, id  string
	tap      string
	net      *dNet
	mac      net.HardwareAddr
	ips      []netip.Addr // its fixed IPs, each in a subnet of its network
	groups   []string     // group keys, sorted
	secure   bool
	vm       string
	nic      int
	hostname string // DNS label for DHCP and DNS, "" for none
}

// dRemote is a port of the same network on another host.
type dRemote struct {
	mac      net.HardwareAddr
	ips      []netip.Addr
	underlay netip.Addr
	hostname string
}

// dGroup is a security group as this host applies it.
type dGroup struct {
	key, id  string
	rules    []dRule
	members4 []netip.Addr
	members6 []netip.Addr
}

// dRule is one rule of a group: the traffic it allows.
type dRule struct {
	ingress bool
	v6      bool
	protoLo uint8
	protoHi uint8
	portLo  uint16
	portHi  uint16
	// cidr is the remote range (the whole family when no remote is named);
	// remote, when set, is the key of the remote group instead.
	cidr   netip.Prefix
	remote string
}

// dFIP is a floating IP of a port on this host.
type dFIP struct {
	addr  netip.Addr
	ext   *dNet // the external network it comes from
	port  *dPort
	fixed netip.Addr
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxVNI is the largest VXLAN network identifier (24 bits).
const maxVNI = 1<<24 - 1

// compile checks a HostNetworkState and turns it into the desired dataplane.
func compile(st *api.HostNetworkState) *desired {
	d := &desired{
		networks: map[string]*dNet{},
		ports:    map[string]*dPort{},
		groups:   map[string]*dGroup{},
		portErrs: map[string]string{},
		netErrs:  map[string]string{},
	}
	if st == nil {
		return d
	}
	if a, err := netip.ParseAddr(st.Underlay); err == nil {
		d.underlay = a.Unmap()
	}
	bridges := map[string]string{} // device name -> network key
	for _, hn := range st.Networks {
		n, err := compileNetwork(hn, d.underlay)
		if err != nil {
			d.netErrs[hn.Key] = err.Error()
			continue
		}
		if _, dup := d.networks[n.key]; dup {
			d.netErrs[hn.Key] = "the network is sent twice"
			continue
		}
		if other, dup := bridges[n.bridge]; dup && n.overlay {
			d.netErrs[hn.Key] = fmt.Sprintf("its device name %s is that of network %s", n.bridge, other)
			continue
		}
		bridges[n.bridge] = n.key
		d.networks[n.key] = n
	}
	for _, hg := range st.SecurityGroups {
		g := compileGroup(hg)
		d.groups[g.key] = g
	}
	taps := map[string]string{}
	macs := map[string]string{} // network key + MAC -> port key
	addrs := map[string]string{}
	for _, hp := range st.Ports {
		p, err := compilePort(hp, d)
		if err == nil {
			if other, dup := taps[p.tap]; dup {
				err = fmt.Errorf("its tap name %s is that of port %s", p.tap, other)
			} else if other, dup := macs[p.net.key+"|"+p.mac.String()]; dup {
				err = fmt.Errorf("its MAC %s is that of port %s on the same network", p.mac, other)
			}
			for _, ip := range p.ipsOrNil(err) {
				if other, dup := addrs[p.net.key+"|"+ip.String()]; dup {
					err = fmt.Errorf("its address %s is that of port %s on the same network", ip, other)
				}
			}
		}
		if err != nil {
			d.portErrs[hp.Key] = err.Error()
			continue
		}
		if _, dup := d.ports[p.key]; dup {
			d.portErrs[hp.Key] = "the port is sent twice"
			continue
		}
		taps[p.tap] = p.key
		macs[p.net.key+"|"+p.mac.String()] = p.key
		for _, ip := range p.ips {
			addrs[p.net.key+"|"+ip.String()] = p.key
		}
		d.ports[p.key] = p
		p.net.ports = append(p.net.ports, p)
	}
	for _, n := range d.networks {
		slices.SortFunc(n.ports, func(a, b *dPort) int { return strings.Compare(a.key, b.key) })
	}
	for _, rp := range st.Remote {
		n := d.networks[rp.Network]
		if n == nil || !n.overlay {
			continue // only overlays carry remote ports
		}
		r, err := compileRemote(rp)
		if err != nil || r.underlay == d.underlay {
			continue
		}
		n.remotes = append(n.remotes, r)
	}
	for _, hf := range st.FloatingIPs {
		f, err := compileFIP(hf, d)
		if err != nil {
			if _, ok := d.portErrs[hf.Port]; !ok {
				d.portErrs[hf.Port] = "floating IP " + hf.Address + ": " + err.Error()
			}
			continue
		}
		d.fips = append(d.fips, f)
	}
	return d
}

// ipsOrNil returns the port's addresses unless err is set.
func (p *dPort) ipsOrNil(err error) []netip.Addr {
	if err != nil {
		return nil
	}
	return p.ips
}

func compileNetwork(hn api.HostNetwork, underlay netip.Addr) (*dNet, error) {
	if hn.Key == "" {
		return nil, fmt.Errorf("the network has no key")
	}
	id := shortID(hn.ID)
	if hn.ID == "" {
		return nil, fmt.Errorf("network %s has no id", hn.Key)
	}
	n := &dNet{key: hn.Key, id: id, mtu: hn.MTU, nat: hn.NAT, external: hn.External, gwMAC: gatewayMAC(hn.ID)}
	switch hn.Type {
	case api.NetworkOverlay, "":
		n.overlay = true
		if hn.VNI < 1 || hn.VNI > maxVNI {
			return nil, fmt.Errorf("network %s: vni %d is outside 1-%d", hn.Key, hn.VNI, maxVNI)
		}
		if !underlay.IsValid() {
			return nil, fmt.Errorf("network %s: this host has no underlay address for VXLAN", hn.Key)
		}
		n.vni = hn.VNI
		n.underlay = underlay
		n.bridge = prefixBridge + id
		n.vxlan = prefixVXLAN + id
		if n.mtu == 0 {
			n.mtu = 1450
		}
	case api.NetworkBridged:
		if !validIfname(hn.Bridge) {
			return nil, fmt.Errorf("network %s: bridge %q is not a device name", hn.Key, hn.Bridge)
		}
		if hasOurPrefix(hn.Bridge) {
			return nil, fmt.Errorf("network %s: bridge %q is named like a device Polyvisor makes", hn.Key, hn.Bridge)
		}
		n.bridge = hn.Bridge
		if n.mtu == 0 {
			n.mtu = 1500
		}
	default:
		return nil, fmt.Errorf("network %s: unknown type %q", hn.Key, hn.Type)
	}
	if n.mtu < 576 || n.mtu > 9000 {
		return nil, fmt.Errorf("network %s: mtu %d is outside 576-9000", hn.Key, n.mtu)
	}
	for _, s := range hn.Subnets {
		sn, err := compileSubnet(s)
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", hn.Key, err)
		}
		for _, o := range n.subnets {
			if o.prefix.Overlaps(sn.prefix) {
				return nil, fmt.Errorf("network %s: subnet %s overlaps subnet %s", hn.Key, sn.key, o.key)
			}
		}
		n.subnets = append(n.subnets, sn)
	}
	return n, nil
}

func compileSubnet(s api.Subnet) (*dSubnet, error) {
	key := s.Key()
	p, err := netip.ParsePrefix(s.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("subnet %s: cidr %q: %w", key, s.Spec.CIDR, err)
	}
	p = p.Masked()
	if p.Addr().Is4() && p.Bits() > 30 || p.Addr().Is6() && p.Bits() > 126 {
		return nil, fmt.Errorf("subnet %s: cidr %s is too small", key, p)
	}
	sn := &dSubnet{key: key, prefix: p, dhcp: s.Spec.DHCP == nil || *s.Spec.DHCP}
	if s.Spec.Gateway != "" {
		gw, err := netip.ParseAddr(s.Spec.Gateway)
		if err != nil || !p.Contains(gw) {
			return nil, fmt.Errorf("subnet %s: gateway %q is not an address in %s", key, s.Spec.Gateway, p)
		}
		sn.gateway = gw
	} else {
		sn.gateway = p.Addr().Next()
	}
	for _, s := range s.Spec.DNSServers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("subnet %s: dns server %q: %w", key, s, err)
		}
		sn.dns = append(sn.dns, a)
	}
	for _, r := range s.Spec.Routes {
		dst, err1 := netip.ParsePrefix(r.Destination)
		hop, err2 := netip.ParseAddr(r.NextHop)
		if err1 != nil || err2 != nil || dst.Addr().Is4() != p.Addr().Is4() || !p.Contains(hop) {
			return nil, fmt.Errorf("subnet %s: route %s via %s is not a route of this subnet", key, r.Destination, r.NextHop)
		}
		sn.routes = append(sn.routes, dRoute{dst: dst.Masked(), nextHop: hop})
	}
	return sn, nil
}

func compileGroup(hg api.HostSecurityGroup) *dGroup {
	g := &dGroup{key: hg.Key, id: shortID(hg.ID)}
	if hg.ID == "" {
		g.id = shortID(hg.Key)
	}
	for _, m := range hg.Members {
		a, err := netip.ParseAddr(m)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if a.Is4() {
			g.members4 = append(g.members4, a)
		} else {
			g.members6 = append(g.members6, a)
		}
	}
	project, _ := api.SplitKey(hg.Key)
	for _, r := range hg.Rules {
		if dr, ok := compileRule(r, project); ok {
			g.rules = append(g.rules, dr)
		}
	}
	return g
}

// compileRule turns an API rule into the traffic it allows. The server
// checked the rule; one this host cannot read allows nothing.
func compileRule(r api.SecurityGroupRule, project string) (dRule, bool) {
	dr := dRule{ingress: r.Direction == api.DirectionIngress, v6: r.EtherType == api.EtherTypeIPv6}
	if r.Direction != api.DirectionIngress && r.Direction != api.DirectionEgress {
		return dr, false
	}
	switch r.Protocol {
	case api.ProtocolAny, "":
		dr.protoLo, dr.protoHi = 0, 255
	case api.ProtocolTCP:
		dr.protoLo, dr.protoHi = 6, 6
	case api.ProtocolUDP:
		dr.protoLo, dr.protoHi = 17, 17
	case api.ProtocolICMP:
		dr.protoLo, dr.protoHi = 1, 1
		if dr.v6 {
			dr.protoLo, dr.protoHi = 58, 58
		}
	default:
		return dr, false
	}
	dr.portLo, dr.portHi = 0, 65535
	if (r.Protocol == api.ProtocolTCP || r.Protocol == api.ProtocolUDP) && (r.PortMin != 0 || r.PortMax != 0) {
		lo, hi := r.PortMin, r.PortMax
		if hi == 0 {
			hi = lo
		}
		if lo < 1 || hi > 65535 || lo > hi {
			return dr, false
		}
		dr.portLo, dr.portHi = uint16(lo), uint16(hi)
	}
	switch {
	case r.RemoteGroup != "":
		dr.remote = r.RemoteGroup
		if !strings.Contains(dr.remote, "/") {
			dr.remote = api.Key(project, dr.remote)
		}
	case r.RemoteCIDR != "":
		p, err := netip.ParsePrefix(r.RemoteCIDR)
		if err != nil {
			a, aerr := netip.ParseAddr(r.RemoteCIDR)
			if aerr != nil {
				return dr, false
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if p.Addr().Is6() != dr.v6 {
			return dr, false
		}
		dr.cidr = p
	default:
		if dr.v6 {
			dr.cidr = netip.MustParsePrefix("::/0")
		} else {
			dr.cidr = netip.MustParsePrefix("0.0.0.0/0")
		}
	}
	return dr, true
}

func compilePort(hp api.HostPort, d *desired) (*dPort, error) {
	if hp.Key == "" || hp.ID == "" {
		return nil, fmt.Errorf("the port has no key or id")
	}
	n := d.networks[hp.Network]
	if n == nil {
		if why, ok := d.netErrs[hp.Network]; ok {
			return nil, fmt.Errorf("its network cannot be made: %s", why)
		}
		return nil, fmt.Errorf("its network %s is not in the host's state", hp.Network)
	}
	mac, err := net.ParseMAC(hp.MAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("mac %q is not an Ethernet address", hp.MAC)
	}
	if mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
		return nil, fmt.Errorf("mac %s is not a unicast address", mac)
	}
	if bytes.Equal(mac, n.gwMAC) {
		return nil, fmt.Errorf("mac %s is the network's gateway's", mac)
	}
	p := &dPort{key: hp.Key, id: hp.ID, tap: TapName(hp.ID), net: n, mac: mac, secure: hp.PortSecurity, vm: hp.VM, nic: hp.NIC}
	for _, f := range hp.FixedIPs {
		a, err := netip.ParseAddr(f.IP)
		if err != nil {
			return nil, fmt.Errorf("fixed ip %q: %w", f.IP, err)
		}
		a = a.Unmap()
		var in *dSubnet
		for _, s := range n.subnets {
			if s.prefix.Contains(a) {
				in = s
			}
		}
		if in == nil {
			return nil, fmt.Errorf("fixed ip %s is in none of its network's subnets", a)
		}
		if a == in.gateway {
			return nil, fmt.Errorf("fixed ip %s is its subnet's gateway", a)
		}
		p.ips = append(p.ips, a)
	}
	for _, g := range hp.SecurityGroups {
		if _, ok := d.groups[g]; !ok {
			return nil, fmt.Errorf("its security group %s is not in the host's state", g)
		}
		p.groups = append(p.groups, g)
	}
	slices.Sort(p.groups)
	p.groups = slices.Compact(p.groups)
	if hp.NIC == 0 {
		p.hostname = hostnameOf(hp.VM)
	}
	return p, nil
}

// hostnameOf is the DNS name of a VM: its name when it is a DNS label.
func hostnameOf(vmKey string) string {
	_, name := api.SplitKey(vmKey)
	name = strings.ToLower(name)
	if !hostnameRE.MatchString(name) {
		return ""
	}
	return name
}

func compileRemote(rp api.RemotePort) (*dRemote, error) {
	mac, err := net.ParseMAC(rp.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("mac %q", rp.MAC)
	}
	u, err := netip.ParseAddr(rp.Underlay)
	if err != nil {
		return nil, fmt.Errorf("underlay %q", rp.Underlay)
	}
	r := &dRemote{mac: mac, underlay: u.Unmap(), hostname: hostnameOf(rp.VM)}
	for _, s := range rp.IPs {
		if a, err := netip.ParseAddr(s); err == nil {
			r.ips = append(r.ips, a.Unmap())
		}
	}
	return r, nil
}

func compileFIP(hf api.HostFloatingIP, d *desired) (*dFIP, error) {
	a, err := netip.ParseAddr(hf.Address)
	if err != nil || !a.Unmap().Is4() {
		return nil, fmt.Errorf("address %q is not an IPv4 address", hf.Address)
	}
	ext := d.networks[hf.Network]
	if ext == nil {
		return nil, fmt.Errorf("its network %s is not in the host's state", hf.Network)
	}
	if ext.overlay {
		return nil, fmt.Errorf("its network %s is an overlay: floating IPs come from bridged networks", hf.Network)
	}
	p := d.ports[hf.Port]
	if p == nil {
		return nil, fmt.Errorf("its port %s is not made on this host", hf.Port)
	}
	if !p.net.router() {
		return nil, fmt.Errorf("its port %s is not on an overlay network", hf.Port)
	}
	fixed, err := netip.ParseAddr(hf.FixedIP)
	if err != nil || !slices.Contains(p.ips, fixed.Unmap()) {
		return nil, fmt.Errorf("fixed ip %q is not an address of port %s", hf.FixedIP, hf.Port)
	}
	return &dFIP{addr: a.Unmap(), ext: ext, port: p, fixed: fixed.Unmap()}, nil
}

// validIfname tells whether s can name a network device.
func validIfname(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n\x00")
}

func hasOurPrefix(name string) bool {
	for _, p := range ourPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
