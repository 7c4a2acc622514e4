package network

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
)

// u128 is an address as a number, for arithmetic on IPv4 and IPv6 alike.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func fromU128(v u128, is4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	a := netip.AddrFrom16(b)
	if is4 {
		return a.Unmap()
	}
	return a
}

func (v u128) add(n u128) u128 {
	lo, carry := bits.Add64(v.lo, n.lo, 0)
	hi, _ := bits.Add64(v.hi, n.hi, carry)
	return u128{hi, lo}
}

func (v u128) sub(n u128) u128 {
	lo, borrow := bits.Sub64(v.lo, n.lo, 0)
	hi, _ := bits.Sub64(v.hi, n.hi, borrow)
	return u128{hi, lo}
}

func (v u128) less(n u128) bool { return v.hi < n.hi || (v.hi == n.hi && v.lo < n.lo) }

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ start, end netip.Addr }

// size is the number of addresses in r.
func (r addrRange) size() u128 { return toU128(r.end).sub(toU128(r.start)).add(u128{0, 1}) }

// at is the address at offset off of r (off < size).
func (r addrRange) at(off u128) netip.Addr { return fromU128(toU128(r.start).add(off), r.start.Is4()) }

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	hostBits := p.Addr().BitLen() - p.Bits()
	v := toU128(p.Masked().Addr())
	if hostBits >= 64 {
		v.lo = ^uint64(0)
		v.hi |= (uint64(1) << (hostBits - 64)) - 1
		if hostBits == 128 {
			v.hi = ^uint64(0)
		}
	} else {
		v.lo |= (uint64(1) << hostBits) - 1
	}
	return fromU128(v, p.Addr().Is4())
}

// subnetPlan is a subnet's addresses as the allocator sees them.
type subnetPlan struct {
	prefix  netip.Prefix
	gateway netip.Addr
	pools   []addrRange
}

// usable tells whether a is an address a port may hold in the subnet:
// inside it, neither its network nor (IPv4) its broadcast address, and not
// its gateway.
func (p *subnetPlan) usable(a netip.Addr) error {
	if !p.prefix.Contains(a) {
		return fmt.Errorf("%s is outside the subnet's %s", a, p.prefix)
	}
	if a == p.prefix.Masked().Addr() {
		return fmt.Errorf("%s is the network address of %s", a, p.prefix)
	}
	if a.Is4() && a == lastAddr(p.prefix) {
		return fmt.Errorf("%s is the broadcast address of %s", a, p.prefix)
	}
	if a == p.gateway {
		return fmt.Errorf("%s is the subnet's gateway", a)
	}
	return nil
}

// poolSize is how many addresses the pools hold (the gateway included if
// a pool holds it), capped at 2^64-1.
func (p *subnetPlan) poolSize() uint64 {
	var total u128
	for _, r := range p.pools {
		total = total.add(r.size())
	}
	if total.hi > 0 {
		return ^uint64(0)
	}
	return total.lo
}

// enumerateLimit is the pool size up to which the allocator lists every
// free address and picks among them; above it, it draws at random.
const enumerateLimit = 1 << 16

// pick returns a free address of the pools: not in taken, not the
// gateway, and not in avoid unless nothing else is free. ok is false when
// no address is free.
func (p *subnetPlan) pick(taken, avoid map[netip.Addr]bool) (netip.Addr, bool) {
	free := func(a netip.Addr) bool { return !taken[a] && p.usable(a) == nil }
	size := p.poolSize()
	if size <= enumerateLimit {
		var best, fallback []netip.Addr
		for _, r := range p.pools {
			for a := r.start; a.IsValid() && !r.end.Less(a); a = a.Next() {
				if !free(a) {
					continue
				}
				if avoid[a] {
					fallback = append(fallback, a)
				} else {
					best = append(best, a)
				}
			}
		}
		if len(best) == 0 {
			best = fallback
		}
		if len(best) == 0 {
			return netip.Addr{}, false
		}
		return best[randN(uint64(len(best)))], true
	}
	// A large pool: random draws find a free address at once unless the
	// pool is nearly full, which a pool this size cannot be (there are
	// not that many ports); then walk on from a random place.
	for range 64 {
		a := p.at(randN(size))
		if free(a) && !avoid[a] {
			return a, true
		}
	}
	start := randN(size)
	for i := uint64(0); i < enumerateLimit; i++ {
		if a := p.at((start + i) % size); free(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// at is the address at offset off across the pools.
func (p *subnetPlan) at(off uint64) netip.Addr {
	o := u128{0, off}
	for _, r := range p.pools {
		if o.less(r.size()) {
			return r.at(o)
		}
		o = o.sub(r.size())
	}
	return netip.Addr{}
}

// randN is a uniform random number below n (n > 0).
func randN(n uint64) uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) % n
}

// newRuleID is a random id for a security group rule.
func newRuleID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// randomMAC is a locally administered unicast MAC in QEMU's 52:54:00 range.
func randomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}

// VXLAN ids handed to overlay networks.
const (
	minVNI = 1
	maxVNI = 1<<24 - 1
)

func randomVNI() int { return minVNI + int(randN(maxVNI-minVNI+1)) }
