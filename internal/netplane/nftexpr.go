package netplane

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders of nftables expressions. Concatenations are loaded into
// consecutive 32-bit registers from reg32 on, each field padded to a
// multiple of 4 bytes, as nft does.

// Hook priorities, as nft names them.
const (
	prioRaw    nftables.ChainPriority = -300
	prioDstNAT nftables.ChainPriority = -100
	prioFilter nftables.ChainPriority = 0
	prioSrcNAT nftables.ChainPriority = 100
)

const (
	regV   = 0 // the verdict register
	reg1   = 1 // NFT_REG_1, 16 bytes
	reg32  = 8 // NFT_REG32_00
	ifsize = 16
)

// Set key types.
var (
	typeIfname     = nftables.TypeIFName
	typeIfMAC      = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)
	typeIfIP4      = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	typeIfIP6      = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
	typeIP4Svc     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	typeIP6Svc     = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	typeSvc        = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	typeZone       = zoneType()
	typeLayoutMark = nftables.TypeInteger
)

func zoneType() nftables.SetDatatype {
	t := nftables.TypeInteger
	t.Bytes = 2
	return t
}

func ifnameBytes(name string) []byte {
	b := make([]byte, ifsize)
	copy(b, name)
	return b
}

// pad4 pads b with zeros to a multiple of 4 bytes.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// concat joins the fields of a concatenated key.
func concat(fields ...[]byte) []byte {
	var out []byte
	for _, f := range fields {
		out = append(out, pad4(append([]byte(nil), f...))...)
	}
	return out
}

func u16be(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func meta(key expr.MetaKey, reg uint32) expr.Any { return &expr.Meta{Key: key, Register: reg} }

func load(base expr.PayloadBase, offset, length, reg uint32) expr.Any {
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: base, Offset: offset, Len: length}
}

func cmp(op expr.CmpOp, reg uint32, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: reg, Data: data}
}

func eq(reg uint32, data []byte) expr.Any { return cmp(expr.CmpOpEq, reg, data) }

func lookup(set string, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: set}
}

func notIn(set string, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: set, Invert: true}
}

// vmap jumps through a verdict map.
func vmap(set string, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, DestRegister: regV, IsDestRegSet: true, SetName: set}
}

// mapTo loads the value a map holds for the key in reg into dreg.
func mapTo(set string, reg, dreg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, DestRegister: dreg, IsDestRegSet: true, SetName: set}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

var (
	accept = verdict(expr.VerdictAccept)
	drop   = verdict(expr.VerdictDrop)
)

// nfproto matches the packet's family (inet tables).
func nfproto(family byte) []expr.Any {
	return []expr.Any{meta(expr.MetaKeyNFPROTO, reg1), eq(reg1, []byte{family})}
}

// l4proto matches the transport protocol.
func l4proto(proto byte) []expr.Any {
	return []expr.Any{meta(expr.MetaKeyL4PROTO, reg1), eq(reg1, []byte{proto})}
}

// ports matches a UDP or TCP source and destination port.
func ports(proto byte, sport, dport uint16) []expr.Any {
	out := l4proto(proto)
	if sport != 0 {
		out = append(out, load(expr.PayloadBaseTransportHeader, 0, 2, reg1), eq(reg1, u16be(sport)))
	}
	if dport != 0 {
		out = append(out, load(expr.PayloadBaseTransportHeader, 2, 2, reg1), eq(reg1, u16be(dport)))
	}
	return out
}

// icmp6Type matches an ICMPv6 message type.
func icmp6Type(t byte) []expr.Any {
	return append(l4proto(unix.IPPROTO_ICMPV6), load(expr.PayloadBaseTransportHeader, 0, 1, reg1), eq(reg1, []byte{t}))
}

// ctState matches conntrack states (a mask of expr.CtState* bits).
func ctState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, mask), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, reg1, make([]byte, 4)),
	}
}

// ifPrefix matches an interface name beginning with prefix.
func ifPrefix(key expr.MetaKey, prefix string, neg bool) []expr.Any {
	op := expr.CmpOpEq
	if neg {
		op = expr.CmpOpNeq
	}
	return []expr.Any{meta(key, reg1), cmp(op, reg1, []byte(prefix))}
}

// ifIs matches an interface name exactly.
func ifIs(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{meta(key, reg1), eq(reg1, ifnameBytes(name))}
}

// inPrefix matches the 4-byte IPv4 address at offset of the network
// header against a prefix.
func inPrefix(offset uint32, p netip.Prefix) []expr.Any {
	return []expr.Any{
		load(expr.PayloadBaseNetworkHeader, offset, 4, reg1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		eq(reg1, p.Masked().Addr().AsSlice()),
	}
}

// rangeEnd is the last address of a prefix.
func rangeEnd(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// all joins expression lists.
func all(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(e ...expr.Any) []expr.Any { return e }
