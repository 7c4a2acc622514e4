package server

import (
	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// forwardNetworkEvents adds the changes of the network objects the caller
// may read to an event stream.
func (s *Server) networkEventHandlers(want map[string]bool, h recordHandlers, visible func(string, auth.Permission) bool) {
	ref := func(kind string, m *api.Meta) api.Ref {
		return api.Ref{Kind: kind, Name: m.Name, UID: m.UID, Project: m.Project}
	}
	ev := func(typ string, c store.ChangeType, prev bool, kind string, m *api.Meta) api.Event {
		return api.Event{Type: typ, Action: action(c, prev), Object: ref(kind, m)}
	}
	if want[api.EventNetwork] {
		on(h, s.net.networks, func(c store.Change[api.Network]) (api.Event, bool) {
			e := ev(api.EventNetwork, c.Type, c.Prev != nil, "network", &c.Obj.Meta)
			v := s.net.m.NetworkView(c.Obj)
			e.Network = &v
			return e, c.Obj.Spec.External || visible(c.Obj.Project, auth.PermNetworkRead)
		})
	}
	if want[api.EventSubnet] {
		on(h, s.net.subnets, func(c store.Change[api.Subnet]) (api.Event, bool) {
			e := ev(api.EventSubnet, c.Type, c.Prev != nil, "subnet", &c.Obj.Meta)
			v := s.net.m.SubnetView(c.Obj)
			e.Subnet = &v
			return e, visible(c.Obj.Project, auth.PermNetworkRead)
		})
	}
	if want[api.EventPort] {
		on(h, s.net.ports, func(c store.Change[api.Port]) (api.Event, bool) {
			e := ev(api.EventPort, c.Type, c.Prev != nil, "port", &c.Obj.Meta)
			v := s.net.m.PortView(c.Obj)
			e.Port = &v
			return e, visible(c.Obj.Project, auth.PermNetworkRead)
		})
	}
	if want[api.EventSecurityGroup] {
		on(h, s.net.groups, func(c store.Change[api.SecurityGroup]) (api.Event, bool) {
			e := ev(api.EventSecurityGroup, c.Type, c.Prev != nil, "security-group", &c.Obj.Meta)
			e.SecurityGroup = c.Obj
			return e, visible(c.Obj.Project, auth.PermNetworkRead)
		})
	}
	if want[api.EventFloatingIP] {
		on(h, s.net.fips, func(c store.Change[api.FloatingIP]) (api.Event, bool) {
			e := ev(api.EventFloatingIP, c.Type, c.Prev != nil, "floating-ip", &c.Obj.Meta)
			v := s.net.m.FloatingIPView(c.Obj)
			e.FloatingIP = &v
			return e, visible(c.Obj.Project, auth.PermNetworkRead)
		})
	}
}

// validateProviderNICs checks the NICs of a VM created in a provider's
// estate: each names one of the provider's networks (by name or id, when
// its inventory is known), and nothing Polyvisor's networks give.
func (s *Server) validateProviderNICs(p *api.Provider, nics []api.NIC) error {
	inv, known := s.ctl.Estate.Inventory(p.Name)
	for i, n := range nics {
		field := nicField(i)
		switch {
		case n.MAC != "":
			return api.Invalid(field+"mac", "the provider assigns MAC addresses")
		case n.IP != "":
			return api.Invalid(field+"ip", "provider %q assigns its VMs' addresses", p.Name)
		case len(n.SecurityGroups) > 0:
			return api.Invalid(field+"securityGroups", "security groups apply on Polyvisor's own hosts, not in provider %q", p.Name)
		case n.Port != "":
			return api.Invalid(field+"port", "ports are on Polyvisor's own hosts' networks, not in provider %q", p.Name)
		case n.Network == "" || !known:
			continue
		}
		found := false
		for _, it := range inv.Networks {
			found = found || it.Name == n.Network || it.ID == n.Network
		}
		if !found {
			return api.Invalid(field+"network", "provider %q has no network %q", p.Name, n.Network)
		}
	}
	return nil
}
