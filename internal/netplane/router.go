package netplane

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Each overlay network has, on every host with a port on it, a router
// namespace: its "gw" end of a veth on the network's bridge holds every
// subnet's gateway address with the network's gateway MAC (the same on
// every host: a distributed gateway), dnsmasq serves DHCP and DNS there,
// and its "up" end of a second veth reaches the host through a /31 of the
// transit range, for outbound NAT and floating IPs. Networks of different
// projects may use the same addresses: each has its own namespace.

// transitRange holds the /31s between the host and its router namespaces:
// the lower half of 169.254.0.0/16 (never 169.254.169.254).
var transitRange = netip.MustParsePrefix("169.254.0.0/17")

// router is one network's router namespace.
type router struct {
	id   string
	path string
	ns   netns.NsHandle
	nl   *netlink.Handle
}

// linkAttrs is Plane.linkAttrs inside the router namespace.
func (r *router) linkAttrs(l netlink.Link, mtu int, mac net.HardwareAddr, ch *changes) error {
	a := l.Attrs()
	if mtu != 0 && a.MTU != mtu {
		if err := r.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("setting mtu of %s in router %s: %w", a.Name, r.id, err)
		}
		ch.add("router %s: %s mtu %d", r.id, a.Name, mtu)
	}
	if mac != nil && string(a.HardwareAddr) != string(mac) {
		if err := r.nl.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("setting mac of %s in router %s: %w", a.Name, r.id, err)
		}
		ch.add("router %s: %s mac %s", r.id, a.Name, mac)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := r.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up in router %s: %w", a.Name, r.id, err)
		}
		ch.add("router %s: %s up", r.id, a.Name)
	}
	return nil
}

// routerSet is the router namespaces of one Apply.
type routerSet struct {
	p    *Plane
	byID map[string]*router
}

func (s *routerSet) get(id string) *router {
	if s == nil {
		return nil
	}
	return s.byID[id]
}

func (s *routerSet) close() {
	for _, r := range s.byID {
		r.nl.Close()
		r.ns.Close()
	}
}

func (p *Plane) routerPath(id string) string {
	return filepath.Join(p.cfg.StateDir, "netns", prefixRouter+id)
}

// applyRouterNamespaces opens the router namespace of each network that
// has one, making those that are missing.
func (p *Plane) applyRouterNamespaces(d *desired, ch *changes) (*routerSet, error) {
	s := &routerSet{p: p, byID: map[string]*router{}}
	var errs []error
	for _, n := range sortedNets(d) {
		if !n.router() {
			continue
		}
		r, err := p.openRouter(n.id, ch)
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.key, err))
			continue
		}
		s.byID[n.id] = r
	}
	return s, errors.Join(errs...)
}

// openRouter opens a network's router namespace, or makes it. A namespace
// whose file is gone (an agent run in a mount namespace of its own that
// ended) is found again through its dnsmasq and bound again.
func (p *Plane) openRouter(id string, ch *changes) (*router, error) {
	path := p.routerPath(id)
	ns, err := openNamedNetns(path)
	if err != nil {
		if pid := p.dhcp.runningPID(id); pid > 0 {
			os.Remove(path)
			if berr := bindNetns(fmt.Sprintf("/proc/%d/ns/net", pid), path); berr == nil {
				ns, err = openNamedNetns(path)
				if err == nil {
					ch.add("router %s: namespace found again through its dnsmasq", id)
				}
			}
		}
	}
	if err != nil {
		os.Remove(path)
		if ns, err = createNamedNetns(path); err != nil {
			return nil, fmt.Errorf("making router namespace: %w", err)
		}
		ch.add("made router namespace %s", prefixRouter+id)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("opening netlink in router namespace: %w", err)
	}
	return &router{id: id, path: path, ns: ns, nl: h}, nil
}

// removeStale removes the router namespaces no network needs any more,
// after their dnsmasq.
func (s *routerSet) removeStale(ch *changes) error {
	p := s.p
	ents, err := os.ReadDir(filepath.Join(p.cfg.StateDir, "netns"))
	if err != nil {
		return fmt.Errorf("listing router namespaces: %w", err)
	}
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), prefixRouter)
		if !ok || s.byID[id] != nil {
			continue
		}
		p.dhcp.stop(id, ch)
		if err := deleteNamedNetns(p.routerPath(id)); err != nil {
			errs = append(errs, err)
			continue
		}
		ch.add("removed router namespace %s", e.Name())
	}
	return errors.Join(errs...)
}

// applyRouter makes the inside of a network's router namespace: the
// gateway addresses, the uplink and its default route, forwarding, and the
// namespace's NAT and filter rules.
func (p *Plane) applyRouter(n *dNet, r *router, d *desired, ch *changes) error {
	if r == nil {
		return fmt.Errorf("network %s: its router namespace is not made", n.key)
	}
	gw, err := r.nl.LinkByName(routerGW)
	if err != nil {
		return fmt.Errorf("network %s: reading the gateway device: %w", n.key, err)
	}
	var want []netip.Prefix
	for _, s := range n.subnets {
		want = append(want, netip.PrefixFrom(s.gateway, s.prefix.Bits()))
	}
	if err := syncAddrs(r.nl, gw, want, ch, "router "+n.id); err != nil {
		return fmt.Errorf("network %s: %w", n.key, err)
	}
	if err := p.applyUplink(n, r, ch); err != nil {
		return fmt.Errorf("network %s: %w", n.key, err)
	}
	for _, kv := range [][2]string{{"ipv4/ip_forward", "1"}, {"ipv6/conf/all/forwarding", "1"}, {"ipv6/conf/" + routerUp + "/disable_ipv6", "1"}} {
		changed, err := sysctl(r.ns, kv[0], kv[1])
		if err != nil {
			return fmt.Errorf("network %s: %w", n.key, err)
		}
		if changed {
			ch.add("router %s: %s=%s", n.id, kv[0], kv[1])
		}
	}
	var fips []*dFIP
	for _, f := range d.fips {
		if f.port.net == n {
			fips = append(fips, f)
		}
	}
	return p.applyNFTAt(r.path, r.ns, []*nftTable{routerTable(n, fips)}, ch)
}

// applyUplink gives the router's uplink its /31 of the transit range (the
// one it has, else the lowest free one) and a default route to the host.
func (p *Plane) applyUplink(n *dNet, r *router, ch *changes) error {
	up, err := r.nl.LinkByName(routerUp)
	if err != nil {
		return fmt.Errorf("reading the uplink: %w", err)
	}
	hostUp, err := p.linkByName(prefixUp + n.id)
	if err != nil {
		return fmt.Errorf("reading %s: %w", prefixUp+n.id, err)
	}
	hostAddr, err := p.transitOf(hostUp)
	if err != nil {
		return err
	}
	inner := hostAddr.Next()
	if err := syncAddrs(p.nl, hostUp, []netip.Prefix{netip.PrefixFrom(hostAddr, 31)}, ch, "host"); err != nil {
		return err
	}
	if err := syncAddrs(r.nl, up, []netip.Prefix{netip.PrefixFrom(inner, 31)}, ch, "router "+n.id); err != nil {
		return err
	}
	routes, err := r.nl.RouteList(up, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.IP.IsUnspecified() {
			if rt.Gw.Equal(net.IP(hostAddr.AsSlice())) {
				return nil
			}
		}
	}
	def := &netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.IP(hostAddr.AsSlice()), Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if err := r.nl.RouteReplace(def); err != nil {
		return fmt.Errorf("routing the router's traffic to the host: %w", err)
	}
	ch.add("router %s: default route via %s", n.id, hostAddr)
	return nil
}

// transitOf returns the host's address of an uplink: the one it has, else
// the lowest /31 of the transit range no other uplink uses.
func (p *Plane) transitOf(hostUp netlink.Link) (netip.Addr, error) {
	if a, ok := transitAddr(p.nl, hostUp); ok {
		return a, nil
	}
	links, err := p.linkList()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing devices: %w", err)
	}
	used := map[netip.Addr]bool{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefixUp) {
			if a, ok := transitAddr(p.nl, l); ok {
				used[a] = true
			}
		}
	}
	for a := transitRange.Addr(); transitRange.Contains(a); a = a.Next().Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("the transit range for router namespaces is full")
}

// transitAddr is a host uplink's /31 address in the transit range.
func transitAddr(h *netlink.Handle, l netlink.Link) (netip.Addr, bool) {
	addrs, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && transitRange.Contains(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// syncAddrs gives a device exactly the addresses want (IPv6 link-local
// addresses are left alone).
func syncAddrs(h *netlink.Handle, l netlink.Link, want []netip.Prefix, ch *changes, where string) error {
	have, err := h.AddrList(l, unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	keep := map[netip.Prefix]bool{}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		bits, _ := a.Mask.Size()
		pfx := netip.PrefixFrom(ip, bits)
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		found := false
		for _, w := range want {
			found = found || w == pfx
		}
		if found {
			keep[pfx] = true
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing %s from %s: %w", pfx, l.Attrs().Name, err)
		}
		ch.add("%s: removed %s from %s", where, pfx, l.Attrs().Name)
	}
	for _, w := range want {
		if keep[w] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(w.Addr().AsSlice()), Mask: net.CIDRMask(w.Bits(), w.Addr().BitLen())}}
		if w.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("adding %s to %s: %w", w, l.Attrs().Name, err)
		}
		ch.add("%s: added %s to %s", where, w, l.Attrs().Name)
	}
	return nil
}

// applyHostFloatingIPs routes each floating IP from the host to its
// network's router namespace, and answers ARP for it on its external
// network's bridge (a proxy neighbour entry); the entries of floating IPs
// gone are removed.
func (p *Plane) applyHostFloatingIPs(d *desired, ch *changes) error {
	type want struct {
		bridge int
		via    netip.Addr
		up     int
	}
	wantByAddr := map[netip.Addr]want{}
	var errs []error
	for _, f := range d.fips {
		br, err := p.linkByName(f.ext.bridge)
		if err != nil {
			errs = append(errs, fmt.Errorf("floating ip %s: bridge %s: %w", f.addr, f.ext.bridge, err))
			continue
		}
		up, err := p.linkByName(prefixUp + f.port.net.id)
		if err != nil {
			errs = append(errs, fmt.Errorf("floating ip %s: %w", f.addr, err))
			continue
		}
		hostAddr, ok := transitAddr(p.nl, up)
		if !ok {
			errs = append(errs, fmt.Errorf("floating ip %s: its router has no uplink address", f.addr))
			continue
		}
		wantByAddr[f.addr] = want{bridge: br.Attrs().Index, via: hostAddr.Next(), up: up.Attrs().Index}
	}
	// Routes: /32s through an uplink.
	routes, err := p.nl.RouteList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	uplinks := map[int]bool{}
	if links, err := p.linkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, prefixUp) {
				uplinks[l.Attrs().Index] = true
			}
		}
	}
	haveRoute := map[netip.Addr]bool{}
	for _, rt := range routes {
		if rt.Dst == nil || !uplinks[rt.LinkIndex] {
			continue
		}
		if ones, _ := rt.Dst.Mask.Size(); ones != 32 {
			continue
		}
		a, _ := netip.AddrFromSlice(rt.Dst.IP.To4())
		w, ok := wantByAddr[a]
		if ok && rt.LinkIndex == w.up && rt.Gw.Equal(net.IP(w.via.AsSlice())) {
			haveRoute[a] = true
			continue
		}
		if err := p.nl.RouteDel(&rt); err != nil {
			errs = append(errs, fmt.Errorf("removing route to %s: %w", a, err))
			continue
		}
		ch.add("host: removed route to floating ip %s", a)
	}
	for a, w := range wantByAddr {
		if haveRoute[a] {
			continue
		}
		rt := &netlink.Route{LinkIndex: w.up, Gw: net.IP(w.via.AsSlice()), Dst: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}}
		if err := p.nl.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("routing floating ip %s: %w", a, err))
			continue
		}
		ch.add("host: route to floating ip %s via %s", a, w.via)
	}
	// Proxy ARP entries on the external bridges: those wanted, and those
	// the agent made before that are no longer wanted.
	bridges := map[int]bool{}
	for _, w := range wantByAddr {
		bridges[w.bridge] = true
	}
	p.loadProxies()
	for _, dev := range p.proxies {
		if l, err := p.linkByName(dev); err == nil {
			bridges[l.Attrs().Index] = true
		}
	}
	haveProxy := map[netip.Addr]bool{}
	for idx := range bridges {
		proxies, err := p.nl.NeighProxyList(idx, unix.AF_INET)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing proxy neighbours: %w", err))
			continue
		}
		for _, nb := range proxies {
			a, _ := netip.AddrFromSlice(nb.IP.To4())
			if w, ok := wantByAddr[a]; ok && w.bridge == idx {
				haveProxy[a] = true
				continue
			}
			if _, ours := p.proxies[a.String()]; !ours {
				continue // the operator's
			}
			if err := p.nl.NeighDel(&nb); err != nil {
				errs = append(errs, fmt.Errorf("removing proxy arp for %s: %w", a, err))
				continue
			}
			ch.add("host: removed proxy arp for %s", a)
		}
	}
	old := p.proxies
	p.proxies = map[string]string{}
	for _, f := range d.fips {
		w, ok := wantByAddr[f.addr]
		if !ok {
			continue
		}
		p.proxies[f.addr.String()] = f.ext.bridge
		if haveProxy[f.addr] {
			continue
		}
		nb := &netlink.Neigh{LinkIndex: w.bridge, Family: unix.AF_INET, Flags: netlink.NTF_PROXY, IP: net.IP(f.addr.AsSlice())}
		if err := p.nl.NeighAdd(nb); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("answering arp for floating ip %s: %w", f.addr, err))
			continue
		}
		ch.add("host: proxy arp for floating ip %s", f.addr)
	}
	if !maps.Equal(old, p.proxies) {
		p.saveProxies()
	}
	return errors.Join(errs...)
}

// The floating IPs whose proxy ARP entries the agent made, with their
// bridges, kept in the state dir: an entry on an external bridge that is
// not in it is the operator's and is left alone.
func (p *Plane) proxyFile() string { return filepath.Join(p.cfg.StateDir, "floating-ips") }

func (p *Plane) loadProxies() {
	if p.proxies != nil {
		return
	}
	p.proxies = map[string]string{}
	b, _ := os.ReadFile(p.proxyFile())
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			p.proxies[f[0]] = f[1]
		}
	}
}

func (p *Plane) saveProxies() {
	var b strings.Builder
	for _, a := range sortedKeys(p.proxies) {
		b.WriteString(a + " " + p.proxies[a] + "\n")
	}
	os.WriteFile(p.proxyFile(), []byte(b.String()), 0o600)
}
