package netplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostSettings are the host's sysctls the dataplane needs: forwarding, for
// the router namespaces' uplinks (NAT, floating IPs, dnsmasq's own DNS
// queries).
func (p *Plane) hostSettings(d *desired, ch *changes) error {
	need := false
	for _, n := range d.networks {
		need = need || n.router()
	}
	if !need {
		return nil
	}
	changed, err := sysctl(p.host, "ipv4/ip_forward", "1")
	if changed {
		ch.add("host: ipv4 forwarding on")
	}
	return err
}

// linkIs tells whether err is netlink's "no such device".
func linkMissing(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// applyNetworkLinks makes a network's devices on the host: its bridge and
// VXLAN device, and the veths to its router namespace; for a bridged
// network it checks the provider's bridge and lets its traffic through the
// host's firewall hooks.
func (p *Plane) applyNetworkLinks(n *dNet, routers *routerSet, ch *changes) error {
	if !n.overlay {
		l, err := p.linkByName(n.bridge)
		if err != nil {
			return fmt.Errorf("network %s: bridge %s: %w", n.key, n.bridge, err)
		}
		if l.Type() != "bridge" {
			return fmt.Errorf("network %s: %s is a %s device, not a bridge", n.key, n.bridge, l.Type())
		}
		return p.bridgeNFCall(l.Attrs().Index)
	}
	br, err := p.ensureBridge(n, ch)
	if err != nil {
		return err
	}
	if err := p.ensureVXLAN(n, br, ch); err != nil {
		return err
	}
	if !n.router() {
		return nil
	}
	r := routers.get(n.id)
	if r == nil {
		return fmt.Errorf("network %s: its router namespace is not made", n.key)
	}
	if err := p.ensureVeth(prefixGW+n.id, routerGW, r, br.Attrs().Index, n.mtu, n.gwMAC, ch); err != nil {
		return fmt.Errorf("network %s: %w", n.key, err)
	}
	if err := p.ensureVeth(prefixUp+n.id, routerUp, r, 0, 1500, nil, ch); err != nil {
		return fmt.Errorf("network %s: %w", n.key, err)
	}
	return nil
}

// ensureBridge makes an overlay's bridge: fixed MAC, the network's MTU, no
// IPv6 of its own (it must not speak on the guests' network), bridged
// traffic through the firewall hooks, up.
func (p *Plane) ensureBridge(n *dNet, ch *changes) (netlink.Link, error) {
	l, err := p.linkByName(n.bridge)
	if err == nil && l.Type() != "bridge" {
		if err := p.delLink(l); err != nil {
			return nil, fmt.Errorf("network %s: removing %s, not a bridge: %w", n.key, n.bridge, err)
		}
		ch.add("removed %s: not a bridge", n.bridge)
		err = netlink.LinkNotFoundError{}
	}
	if err != nil && !linkMissing(err) {
		return nil, fmt.Errorf("network %s: reading bridge %s: %w", n.key, n.bridge, err)
	}
	mac := bridgeMAC(n.id)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.bridge, MTU: n.mtu, HardwareAddr: mac}}
		if err := p.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("network %s: making bridge %s: %w", n.key, n.bridge, err)
		}
		ch.add("made bridge %s", n.bridge)
		if l, err = p.linkByName(n.bridge); err != nil {
			return nil, fmt.Errorf("network %s: reading bridge %s: %w", n.key, n.bridge, err)
		}
		if _, err := sysctl(p.host, "ipv6/conf/"+n.bridge+"/disable_ipv6", "1"); err != nil {
			return nil, err
		}
		if err := p.bridgeNFCall(l.Attrs().Index); err != nil {
			return nil, err
		}
	}
	if err := p.linkAttrs(l, n.mtu, mac, 0, ch); err != nil {
		return nil, fmt.Errorf("network %s: %w", n.key, err)
	}
	return l, nil
}

// linkAttrs brings a device's MTU, MAC (when mac is set) and master (when
// master is not 0) to what they should be, and sets it up.
func (p *Plane) linkAttrs(l netlink.Link, mtu int, mac net.HardwareAddr, master int, ch *changes) error {
	a := l.Attrs()
	if mtu != 0 && a.MTU != mtu {
		if err := p.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("setting mtu of %s: %w", a.Name, err)
		}
		ch.add("%s: mtu %d", a.Name, mtu)
	}
	if mac != nil && !bytes.Equal(a.HardwareAddr, mac) {
		if err := p.nl.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("setting mac of %s: %w", a.Name, err)
		}
		ch.add("%s: mac %s", a.Name, mac)
	}
	if master != 0 && a.MasterIndex != master {
		if err := p.nl.LinkSetMasterByIndex(l, master); err != nil {
			return fmt.Errorf("attaching %s to its bridge: %w", a.Name, err)
		}
		ch.add("%s: attached to bridge %d", a.Name, master)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := p.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", a.Name, err)
		}
		ch.add("%s: up", a.Name)
	}
	return nil
}

// ensureVXLAN makes an overlay's VXLAN device: its VNI from the host's
// underlay address, no learning (the control plane says where every MAC
// lives) and ARP/ND answered from its neighbour entries (proxy), so no
// broadcast crosses the underlay.
func (p *Plane) ensureVXLAN(n *dNet, br netlink.Link, ch *changes) error {
	l, err := p.linkByName(n.vxlan)
	if err != nil && !linkMissing(err) {
		return fmt.Errorf("network %s: reading %s: %w", n.key, n.vxlan, err)
	}
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != n.vni || !vx.SrcAddr.Equal(net.IP(n.underlayIP())) || vx.Port != p.cfg.VXLANPort || vx.Learning || !vx.Proxy {
			if err := p.delLink(l); err != nil {
				return fmt.Errorf("network %s: removing outdated %s: %w", n.key, n.vxlan, err)
			}
			ch.add("removed outdated vxlan %s", n.vxlan)
			err = netlink.LinkNotFoundError{}
		}
	}
	if err != nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: n.vxlan, MTU: n.mtu, MasterIndex: br.Attrs().Index},
			VxlanId:   n.vni, SrcAddr: net.IP(n.underlayIP()), Port: p.cfg.VXLANPort,
			Learning: false, Proxy: true,
		}
		if err := p.nl.LinkAdd(vx); err != nil {
			return fmt.Errorf("network %s: making vxlan %s (vni %d): %w", n.key, n.vxlan, n.vni, err)
		}
		ch.add("made vxlan %s vni %d", n.vxlan, n.vni)
		if l, err = p.linkByName(n.vxlan); err != nil {
			return fmt.Errorf("network %s: reading %s: %w", n.key, n.vxlan, err)
		}
		if _, err := sysctl(p.host, "ipv6/conf/"+n.vxlan+"/disable_ipv6", "1"); err != nil {
			return err
		}
		if err := p.nl.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("network %s: attaching %s: %w", n.key, n.vxlan, err)
		}
		if err := p.nl.LinkSetLearning(l, false); err != nil {
			return fmt.Errorf("network %s: bridge learning off on %s: %w", n.key, n.vxlan, err)
		}
		if l, err = p.reread(n.vxlan); err != nil {
			return fmt.Errorf("network %s: reading %s: %w", n.key, n.vxlan, err)
		}
	}
	return p.linkAttrs(l, n.mtu, nil, br.Attrs().Index, ch)
}

// ensureVeth makes a veth pair from the host (name) into a router
// namespace (peer there), the host's end attached to master when it is
// not 0, the router's end with mac when it is set.
func (p *Plane) ensureVeth(name, peer string, r *router, master, mtu int, mac net.HardwareAddr, ch *changes) error {
	l, err := p.linkByName(name)
	if err != nil && !linkMissing(err) {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	if err == nil {
		pl, perr := r.nl.LinkByName(peer)
		if _, isVeth := l.(*netlink.Veth); !isVeth || perr != nil || l.Attrs().ParentIndex != pl.Attrs().Index {
			if err := p.delLink(l); err != nil {
				return fmt.Errorf("removing outdated %s: %w", name, err)
			}
			ch.add("removed outdated veth %s", name)
			err = netlink.LinkNotFoundError{}
		}
	}
	if err != nil {
		if pl, perr := r.nl.LinkByName(peer); perr == nil {
			r.nl.LinkDel(pl) // the end of a pair whose other end is gone
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peer, PeerNamespace: netlink.NsFd(r.ns), PeerMTU: uint32(mtu)}
		if mac != nil {
			v.PeerHardwareAddr = mac
		}
		if err := p.nl.LinkAdd(v); err != nil {
			return fmt.Errorf("making veth %s: %w", name, err)
		}
		ch.add("made veth %s", name)
		if l, err = p.linkByName(name); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		if _, err := sysctl(p.host, "ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && master != 0 {
			return err
		}
	}
	if err := p.linkAttrs(l, mtu, nil, master, ch); err != nil {
		return err
	}
	pl, err := r.nl.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("reading %s in the router namespace: %w", peer, err)
	}
	return r.linkAttrs(pl, mtu, mac, ch)
}

// applyTap makes a port's tap: persistent (it outlives QEMU's hold on it),
// the network's MTU, attached to its bridge, up. QEMU gets a descriptor of
// it from the agent.
func (p *Plane) applyTap(pt *dPort, ch *changes) error {
	br, err := p.linkByName(pt.net.bridge)
	if err != nil {
		return fmt.Errorf("reading bridge %s: %w", pt.net.bridge, err)
	}
	l, err := p.linkByName(pt.tap)
	if err == nil {
		if _, ok := l.(*netlink.Tuntap); !ok {
			if err := p.delLink(l); err != nil {
				return fmt.Errorf("removing %s, not a tap: %w", pt.tap, err)
			}
			ch.add("removed %s: not a tap", pt.tap)
			err = netlink.LinkNotFoundError{}
		}
	}
	if err != nil && !linkMissing(err) {
		return fmt.Errorf("reading tap %s: %w", pt.tap, err)
	}
	if err != nil {
		if err := inNetns(p.host, func() error { return makeTap(pt.tap) }); err != nil {
			return err
		}
		ch.add("made tap %s", pt.tap)
		if _, err := sysctl(p.host, "ipv6/conf/"+pt.tap+"/disable_ipv6", "1"); err != nil {
			return err
		}
		if l, err = p.linkByName(pt.tap); err != nil {
			return fmt.Errorf("reading tap %s: %w", pt.tap, err)
		}
	}
	return p.linkAttrs(l, pt.net.mtu, nil, br.Attrs().Index, ch)
}

// makeTap makes a persistent tap in the calling thread's namespace.
func makeTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("making tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("making tap %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("making tap %s persistent: %w", name, err)
	}
	return nil
}

// removeStaleLinks removes the host's devices with Polyvisor's prefixes
// that the state no longer has.
func (p *Plane) removeStaleLinks(d *desired, ch *changes) error {
	want := map[string]bool{}
	for _, n := range d.networks {
		if n.overlay {
			want[n.bridge], want[n.vxlan] = true, true
		}
		if n.router() {
			want[prefixGW+n.id], want[prefixUp+n.id] = true, true
		}
	}
	for _, pt := range d.ports {
		want[pt.tap] = true
	}
	links, err := p.linkList()
	if err != nil {
		return fmt.Errorf("listing devices: %w", err)
	}
	var errs []error
	// Ports first, bridges last.
	for _, prefix := range []string{prefixTap, prefixGW, prefixUp, prefixVXLAN, prefixBridge} {
		for _, l := range links {
			name := l.Attrs().Name
			if !strings.HasPrefix(name, prefix) || want[name] {
				continue
			}
			if err := p.delLink(l); err != nil && !linkMissing(err) {
				errs = append(errs, fmt.Errorf("removing %s: %w", name, err))
				continue
			}
			ch.add("removed %s", name)
		}
	}
	return errors.Join(errs...)
}

// bridgeNFCall sends a bridge's IPv4 and IPv6 traffic through the inet
// firewall hooks (br_netfilter, for this bridge only: the host's other
// bridges keep the host's setting), where security groups are stateful.
func (p *Plane) bridgeNFCall(index int) error {
	return inNetns(p.host, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IPTABLES, nl.Uint8Attr(1))
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IP6TABLES, nl.Uint8Attr(1))
		req.AddData(info)
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
			return fmt.Errorf("sending bridge %d's traffic through the firewall: %w", index, err)
		}
		return nil
	})
}

// setLinkUp sets a device of namespace ns up.
func setLinkUp(ns netns.NsHandle, name string) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// underlayIP is the host's underlay address as a 4- or 16-byte slice.
func (n *dNet) underlayIP() []byte { return n.underlay.AsSlice() }

// The host's devices are read once per Apply (one dump, not one request
// per device) and looked up by name; a device made or removed during the
// Apply is read again.

// snapshot reads the host's devices.
func (p *Plane) snapshot() error {
	links, err := p.nl.LinkList()
	if err != nil {
		return fmt.Errorf("listing devices: %w", err)
	}
	p.snap = make(map[string]netlink.Link, len(links))
	for _, l := range links {
		p.snap[l.Attrs().Name] = l
	}
	return nil
}

// linkByName finds a host device, from the snapshot when there is one.
func (p *Plane) linkByName(name string) (netlink.Link, error) {
	if l, ok := p.snap[name]; ok {
		return l, nil
	}
	l, err := p.nl.LinkByName(name)
	if err == nil && p.snap != nil {
		p.snap[name] = l
	}
	return l, err
}

// linkList lists the host's devices, from the snapshot when there is one.
func (p *Plane) linkList() ([]netlink.Link, error) {
	if p.snap == nil {
		return p.nl.LinkList()
	}
	out := make([]netlink.Link, 0, len(p.snap))
	for _, l := range p.snap {
		out = append(out, l)
	}
	return out, nil
}

// delLink removes a host device.
func (p *Plane) delLink(l netlink.Link) error {
	delete(p.snap, l.Attrs().Name)
	return p.nl.LinkDel(l)
}

// reread reads a device again after a change.
func (p *Plane) reread(name string) (netlink.Link, error) {
	delete(p.snap, name)
	return p.linkByName(name)
}
