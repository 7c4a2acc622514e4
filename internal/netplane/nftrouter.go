package netplane

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// routerTable is the table of a network's router namespace: floating IPs
// translated one to one (in: to the port's fixed address; out: from it),
// the rest of the guests' outbound traffic masqueraded when the network
// has NAT and dropped when it has not, and nothing let in from the uplink
// but answers and floating IPs' traffic.
func routerTable(n *dNet, fips []*dFIP) *nftTable {
	dnat := &nftSet{name: "fip-dnat", keyType: nftables.TypeIPAddr, dataType: nftables.TypeIPAddr, isMap: true}
	snat := &nftSet{name: "fip-snat", keyType: nftables.TypeIPAddr, dataType: nftables.TypeIPAddr, isMap: true}
	fixed := &nftSet{name: "fip-fixed", keyType: nftables.TypeIPAddr}
	for _, f := range fips {
		dnat.add(nftables.SetElement{Key: f.addr.AsSlice(), Val: f.fixed.AsSlice()})
		snat.add(nftables.SetElement{Key: f.fixed.AsSlice(), Val: f.addr.AsSlice()})
		fixed.add(nftables.SetElement{Key: f.fixed.AsSlice()})
	}
	nh := expr.PayloadBaseNetworkHeader
	natTo := func(t expr.NATType) expr.Any {
		return &expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}
	}
	pre := &nftChain{name: "prerouting", base: baseChain(nftables.ChainHookPrerouting, prioDstNAT, nftables.ChainTypeNAT), rules: []nftRule{
		rule("iifname up dnat to ip daddr map @fip-dnat",
			all(ifIs(expr.MetaKeyIIFNAME, routerUp), one(load(nh, 16, 4, reg1), mapTo("fip-dnat", reg1, reg1), natTo(expr.NATTypeDestNAT)))...),
	}}
	post := &nftChain{name: "postrouting", base: baseChain(nftables.ChainHookPostrouting, prioSrcNAT, nftables.ChainTypeNAT), rules: []nftRule{
		rule("oifname up snat to ip saddr map @fip-snat",
			all(ifIs(expr.MetaKeyOIFNAME, routerUp), one(load(nh, 12, 4, reg1), mapTo("fip-snat", reg1, reg1), natTo(expr.NATTypeSourceNAT)))...),
	}}
	dnatBit := binary.NativeEndian.AppendUint32(nil, 1<<5) // IPS_DST_NAT
	fwd := &nftChain{name: "forward", base: baseChain(nftables.ChainHookForward, prioFilter, nftables.ChainTypeFilter), rules: []nftRule{
		rule("iifname up ct status dnat accept", all(ifIs(expr.MetaKeyIIFNAME, routerUp), one(
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: dnatBit, Xor: make([]byte, 4)},
			cmp(expr.CmpOpNeq, reg1, make([]byte, 4)), accept))...),
		rule("iifname up ct state established,related accept", all(ifIs(expr.MetaKeyIIFNAME, routerUp), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), one(accept))...),
		rule("iifname up drop", all(ifIs(expr.MetaKeyIIFNAME, routerUp), one(drop))...),
		rule("oifname up ip saddr @fip-fixed accept", all(ifIs(expr.MetaKeyOIFNAME, routerUp), one(load(nh, 12, 4, reg1), lookup("fip-fixed", reg1), accept))...),
	}}
	if n.nat {
		post.rules = append(post.rules, rule("oifname up masquerade", all(ifIs(expr.MetaKeyOIFNAME, routerUp), one(&expr.Masq{}))...))
	} else {
		fwd.rules = append(fwd.rules, rule("oifname up drop", all(ifIs(expr.MetaKeyOIFNAME, routerUp), one(drop))...))
	}
	return &nftTable{family: nftables.TableFamilyIPv4, name: tableName,
		sets:   []*nftSet{layoutSet(), dnat, snat, fixed},
		chains: []*nftChain{pre, post, fwd}}
}
