package network

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/polyvisor/polyvisor/api"
)

// snapshot is what the hosts' states are computed from: the index at (at
// least) revision rev.
type snapshot struct {
	rev      int64
	networks map[string]*api.Network
	subnets  map[string][]api.Subnet // by network key, oldest first
	ports    []*api.Port
	groups   map[string]*api.SecurityGroup
	fips     []*api.FloatingIP
	vms      map[string]*api.VM
	hosts    map[string]*api.Host
}

// snapshot reads the index.
func (m *Manager) snapshot() *snapshot {
	s := &snapshot{
		rev:      m.cfg.Store.Rev(),
		networks: map[string]*api.Network{},
		subnets:  map[string][]api.Subnet{},
		groups:   map[string]*api.SecurityGroup{},
		vms:      map[string]*api.VM{},
		hosts:    map[string]*api.Host{},
	}
	for _, n := range listAll(m.cfg.Networks, nil) {
		s.networks[n.Key()] = n
	}
	subnets := listAll(m.cfg.Subnets, nil)
	slices.SortStableFunc(subnets, func(a, b *api.Subnet) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.Name, b.Name))
	})
	for _, sn := range subnets {
		k := api.Key(sn.Project, sn.Spec.Network)
		s.subnets[k] = append(s.subnets[k], *sn)
	}
	s.ports = listAll(m.cfg.Ports, nil)
	for _, g := range listAll(m.cfg.SecurityGroups, nil) {
		s.groups[g.Key()] = g
	}
	s.fips = listAll(m.cfg.FloatingIPs, func(f *api.FloatingIP) bool { return f.Spec.Port != "" })
	for _, vm := range listAll(m.cfg.VMs, func(vm *api.VM) bool { return Networked(vm.Spec.NICs) }) {
		s.vms[vm.Key()] = vm
	}
	for _, h := range listAll(m.cfg.Hosts, nil) {
		s.hosts[h.Name] = h
	}
	return s
}

// placed is a port with the host it lives on.
type placed struct {
	port *api.Port
	host string
}

// underlay is a host's VXLAN address: its status address, if it is an IP.
func underlay(h *api.Host) string {
	if h == nil {
		return ""
	}
	if a, err := netip.ParseAddr(h.Status.Address); err == nil {
		return a.String()
	}
	return ""
}

// agentHost tells whether h runs a Polyvisor agent (not a provider's).
func agentHost(h *api.Host) bool { return h != nil && h.Provider == nil }

// computeStates computes the network state of every agent host.
func computeStates(s *snapshot) map[string]*api.HostNetworkState {
	// Where every port lives: the host of the VM whose NIC names it.
	var all []placed
	byHost := map[string][]*api.Port{}
	byNetwork := map[string][]placed{}
	byGroup := map[string][]*api.Port{}
	portByKey := map[string]*api.Port{}
	for _, p := range s.ports {
		vm := s.vms[p.Spec.VM]
		if vm == nil || vm.Project != p.Project || p.Spec.NIC < 0 || p.Spec.NIC >= len(vm.Spec.NICs) || vm.Spec.NICs[p.Spec.NIC].Port != p.Name {
			continue
		}
		if h := s.hosts[vm.Spec.Host]; !agentHost(h) {
			continue
		}
		pl := placed{p, vm.Spec.Host}
		all = append(all, pl)
		byHost[pl.host] = append(byHost[pl.host], p)
		nk := api.Key(p.Project, p.Spec.Network)
		byNetwork[nk] = append(byNetwork[nk], pl)
		portByKey[p.Key()] = p
		for _, g := range p.Spec.SecurityGroups {
			gk := api.Key(p.Project, g)
			byGroup[gk] = append(byGroup[gk], p)
		}
	}
	fipsByPort := map[string][]*api.FloatingIP{}
	for _, f := range s.fips {
		k := api.Key(f.Project, f.Spec.Port)
		fipsByPort[k] = append(fipsByPort[k], f)
	}

	out := map[string]*api.HostNetworkState{}
	for name, h := range s.hosts {
		if !agentHost(h) {
			continue
		}
		st := &api.HostNetworkState{Revision: s.rev, Host: name, Underlay: underlay(h),
			Networks: []api.HostNetwork{}, Ports: []api.HostPort{}, Remote: []api.RemotePort{},
			SecurityGroups: []api.HostSecurityGroup{}, FloatingIPs: []api.HostFloatingIP{}}
		nets := map[string]bool{}
		groups := map[string]bool{}
		for _, p := range byHost[name] {
			nk := api.Key(p.Project, p.Spec.Network)
			if s.networks[nk] == nil {
				continue
			}
			nets[nk] = true
			hp := api.HostPort{Key: p.Key(), ID: ShortID(p.UID), Network: nk, MAC: p.Spec.MAC,
				FixedIPs: append([]api.FixedIP{}, p.Spec.FixedIPs...), SecurityGroups: []string{},
				PortSecurity: p.Spec.PortSecurity == nil || *p.Spec.PortSecurity, VM: p.Spec.VM, NIC: p.Spec.NIC}
			for _, g := range p.Spec.SecurityGroups {
				gk := api.Key(p.Project, g)
				hp.SecurityGroups = append(hp.SecurityGroups, gk)
				groups[gk] = true
			}
			st.Ports = append(st.Ports, hp)
			for _, f := range fipsByPort[p.Key()] {
				a, err := netip.ParseAddr(f.Spec.Address)
				ext := s.networks[f.Spec.Network]
				if err != nil || ext == nil {
					continue
				}
				fixed := fixedOf(p, a.Is4())
				if fixed == "" {
					continue
				}
				nets[f.Spec.Network] = true
				st.FloatingIPs = append(st.FloatingIPs, api.HostFloatingIP{Address: a.String(), Network: f.Spec.Network, Port: p.Key(), FixedIP: fixed})
			}
		}
		for nk := range nets {
			n := s.networks[nk]
			hn := api.HostNetwork{Key: nk, ID: ShortID(n.UID), Type: n.Spec.Type, VNI: n.Status.VNI, Bridge: n.Spec.Bridge,
				MTU: n.Spec.MTU, NAT: n.Spec.NAT, External: n.Spec.External, Subnets: append([]api.Subnet{}, s.subnets[nk]...)}
			st.Networks = append(st.Networks, hn)
			if n.Spec.Type != api.NetworkOverlay {
				continue
			}
			for _, pl := range byNetwork[nk] {
				if pl.host == name {
					continue
				}
				u := underlay(s.hosts[pl.host])
				if u == "" {
					continue
				}
				rp := api.RemotePort{Network: nk, MAC: pl.port.Spec.MAC, IPs: []string{}, Underlay: u, Port: pl.port.Key(), VM: pl.port.Spec.VM}
				for _, f := range pl.port.Spec.FixedIPs {
					rp.IPs = append(rp.IPs, f.IP)
				}
				st.Remote = append(st.Remote, rp)
			}
		}
		// The groups of this host's ports, and those their rules name as
		// remote (for their members).
		for gk := range groups {
			g := s.groups[gk]
			if g == nil {
				continue
			}
			for _, r := range g.Spec.Rules {
				if r.RemoteGroup != "" {
					groups[api.Key(g.Project, r.RemoteGroup)] = true
				}
			}
		}
		for gk := range groups {
			g := s.groups[gk]
			if g == nil {
				continue
			}
			hg := api.HostSecurityGroup{Key: gk, ID: ShortID(g.UID), Rules: []api.SecurityGroupRule{}, Members: []string{}}
			for _, r := range g.Spec.Rules {
				if r.RemoteGroup != "" {
					r.RemoteGroup = api.Key(g.Project, r.RemoteGroup)
				}
				hg.Rules = append(hg.Rules, r)
			}
			seen := map[string]bool{}
			for _, p := range byGroup[gk] {
				for _, f := range p.Spec.FixedIPs {
					if !seen[f.IP] {
						seen[f.IP] = true
						hg.Members = append(hg.Members, f.IP)
					}
				}
			}
			slices.Sort(hg.Members)
			st.SecurityGroups = append(st.SecurityGroups, hg)
		}
		sortState(st)
		out[name] = st
	}
	return out
}

// sortState orders a state's lists, so that equal states encode equally.
func sortState(st *api.HostNetworkState) {
	slices.SortFunc(st.Networks, func(a, b api.HostNetwork) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(st.Ports, func(a, b api.HostPort) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(st.Remote, func(a, b api.RemotePort) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), strings.Compare(a.MAC, b.MAC), strings.Compare(a.Underlay, b.Underlay))
	})
	slices.SortFunc(st.SecurityGroups, func(a, b api.HostSecurityGroup) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(st.FloatingIPs, func(a, b api.HostFloatingIP) int { return strings.Compare(a.Address, b.Address) })
}
