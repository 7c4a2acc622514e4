package images

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"
)

// FetchPolicy says where Fetch may connect. The zero policy allows public
// unicast addresses only, and not the server's own: an address of one of
// its network interfaces, read when each connection is made, reaches the
// services it runs (bound to every address) as surely as loopback does.
// AllowNetworks and AllowHosts open more (an installation's own mirror on
// a private network); the cloud metadata addresses stay refused whatever
// they say.
//
// The policy is applied to the address each connection is actually made
// to, after name resolution, for the first request and every redirect.
type FetchPolicy struct {
	// AllowNetworks are networks Fetch may reach although they are not
	// public (10.1.0.0/16, fd12::/48, 127.0.0.1/32). The server's own
	// addresses other than loopback are opened only by a network of that
	// one address (/32, /128): allowing its LAN does not allow the server.
	AllowNetworks []netip.Prefix
	// AllowHosts are host names whose addresses Fetch may reach whatever
	// they are: "mirror.internal", or "*.internal" for every name under a
	// domain.
	AllowHosts []string

	// ownAddrs lists the server's addresses; nil reads its interfaces.
	ownAddrs func() ([]netip.Addr, error)
}

// WithPolicy sets where Fetch may connect (see FetchPolicy).
func WithPolicy(p FetchPolicy) FetchOption {
	return func(c *fetchConfig) { c.policy = p }
}

// ParseAllowHost checks an AllowHosts entry and returns it in the form
// the policy compares: lower case, without a trailing dot.
func ParseAllowHost(s string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("%q is not a host name", s)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", fmt.Errorf("%q is an address: allow it as a network (%s/32 or /128)", s, name)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return "", fmt.Errorf("%q is not a host name", s)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return "", fmt.Errorf("%q is not a host name", s)
			}
		}
	}
	return h, nil
}

// blockedRange is a network Fetch does not reach unless allowed.
type blockedRange struct {
	prefix netip.Prefix
	what   string
}

func mustPrefixes(what string, cidrs ...string) []blockedRange {
	out := make([]blockedRange, len(cidrs))
	for i, c := range cidrs {
		out[i] = blockedRange{netip.MustParsePrefix(c), what}
	}
	return out
}

// blocked lists the networks that are not the public internet (IANA's
// special-purpose address registries). IPv4-mapped IPv6 addresses are
// unmapped before they are looked up; NAT64 and 6to4 addresses are
// judged by the IPv4 address they carry.
var blocked = concat(
	mustPrefixes("unspecified", "0.0.0.0/8", "::/128"),
	mustPrefixes("loopback", "127.0.0.0/8", "::1/128"),
	mustPrefixes("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
	mustPrefixes("unique local", "fc00::/7"),
	mustPrefixes("shared (CGNAT)", "100.64.0.0/10"),
	mustPrefixes("link-local", "169.254.0.0/16", "fe80::/10"),
	mustPrefixes("site-local", "fec0::/10"),
	mustPrefixes("multicast", "224.0.0.0/4", "ff00::/8"),
	mustPrefixes("broadcast", "255.255.255.255/32"),
	mustPrefixes("reserved", "240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15", "192.88.99.0/24",
		"::/96", "100::/64", "64:ff9b:1::/48", "2001::/23"),
	mustPrefixes("documentation", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
)

// metadata are the cloud instance-metadata services: never reachable,
// whatever the allow-list says.
var metadata = mustPrefixes("cloud metadata",
	"169.254.169.254/32", // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
	"169.254.170.2/32",   // AWS ECS task metadata
	"fd00:ec2::254/128",  // AWS over IPv6
	"168.63.129.16/32",   // Azure wire server
	"100.100.100.200/32", // Alibaba Cloud
	"192.0.0.192/32",     // Oracle Cloud
)

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	global6   = netip.MustParsePrefix("2000::/3")
)

func concat(lists ...[]blockedRange) []blockedRange {
	var out []blockedRange
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// classify names the special-purpose network ip is in, "" for a public
// unicast address.
func classify(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return "invalid"
	}
	if ip.Is6() {
		// An IPv4 address carried inside an IPv6 one reaches that IPv4
		// host: judge it.
		switch {
		case nat64.Contains(ip):
			b := ip.As16()
			return classify(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(ip):
			b := ip.As16()
			return classify(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, r := range blocked {
		if r.prefix.Contains(ip) {
			return r.what
		}
	}
	if ip.Is6() && !global6.Contains(ip) {
		return "reserved"
	}
	return ""
}

// isMetadata tells whether ip is a cloud metadata service, in any of its
// IPv6 forms.
func isMetadata(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return isMetadata(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(ip):
			return isMetadata(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, r := range metadata {
		if r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// DestinationError is a connection Fetch refused to make: the address
// the host resolved to is not public and the policy does not allow it.
type DestinationError struct {
	Host string
	Addr netip.Addr
	// What names the kind of network ("loopback", "private", ...).
	What string
}

// ownAddress is the What of a DestinationError for an address of the
// server itself.
const ownAddress = "own"

func (e *DestinationError) Error() string {
	if e.What == ownAddress {
		return fmt.Sprintf("%s resolves to %s, an address of this server, which the fetch policy does not allow", e.Host, e.Addr)
	}
	return fmt.Sprintf("%s resolves to %s, a %s address, which the fetch policy does not allow", e.Host, e.Addr, e.What)
}

// interfaceAddrs lists the addresses of the host's network interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the server's addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// carried is the IPv4 address an IPv6 one reaches through NAT64 or 6to4,
// or ip itself.
func carried(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return netip.AddrFrom4([4]byte(b[12:16]))
		case sixToFour.Contains(ip):
			return netip.AddrFrom4([4]byte(b[2:6]))
		}
	}
	return ip
}

// own tells whether ip (or the IPv4 address it carries) is one of the
// server's own addresses.
func (p *FetchPolicy) own(ip netip.Addr) (bool, error) {
	list := p.ownAddrs
	if list == nil {
		list = interfaceAddrs
	}
	addrs, err := list()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if a == ip || a == carried(ip) {
			return true, nil
		}
	}
	return false, nil
}

// allowHost tells whether the policy allows host by name.
func (p *FetchPolicy) allowHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, h := range p.AllowHosts {
		if h == host {
			return true
		}
		if d, ok := strings.CutPrefix(h, "*."); ok && strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// check decides a connection to ip made for host. internal reports that
// ip is not public and was allowed by the policy.
func (p *FetchPolicy) check(host string, ip netip.Addr) (internal bool, err error) {
	ip = ip.Unmap().WithZone("")
	if isMetadata(ip) {
		return false, &DestinationError{Host: host, Addr: ip, What: "cloud metadata"}
	}
	what := classify(ip)
	if what != "loopback" && what != "unspecified" {
		// Loopback is the server too, but refused as such already.
		own, err := p.own(ip)
		if err != nil {
			return false, err
		}
		if own {
			if p.allowHost(host) || slices.ContainsFunc(p.AllowNetworks, func(n netip.Prefix) bool {
				return n.IsSingleIP() && n.Addr().Unmap() == ip
			}) {
				return true, nil
			}
			return false, &DestinationError{Host: host, Addr: ip, What: ownAddress}
		}
	}
	if what == "" {
		return false, nil
	}
	if p.allowHost(host) {
		return true, nil
	}
	for _, n := range p.AllowNetworks {
		if n.Contains(ip) {
			return true, nil
		}
	}
	return false, &DestinationError{Host: host, Addr: ip, What: what}
}

// guardedDialer dials like net.Dialer but checks, on the socket about to
// connect, the address it connects to: after name resolution, for every
// address tried. onInternal is called when a connection goes to an
// address the policy allowed although it is not public.
func guardedDialer(p FetchPolicy, resolver *net.Resolver, onInternal func()) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", addr, err)
		}
		d := &net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
			Resolver:  resolver,
			ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil {
					return fmt.Errorf("connecting to %s: %w", address, err)
				}
				internal, err := p.check(host, ap.Addr())
				if err != nil {
					return err
				}
				if internal && onInternal != nil {
					onInternal()
				}
				return nil
			},
		}
		return d.DialContext(ctx, network, addr)
	}
}
