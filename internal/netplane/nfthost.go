package netplane

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The host's tables. Per packet, every decision is a constant number of
// set lookups, whatever the number of ports and rules:
//
//   bridge polyvisor-net  anti-spoofing at the bridge's prerouting hook, by the
//                     port a frame comes in on: its MAC, its addresses in
//                     ARP, IPv4 and IPv6; no DHCP server, router advertisement
//                     or redirect from a guest; nothing but ARP, IPv4, IPv6.
//   inet polyvisor-net    a conntrack zone per network bridge (networks may share
//                     addresses); the security groups, statefully, in the
//                     forward hook (bridged traffic goes through it): the
//                     sending port's egress rules, then the receiving port's
//                     ingress rules, each chosen by one verdict map keyed by
//                     bridge and address (anti-spoofing makes the address
//                     the port's); VXLAN only from the known hosts.
//   ip polyvisor-net-nat  the router namespaces' uplinks masqueraded out.

// Polyvisor's other tables (the QEMU driver's "polyvisor") are not these.
const (
	tableName    = "polyvisor-net"
	natTableName = "polyvisor-net-nat"
	etherARP     = 0x0806
	etherIPv4    = 0x0800
	etherIPv6    = 0x86dd
)

// hostTables builds the host's tables from parts, reusing those of m's
// last build whose inputs are the same (nftparts.go); a fresh m builds
// everything.
func hostTables(m *nftParts, d *desired, bridgeIndex map[string]int, vxlanPort int) []*nftTable {
	m.begin()
	defer m.end()
	return []*nftTable{bridgeTable(m, d), inetTable(m, d, bridgeIndex, vxlanPort), natTable()}
}

// theLayoutSet marks a table of the current layout; it is empty and never
// changes, so one object serves every table.
var theLayoutSet = &nftSet{name: nftLayout, keyType: typeLayoutMark}

func layoutSet() *nftSet { return theLayoutSet }

func baseChain(hook *nftables.ChainHook, prio nftables.ChainPriority, typ nftables.ChainType) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Hooknum: hook, Priority: &prio, Type: typ, Policy: &accept}
}

// linkLocal is the EUI-64 IPv6 link-local address of a MAC.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^2, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// bridgePortSets are the anti-spoofing sets: each secured port's tap, MAC
// and addresses.
func bridgePortSets(d *desired) *nftPart {
	secured := &nftSet{name: "secured", keyType: typeIfname}
	macs := &nftSet{name: "macs", keyType: typeIfMAC, concat: true}
	ip4 := &nftSet{name: "ip4", keyType: typeIfIP4, concat: true}
	ip6 := &nftSet{name: "ip6", keyType: typeIfIP6, concat: true}
	for _, p := range d.ports {
		if !p.secure {
			continue
		}
		ifn := ifnameBytes(p.tap)
		secured.add(nftables.SetElement{Key: ifn})
		macs.add(nftables.SetElement{Key: concat(ifn, p.mac)})
		ip6.add(nftables.SetElement{Key: concat(ifn, linkLocal(p.mac).AsSlice())})
		for _, a := range p.ips {
			if a.Is4() {
				ip4.add(nftables.SetElement{Key: concat(ifn, a.AsSlice())})
			} else {
				ip6.add(nftables.SetElement{Key: concat(ifn, a.AsSlice())})
			}
		}
	}
	return &nftPart{sets: []*nftSet{secured, macs, ip4, ip6}}
}

func bridgeTable(m *nftParts, d *desired) *nftTable {
	portSets := m.part("bridge/ports", fpSecurePorts(d), func() *nftPart { return bridgePortSets(d) })
	ll := expr.PayloadBaseLLHeader
	nh := expr.PayloadBaseNetworkHeader
	th := expr.PayloadBaseTransportHeader
	ifMAC := func(base expr.PayloadBase, off uint32, set string) []expr.Any {
		return one(meta(expr.MetaKeyIIFNAME, reg32), load(base, off, 6, reg32+4), notIn(set, reg32), drop)
	}
	ifAddr := func(off, n uint32, set string) []expr.Any {
		return one(meta(expr.MetaKeyIIFNAME, reg32), load(nh, off, n, reg32+4), notIn(set, reg32), drop)
	}
	etherType := func(t uint16, chain string) []expr.Any {
		return one(load(ll, 12, 2, reg1), eq(reg1, u16be(t)), jump(chain))
	}
	pre := &nftChain{name: "prerouting", base: baseChain(nftables.ChainHookPrerouting, nftables.ChainPriority(-200), nftables.ChainTypeFilter), rules: []nftRule{
		rule("iifname @secured jump antispoof", meta(expr.MetaKeyIIFNAME, reg1), lookup("secured", reg1), jump("antispoof")),
	}}
	anti := &nftChain{name: "antispoof", rules: []nftRule{
		rule("iifname . ether saddr != @macs drop", ifMAC(ll, 6, "macs")...),
		rule("ether type arp jump arp", etherType(etherARP, "arp")...),
		rule("ether type ip jump ip4", etherType(etherIPv4, "ip4")...),
		rule("ether type ip6 jump ip6", etherType(etherIPv6, "ip6")...),
		rule("drop", drop),
	}}
	arp := &nftChain{name: "arp", rules: []nftRule{
		rule("arp htype 1 ptype ip hlen 6 plen 4 else drop", load(nh, 0, 6, reg1), cmp(expr.CmpOpNeq, reg1, []byte{0, 1, 8, 0, 6, 4}), drop),
		rule("iifname . arp saddr ether != @macs drop", ifMAC(nh, 8, "macs")...),
		rule("arp saddr ip 0.0.0.0 accept", load(nh, 14, 4, reg1), eq(reg1, []byte{0, 0, 0, 0}), accept),
		rule("iifname . arp saddr ip != @ip4 drop", ifAddr(14, 4, "ip4")...),
		rule("accept", accept),
	}}
	ip4c := &nftChain{name: "ip4", rules: []nftRule{
		rule("udp sport 67 drop", all(ports(unix.IPPROTO_UDP, 67, 0), one(drop))...),
		rule("ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept", all(one(load(nh, 12, 4, reg1), eq(reg1, []byte{0, 0, 0, 0})), ports(unix.IPPROTO_UDP, 68, 67), one(accept))...),
		rule("iifname . ip saddr != @ip4 drop", ifAddr(12, 4, "ip4")...),
		rule("accept", accept),
	}}
	unspec := make([]byte, 16)
	ip6c := &nftChain{name: "ip6", rules: []nftRule{
		rule("icmpv6 type nd-router-advert drop", all(icmp6Type(134), one(drop))...),
		rule("icmpv6 type nd-redirect drop", all(icmp6Type(137), one(drop))...),
		rule("udp sport 547 drop", all(ports(unix.IPPROTO_UDP, 547, 0), one(drop))...),
		rule("ip6 saddr :: icmpv6 type nd-neighbor-solicit accept", all(one(load(nh, 8, 16, reg1), eq(reg1, unspec)), icmp6Type(135), one(accept))...),
		rule("ip6 saddr :: icmpv6 type mld2-listener-report accept", all(one(load(nh, 8, 16, reg1), eq(reg1, unspec)), icmp6Type(143), one(accept))...),
		rule("iifname . ip6 saddr != @ip6 drop", ifAddr(8, 16, "ip6")...),
		rule("icmpv6 type nd-neighbor-advert iifname . target != @ip6 drop",
			all(icmp6Type(136), one(meta(expr.MetaKeyIIFNAME, reg32), load(th, 8, 16, reg32+4), notIn("ip6", reg32), drop))...),
		rule("accept", accept),
	}}
	return &nftTable{family: nftables.TableFamilyBridge, name: tableName,
		sets:   append([]*nftSet{layoutSet()}, portSets.sets...),
		chains: []*nftChain{pre, anti, arp, ip4c, ip6c}}
}

// comboName names the chain of one combination of security groups.
func comboName(dir string, groups []string, d *desired) string {
	ids := make([]string, 0, len(groups))
	for _, g := range groups {
		ids = append(ids, d.groups[g].id)
	}
	sum := sha256.Sum256([]byte(strings.Join(ids, ",")))
	return dir + "-" + hex.EncodeToString(sum[:5])
}

// netSets are the sets made from the networks: their bridges, each
// bridge's conntrack zone, and the other hosts' underlay addresses.
func netSets(d *desired, bridgeIndex map[string]int) *nftPart {
	bridges := &nftSet{name: "bridges", keyType: typeIfname}
	zones := &nftSet{name: "zones", keyType: typeIfname, dataType: typeZone, isMap: true}
	under4 := &nftSet{name: "underlays4", keyType: nftables.TypeIPAddr}
	under6 := &nftSet{name: "underlays6", keyType: nftables.TypeIP6Addr}
	for _, n := range d.networks {
		if len(n.ports) == 0 && !n.overlay {
			continue
		}
		bridges.add(nftables.SetElement{Key: ifnameBytes(n.bridge)})
		zone := uint16(bridgeIndex[n.bridge])
		if zone == 0 {
			zone = 1
		}
		zones.add(nftables.SetElement{Key: ifnameBytes(n.bridge), Val: binary.NativeEndian.AppendUint16(nil, zone)})
		for _, r := range n.remotes {
			if r.underlay.Is4() {
				under4.add(nftables.SetElement{Key: r.underlay.AsSlice()})
			} else {
				under6.add(nftables.SetElement{Key: r.underlay.AsSlice()})
			}
		}
	}
	return &nftPart{sets: []*nftSet{bridges, zones, under4, under6}}
}

// portMaps are the verdict maps that send a port's traffic to the chain of
// its combination of groups (by bridge and address), and those chains.
func portMaps(d *desired) *nftPart {
	verdictMap := func(name string, key nftables.SetDatatype) *nftSet {
		return &nftSet{name: name, keyType: key, dataType: nftables.TypeVerdict, isMap: true, concat: true}
	}
	out4, out6 := verdictMap("out4", typeIfIP4), verdictMap("out6", typeIfIP6)
	in4, in6 := verdictMap("in4", typeIfIP4), verdictMap("in6", typeIfIP6)
	combos := map[string][]string{}
	for _, p := range d.ports {
		if !p.secure {
			continue
		}
		for _, dir := range []string{"pe", "pi"} {
			name := comboName(dir, p.groups, d)
			combos[name] = p.groups
			vm4, vm6 := in4, in6
			if dir == "pe" {
				vm4, vm6 = out4, out6
			}
			ifn := ifnameBytes(p.net.bridge)
			for _, a := range p.ips {
				e := nftables.SetElement{Key: concat(ifn, a.AsSlice()), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: name}}
				if a.Is4() {
					vm4.add(e)
				} else {
					vm6.add(e)
				}
			}
		}
	}
	part := &nftPart{sets: []*nftSet{out4, out6, in4, in6}}
	for _, name := range sortedKeys(combos) {
		gs := combos[name]
		dir := "i"
		if strings.HasPrefix(name, "pe-") {
			dir = "e"
		}
		c := &nftChain{name: name}
		for _, g := range gs {
			c.rules = append(c.rules, rule("jump sg-"+d.groups[g].id+"-"+dir, jump("sg-"+d.groups[g].id+"-"+dir)))
		}
		c.rules = append(c.rules, rule("drop", drop))
		part.chains = append(part.chains, c)
	}
	return part
}

// groupPart is a security group's sets and chains, one of each per
// direction: its rules by remote CIDR in one interval set per family, and
// those naming a remote group in a set per remote group, matched with
// that group's address set (memberSets).
func groupPart(g *dGroup, d *desired) *nftPart {
	part := &nftPart{}
	remotes := map[string]bool{}
	for _, ingress := range []bool{true, false} {
		dir := "e"
		if ingress {
			dir = "i"
		}
		s4 := &nftSet{name: "sg-" + g.id + "-" + dir + "4", keyType: typeIP4Svc, interval: true, concat: true}
		s6 := &nftSet{name: "sg-" + g.id + "-" + dir + "6", keyType: typeIP6Svc, interval: true, concat: true}
		byRemote := map[string][2]*nftSet{}
		for _, r := range g.rules {
			if r.ingress != ingress {
				continue
			}
			svcLo := concat([]byte{r.protoLo}, u16be(r.portLo))
			svcHi := concat([]byte{r.protoHi}, u16be(r.portHi))
			if r.remote != "" {
				rg := d.groups[r.remote]
				if rg == nil {
					continue // a group this host was not sent: no address matches
				}
				pair, ok := byRemote[r.remote]
				if !ok {
					base := "sg-" + g.id + "-r" + rg.id + "-" + dir
					pair = [2]*nftSet{
						{name: base + "4", keyType: typeSvc, interval: true, concat: true},
						{name: base + "6", keyType: typeSvc, interval: true, concat: true},
					}
					byRemote[r.remote] = pair
					remotes[r.remote] = true
				}
				fam := 0
				if r.v6 {
					fam = 1
				}
				pair[fam].add(nftables.SetElement{Key: svcLo, KeyEnd: svcHi})
				continue
			}
			e := nftables.SetElement{
				Key:    append(concat(r.cidr.Masked().Addr().AsSlice()), svcLo...),
				KeyEnd: append(concat(rangeEnd(r.cidr).AsSlice()), svcHi...),
			}
			if r.v6 {
				s6.add(e)
			} else {
				s4.add(e)
			}
		}
		part.sets = append(part.sets, s4, s6)
		addrOff := uint32(16) // ip daddr: egress rules match where traffic goes
		addr6Off := uint32(24)
		if ingress {
			addrOff, addr6Off = 12, 8 // saddr: ingress rules match where it comes from
		}
		svc := func(reg uint32) []expr.Any {
			return one(meta(expr.MetaKeyL4PROTO, reg), load(expr.PayloadBaseTransportHeader, 2, 2, reg+1))
		}
		ch := &nftChain{name: "sg-" + g.id + "-" + dir, rules: []nftRule{
			rule(fmt.Sprintf("ip addr@%d . l4proto . th dport @%s accept", addrOff, s4.name),
				all(nfproto(unix.NFPROTO_IPV4), one(load(expr.PayloadBaseNetworkHeader, addrOff, 4, reg32)), svc(reg32+1), one(lookup(s4.name, reg32), accept))...),
			rule(fmt.Sprintf("ip6 addr@%d . l4proto . th dport @%s accept", addr6Off, s6.name),
				all(nfproto(unix.NFPROTO_IPV6), one(load(expr.PayloadBaseNetworkHeader, addr6Off, 16, reg32)), svc(reg32+4), one(lookup(s6.name, reg32), accept))...),
		}}
		for _, rk := range sortedKeys(byRemote) {
			pair, rg := byRemote[rk], d.groups[rk]
			part.sets = append(part.sets, pair[0], pair[1])
			ch.rules = append(ch.rules,
				rule(fmt.Sprintf("ip addr@%d @ga-%s-4 l4proto . th dport @%s accept", addrOff, rg.id, pair[0].name),
					all(nfproto(unix.NFPROTO_IPV4), one(load(expr.PayloadBaseNetworkHeader, addrOff, 4, reg1), lookup("ga-"+rg.id+"-4", reg1)), svc(reg32), one(lookup(pair[0].name, reg32), accept))...),
				rule(fmt.Sprintf("ip6 addr@%d @ga-%s-6 l4proto . th dport @%s accept", addr6Off, rg.id, pair[1].name),
					all(nfproto(unix.NFPROTO_IPV6), one(load(expr.PayloadBaseNetworkHeader, addr6Off, 16, reg1), lookup("ga-"+rg.id+"-6", reg1)), svc(reg32), one(lookup(pair[1].name, reg32), accept))...),
			)
		}
		part.chains = append(part.chains, ch)
	}
	part.remotes = sortedKeys(remotes)
	return part
}

// memberSets are the address sets of a group named as a remote.
func memberSets(rg *dGroup) *nftPart {
	a4 := &nftSet{name: "ga-" + rg.id + "-4", keyType: nftables.TypeIPAddr}
	a6 := &nftSet{name: "ga-" + rg.id + "-6", keyType: nftables.TypeIP6Addr}
	for _, a := range rg.members4 {
		a4.add(nftables.SetElement{Key: a.AsSlice()})
	}
	for _, a := range rg.members6 {
		a6.add(nftables.SetElement{Key: a.AsSlice()})
	}
	return &nftPart{sets: []*nftSet{a4, a6}}
}

func inetTable(m *nftParts, d *desired, bridgeIndex map[string]int, vxlanPort int) *nftTable {
	t := &nftTable{family: nftables.TableFamilyINet, name: tableName}
	nets := m.part("inet/networks", fpNetworks(d, bridgeIndex), func() *nftPart { return netSets(d, bridgeIndex) })
	portPart := m.part("inet/ports", fpSecurePorts(d), func() *nftPart { return portMaps(d) })
	t.sets = append([]*nftSet{layoutSet()}, nets.sets...)
	t.sets = append(t.sets, portPart.sets...)

	// Security groups used by the ports: their sets and chains, and the
	// address sets of the groups they name as remotes.
	groups := map[string]bool{}
	for _, p := range d.ports {
		if p.secure {
			for _, g := range p.groups {
				groups[g] = true
			}
		}
	}
	var groupChains []*nftChain
	remotes := map[string]bool{}
	for _, gk := range sortedKeys(groups) {
		g := d.groups[gk]
		gp := m.part("inet/group/"+gk, fpGroup(g, d), func() *nftPart { return groupPart(g, d) })
		t.sets = append(t.sets, gp.sets...)
		groupChains = append(groupChains, gp.chains...)
		for _, rk := range gp.remotes {
			remotes[rk] = true
		}
	}
	for _, rk := range sortedKeys(remotes) {
		rg := d.groups[rk]
		mp := m.part("inet/members/"+rk, fpMembers(rg), func() *nftPart { return memberSets(rg) })
		t.sets = append(t.sets, mp.sets...)
	}

	zoneChain := &nftChain{name: "zone", base: baseChain(nftables.ChainHookPrerouting, prioRaw, nftables.ChainTypeFilter), rules: []nftRule{
		rule("ct zone set iifname map @zones", meta(expr.MetaKeyIIFNAME, reg1), mapTo("zones", reg1, reg1), &expr.Ct{Key: expr.CtKeyZONE, Register: reg1, SourceRegister: true}),
	}}
	vx := uint16(vxlanPort)
	input := &nftChain{name: "input", base: baseChain(nftables.ChainHookInput, prioFilter, nftables.ChainTypeFilter), rules: []nftRule{
		rule("iifname pvup* ct state new drop", all(ifPrefix(expr.MetaKeyIIFNAME, prefixUp, false), ctState(expr.CtStateBitNEW), one(drop))...),
		rule(fmt.Sprintf("ip saddr != @underlays4 udp dport %d drop", vx), all(nfproto(unix.NFPROTO_IPV4), ports(unix.IPPROTO_UDP, 0, vx), one(load(expr.PayloadBaseNetworkHeader, 12, 4, reg1), notIn("underlays4", reg1), drop))...),
		rule(fmt.Sprintf("ip6 saddr != @underlays6 udp dport %d drop", vx), all(nfproto(unix.NFPROTO_IPV6), ports(unix.IPPROTO_UDP, 0, vx), one(load(expr.PayloadBaseNetworkHeader, 8, 16, reg1), notIn("underlays6", reg1), drop))...),
	}}
	established := ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	egress := &nftChain{name: "egress", base: baseChain(nftables.ChainHookForward, prioFilter-10, nftables.ChainTypeFilter), rules: []nftRule{
		rule("iifname pvup* oifname pvup* drop", all(ifPrefix(expr.MetaKeyIIFNAME, prefixUp, false), ifPrefix(expr.MetaKeyOIFNAME, prefixUp, false), one(drop))...),
		rule(fmt.Sprintf("iifname pvup* udp dport %d drop", vx), all(ifPrefix(expr.MetaKeyIIFNAME, prefixUp, false), ports(unix.IPPROTO_UDP, 0, vx), one(drop))...),
		rule("iifname != @bridges accept", meta(expr.MetaKeyIIFNAME, reg1), notIn("bridges", reg1), accept),
		rule("ct state established,related accept", all(established, one(accept))...),
		rule("ct state invalid drop", all(ctState(expr.CtStateBitINVALID), one(drop))...),
		rule("udp sport 68 udp dport 67 accept", all(ports(unix.IPPROTO_UDP, 68, 67), one(accept))...),
		rule("udp sport 546 udp dport 547 accept", all(ports(unix.IPPROTO_UDP, 546, 547), one(accept))...),
		rule("icmpv6 type nd-router-solicit accept", all(icmp6Type(133), one(accept))...),
		rule("icmpv6 type nd-neighbor-solicit accept", all(icmp6Type(135), one(accept))...),
		rule("icmpv6 type nd-neighbor-advert accept", all(icmp6Type(136), one(accept))...),
		rule("icmpv6 type mld2-listener-report accept", all(icmp6Type(143), one(accept))...),
		rule("iifname . ip saddr vmap @out4", all(nfproto(unix.NFPROTO_IPV4), one(meta(expr.MetaKeyIIFNAME, reg32), load(expr.PayloadBaseNetworkHeader, 12, 4, reg32+4), vmap("out4", reg32)))...),
		rule("iifname . ip6 saddr vmap @out6", all(nfproto(unix.NFPROTO_IPV6), one(meta(expr.MetaKeyIIFNAME, reg32), load(expr.PayloadBaseNetworkHeader, 8, 16, reg32+4), vmap("out6", reg32)))...),
	}}
	ingress := &nftChain{name: "ingress", base: baseChain(nftables.ChainHookForward, prioFilter, nftables.ChainTypeFilter), rules: []nftRule{
		rule("oifname != @bridges accept", meta(expr.MetaKeyOIFNAME, reg1), notIn("bridges", reg1), accept),
		rule("ct state established,related accept", all(established, one(accept))...),
		rule("ct state invalid drop", all(ctState(expr.CtStateBitINVALID), one(drop))...),
		rule("udp sport 67 udp dport 68 accept", all(ports(unix.IPPROTO_UDP, 67, 68), one(accept))...),
		rule("udp sport 547 udp dport 546 accept", all(ports(unix.IPPROTO_UDP, 547, 546), one(accept))...),
		rule("icmpv6 type nd-router-advert accept", all(icmp6Type(134), one(accept))...),
		rule("icmpv6 type nd-neighbor-solicit accept", all(icmp6Type(135), one(accept))...),
		rule("icmpv6 type nd-neighbor-advert accept", all(icmp6Type(136), one(accept))...),
		rule("icmpv6 type mld-listener-query accept", all(icmp6Type(130), one(accept))...),
		rule("oifname . ip daddr vmap @in4", all(nfproto(unix.NFPROTO_IPV4), one(meta(expr.MetaKeyOIFNAME, reg32), load(expr.PayloadBaseNetworkHeader, 16, 4, reg32+4), vmap("in4", reg32)))...),
		rule("oifname . ip6 daddr vmap @in6", all(nfproto(unix.NFPROTO_IPV6), one(meta(expr.MetaKeyOIFNAME, reg32), load(expr.PayloadBaseNetworkHeader, 24, 16, reg32+4), vmap("in6", reg32)))...),
	}}
	t.chains = []*nftChain{zoneChain, input, egress, ingress}
	t.chains = append(t.chains, groupChains...)
	t.chains = append(t.chains, portPart.chains...)
	return t
}

// natTable masquerades the router namespaces' own addresses (their
// guests' traffic is already translated to them) when it leaves the host.
func natTable() *nftTable {
	post := &nftChain{name: "postrouting", base: baseChain(nftables.ChainHookPostrouting, prioSrcNAT, nftables.ChainTypeNAT), rules: []nftRule{
		rule("ip saddr "+transitRange.String()+" oifname != pvup* masquerade",
			all(inPrefix(12, transitRange), ifPrefix(expr.MetaKeyOIFNAME, prefixUp, true), one(&expr.Masq{}))...),
	}}
	return &nftTable{family: nftables.TableFamilyIPv4, name: natTableName, sets: []*nftSet{layoutSet()}, chains: []*nftChain{post}}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// applyHostNFT makes the host's tables match the state.
func (p *Plane) applyHostNFT(d *desired, ch *changes) error {
	if len(d.networks) == 0 {
		// A host with no network has no tables of ours.
		return p.removeNFTAt("", p.host, hostTables(newNFTParts(), d, nil, p.cfg.VXLANPort), ch)
	}
	if p.bridgeIndex == nil {
		p.bridgeIndex = map[string]int{}
	}
	for _, n := range d.networks {
		if _, ok := p.bridgeIndex[n.bridge]; !ok {
			if l, err := p.linkByName(n.bridge); err == nil {
				p.bridgeIndex[n.bridge] = l.Attrs().Index
			}
		}
	}
	return p.applyNFTAt("", p.host, hostTables(p.parts, d, p.bridgeIndex, p.cfg.VXLANPort), ch)
}
