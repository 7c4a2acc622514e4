package network

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/api"
)

// NetworkConfig is the cloud-init network-config (version 2) of a VM's
// NICs: each NIC on a network gets its port's addresses statically, with
// its subnets' DNS servers and routes, matched by MAC; user-mode NICs use
// DHCP. The first NIC carries the default route (a NIC on a network by
// its subnet's gateway). ports holds the ports of the NICs on networks,
// by NIC index.
func (m *Manager) NetworkConfig(project string, nics []api.NIC, ports map[int]*api.Port) string {
	var b strings.Builder
	b.WriteString("version: 2\nethernets:\n")
	defaultSet := false
	for i, nic := range nics {
		fmt.Fprintf(&b, "  nic%d:\n    match:\n      macaddress: %q\n", i, strings.ToLower(nic.MAC))
		p := ports[i]
		if p == nil {
			// A user-mode NIC: its own DHCP.
			b.WriteString("    dhcp4: true\n")
			if defaultSet {
				b.WriteString("    dhcp4-overrides:\n      use-routes: false\n")
			}
			defaultSet = true
			continue
		}
		b.WriteString("    dhcp4: false\n    dhcp6: false\n")
		n, _ := m.cfg.Networks.Get(api.Key(project, p.Spec.Network))
		if n != nil && n.Spec.MTU > 0 {
			fmt.Fprintf(&b, "    mtu: %d\n", n.Spec.MTU)
		}
		var addrs, dns, routes []string
		gw := map[bool]string{}
		for _, f := range p.Spec.FixedIPs {
			s, ok := m.cfg.Subnets.Get(api.Key(project, f.Subnet))
			if !ok {
				continue
			}
			prefix, err := netip.ParsePrefix(s.Spec.CIDR)
			if err != nil {
				continue
			}
			addrs = append(addrs, f.IP+"/"+strconv.Itoa(prefix.Bits()))
			is4 := prefix.Addr().Is4()
			if gw[is4] == "" && s.Spec.Gateway != "" {
				gw[is4] = s.Spec.Gateway
			}
			for _, d := range s.Spec.DNSServers {
				if !contains(dns, d) {
					dns = append(dns, d)
				}
			}
			for _, r := range s.Spec.Routes {
				routes = append(routes, fmt.Sprintf("      - to: %s\n        via: %s\n", r.Destination, r.NextHop))
			}
		}
		if len(addrs) > 0 {
			b.WriteString("    addresses:\n")
			for _, a := range addrs {
				fmt.Fprintf(&b, "      - %s\n", a)
			}
		}
		if !defaultSet && (gw[true] != "" || gw[false] != "") {
			if gw[true] != "" {
				fmt.Fprintf(&b, "    gateway4: %s\n", gw[true])
			}
			if gw[false] != "" {
				fmt.Fprintf(&b, "    gateway6: %s\n", gw[false])
			}
			defaultSet = true
		}
		if len(routes) > 0 {
			b.WriteString("    routes:\n" + strings.Join(routes, ""))
		}
		if len(dns) > 0 {
			b.WriteString("    nameservers:\n      addresses:\n")
			for _, d := range dns {
				fmt.Fprintf(&b, "        - %s\n", d)
			}
		}
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
