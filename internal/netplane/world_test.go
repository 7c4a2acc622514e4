package netplane

import (
	"slices"

	"github.com/polyvisor/polyvisor/api"
)

// world is the whole network state of a lab, from which each host's
// HostNetworkState is cut as the server cuts it: the networks with a port
// on the host (and the external networks of its floating IPs), its ports,
// the other hosts' ports of those networks, the groups its ports use and
// the groups they name as remotes, its floating IPs.
type world struct {
	rev       int64
	underlays []string
	nets      []api.HostNetwork
	ports     []worldPort
	groups    []api.HostSecurityGroup // Members are filled in from the ports
	fips      []api.HostFloatingIP
}

type worldPort struct {
	api.HostPort
	host int
}

func subnet(project, name, network, cidr string) api.Subnet {
	return api.Subnet{Meta: api.Meta{Project: project, Name: name}, Spec: api.SubnetSpec{Network: network, CIDR: cidr}}
}

func (w *world) net(n api.HostNetwork) { w.nets = append(w.nets, n) }

func (w *world) port(host int, p api.HostPort) { w.ports = append(w.ports, worldPort{p, host}) }

func (w *world) removePort(key string) {
	w.ports = slices.DeleteFunc(w.ports, func(p worldPort) bool { return p.Key == key })
}

func (w *world) group(g api.HostSecurityGroup) {
	for i := range w.groups {
		if w.groups[i].Key == g.Key {
			w.groups[i] = g
			return
		}
	}
	w.groups = append(w.groups, g)
}

func (w *world) state(host int) *api.HostNetworkState {
	w.rev++
	st := &api.HostNetworkState{Revision: w.rev, Underlay: w.underlays[host]}
	nets := map[string]bool{}
	groups := map[string]bool{}
	for _, p := range w.ports {
		if p.host != host {
			continue
		}
		st.Ports = append(st.Ports, p.HostPort)
		nets[p.Network] = true
		for _, g := range p.SecurityGroups {
			groups[g] = true
		}
	}
	for _, f := range w.fips {
		for _, p := range st.Ports {
			if p.Key == f.Port {
				st.FloatingIPs = append(st.FloatingIPs, f)
				nets[f.Network] = true
			}
		}
	}
	for _, n := range w.nets {
		if nets[n.Key] {
			st.Networks = append(st.Networks, n)
		}
	}
	for _, p := range w.ports {
		if p.host == host || !nets[p.Network] {
			continue
		}
		var ips []string
		for _, f := range p.FixedIPs {
			ips = append(ips, f.IP)
		}
		st.Remote = append(st.Remote, api.RemotePort{Network: p.Network, MAC: p.MAC, IPs: ips, Underlay: w.underlays[p.host]})
	}
	// Remote groups of the groups used here.
	for _, g := range w.groups {
		if groups[g.Key] {
			for _, r := range g.Rules {
				if r.RemoteGroup != "" {
					groups[r.RemoteGroup] = true
				}
			}
		}
	}
	for _, g := range w.groups {
		if !groups[g.Key] {
			continue
		}
		g.Members = nil
		for _, p := range w.ports {
			if slices.Contains(p.SecurityGroups, g.Key) {
				for _, f := range p.FixedIPs {
					g.Members = append(g.Members, f.IP)
				}
			}
		}
		st.SecurityGroups = append(st.SecurityGroups, g)
	}
	return st
}
