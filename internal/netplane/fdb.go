package netplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// applyForwarding makes an overlay's static forwarding: for each of the
// network's ports on other hosts, the VXLAN device's entry sending its MAC
// to that host's underlay address, the bridge's static entry sending the
// MAC to the VXLAN port (no flooding to local ports), and a neighbour
// entry per address, from which the VXLAN device answers ARP and ND
// itself. Nothing else crosses the underlay: no entry floods.
func (p *Plane) applyForwarding(n *dNet, ch *changes) error {
	vx, err := p.linkByName(n.vxlan)
	if err != nil {
		return fmt.Errorf("network %s: reading %s: %w", n.key, n.vxlan, err)
	}
	idx := vx.Attrs().Index
	wantDst := map[string]netip.Addr{}   // MAC -> underlay
	wantNeigh := map[netip.Addr]string{} // address -> MAC
	for _, r := range n.remotes {
		mac := r.mac.String()
		wantDst[mac] = r.underlay
		for _, a := range r.ips {
			wantNeigh[a] = mac
		}
	}
	fdb, err := p.nl.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("network %s: listing forwarding entries: %w", n.key, err)
	}
	var errs []error
	haveDst := map[string]bool{}
	haveMaster := map[string]bool{}
	own := vx.Attrs().HardwareAddr.String()
	for _, e := range fdb {
		if e.LinkIndex != idx {
			continue
		}
		mac := e.HardwareAddr.String()
		switch {
		case e.Flags&netlink.NTF_MASTER != 0 || e.MasterIndex != 0:
			if mac == own || e.State&netlink.NUD_PERMANENT != 0 {
				continue // the bridge's entry for the device itself
			}
			if _, ok := wantDst[mac]; ok && e.State&netlink.NUD_NOARP != 0 && !haveMaster[mac] {
				haveMaster[mac] = true
				continue
			}
			if err := p.nl.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing bridge entry %s: %w", mac, err))
				continue
			}
			ch.add("%s: removed bridge entry %s", n.bridge, mac)
		default:
			dst, _ := netip.AddrFromSlice(e.IP)
			if w, ok := wantDst[mac]; ok && w == dst.Unmap() && !haveDst[mac] {
				haveDst[mac] = true
				continue
			}
			if err := p.nl.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing vxlan entry %s: %w", mac, err))
				continue
			}
			ch.add("%s: removed entry %s -> %s", n.vxlan, mac, dst)
		}
	}
	for mac, dst := range wantDst {
		hw, _ := net.ParseMAC(mac)
		if !haveDst[mac] {
			e := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, Flags: netlink.NTF_SELF, IP: net.IP(dst.AsSlice()), HardwareAddr: hw}
			if err := p.nl.NeighSet(e); err != nil {
				errs = append(errs, fmt.Errorf("adding vxlan entry %s -> %s: %w", mac, dst, err))
			} else {
				ch.add("%s: entry %s -> %s", n.vxlan, mac, dst)
			}
		}
		if !haveMaster[mac] {
			e := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP, Flags: netlink.NTF_MASTER, HardwareAddr: hw}
			if err := p.nl.NeighSet(e); err != nil {
				errs = append(errs, fmt.Errorf("adding bridge entry %s: %w", mac, err))
			} else {
				ch.add("%s: bridge entry %s", n.bridge, mac)
			}
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		neighs, err := p.nl.NeighList(idx, fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing neighbours: %w", err))
			continue
		}
		have := map[netip.Addr]bool{}
		for _, e := range neighs {
			a, _ := netip.AddrFromSlice(e.IP)
			a = a.Unmap()
			if w, ok := wantNeigh[a]; ok && w == e.HardwareAddr.String() && e.State&netlink.NUD_PERMANENT != 0 {
				have[a] = true
				continue
			}
			if err := p.nl.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing neighbour %s: %w", a, err))
				continue
			}
			ch.add("%s: removed neighbour %s", n.vxlan, a)
		}
		for a, mac := range wantNeigh {
			if have[a] || a.Is4() != (fam == unix.AF_INET) {
				continue
			}
			hw, _ := net.ParseMAC(mac)
			e := &netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: net.IP(a.AsSlice()), HardwareAddr: hw}
			if err := p.nl.NeighSet(e); err != nil {
				errs = append(errs, fmt.Errorf("adding neighbour %s: %w", a, err))
				continue
			}
			ch.add("%s: neighbour %s at %s", n.vxlan, a, mac)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network %s: %w", n.key, errors.Join(errs...))
	}
	return nil
}
