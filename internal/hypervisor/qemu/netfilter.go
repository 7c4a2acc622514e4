package qemu

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A guest's user-mode NIC is served by passt, which opens a socket on the
// host for every connection the guest makes. passt's --no-map-gw keeps it
// from mapping the gateway address to the host's loopback, but a guest that
// routes 127.0.0.1 out of its NIC still has passt connect to the host's
// 127.0.0.1. So the host's firewall refuses every packet to a loopback
// address from a socket of the user QEMU and passt run as, whoever made it.

// Where the rules live: a table of Polyvisor's own, so no other rule set
// is touched, replaced whole on each agent start.
const (
	nftTable = "polyvisor"
	nftChain = "guest-loopback"
)

// Storage endpoints (an nbd pool's export, reached by the hosts over the
// network and carrying no authentication) are refused to the same sockets:
// a guest's connections leave through passt from the host's own stack, so
// only the socket's owner tells a guest's packet from its agent's.

// closeLoopback installs, or replaces, the rules that refuse packets to
// 127.0.0.0/8 and ::1 from sockets owned by uid, in the current network
// namespace, in one transaction.
func closeLoopback(uid uint32) error { return closeToGuests(uid, nil) }

// closeToGuests installs, or replaces, in one transaction, the rules that
// refuse packets from sockets owned by uid to the loopback addresses and
// to each TCP endpoint of denied.
func closeToGuests(uid uint32, denied []netip.AddrPort) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     nftChain,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	c.FlushChain(ch)
	for _, dst := range []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: loopbackRule(uid, dst)})
	}
	for _, ep := range denied {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: endpointRule(uid, ep)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("installing nftables rules: %w", err)
	}
	return nil
}

// DenyGuests refuses the guests' user-mode NICs (passt, run as the jail's
// user) the TCP endpoints given, beside the host's loopback, in place of
// the endpoints it refused before.
func (d *Driver) DenyGuests(ctx context.Context, endpoints []netip.AddrPort) error {
	c := d.confinement()
	if !c.loopback {
		return fmt.Errorf("refusing guests %d storage endpoints: the guests' sockets cannot be told apart on this host (%s)", len(endpoints), strings.Join(c.notes, "; "))
	}
	d.denyMu.Lock()
	defer d.denyMu.Unlock()
	if err := closeToGuests(uint32(c.uid), endpoints); err != nil {
		return fmt.Errorf("refusing guests %d storage endpoints: %w", len(endpoints), err)
	}
	return nil
}

var _ hypervisor.GuestDenier = (*Driver)(nil)

// endpointRule is "meta skuid uid <family> daddr addr tcp dport port
// reject".
func endpointRule(uid uint32, ep netip.AddrPort) []expr.Any {
	addr := ep.Addr().Unmap()
	match := loopbackRule(uid, netip.PrefixFrom(addr, addr.BitLen()))
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, ep.Port())
	reject := match[len(match)-1]
	return append(match[:len(match)-1:len(match)-1],
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		reject,
	)
}

// loopbackRule is "meta skuid uid <family> daddr dst reject".
func loopbackRule(uid uint32, dst netip.Prefix) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // IPv4 destination
	if dst.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24
	}
	addr := dst.Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i := 0; i < dst.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	owner := make([]byte, 4)
	binary.NativeEndian.PutUint32(owner, uid)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: owner},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dst.Masked().Addr().AsSlice()},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	}
}
