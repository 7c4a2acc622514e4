package network

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// CreateNetwork makes a network in project; an overlay network gets a
// VXLAN id no other network holds. superadmin tells whether the caller may
// make bridged and external networks.
func (m *Manager) CreateNetwork(ctx context.Context, project string, req api.NetworkCreate, superadmin bool) (*api.Network, error) {
	if err := validateMeta(req.Name, req.Labels); err != nil {
		return nil, err
	}
	spec := req.NetworkSpec
	if err := validateNetworkSpec(&spec, superadmin); err != nil {
		return nil, err
	}
	key := api.Key(project, req.Name)
	if _, ok := m.cfg.Networks.Get(key); ok {
		return nil, api.Conflict("network %q already exists", req.Name)
	}
	for attempt := range maxAttempts {
		conds, err := m.admit(ctx, project, api.Usage{Networks: 1})
		if err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		n := &api.Network{
			Meta: api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec: spec,
		}
		ops := conds
		if spec.Type == api.NetworkOverlay {
			n.Status.VNI = m.freeVNI()
			ops = append(ops, m.cfg.Claims.OpCreate(vniClaim(n.Status.VNI), &Claim{Name: vniClaim(n.Status.VNI), Kind: kindNetwork, Owner: key, OwnerUID: n.UID}))
		}
		ops = append(ops, m.cfg.Networks.OpCreate(key, n)) // encoded now: after the VNI
		_, err = m.cfg.Store.Txn(ctx, ops...)
		if err == nil {
			return n, nil
		}
		ke, ok := keyErr(err)
		switch {
		case !ok:
			return nil, fmt.Errorf("storing network %q: %w", req.Name, err)
		case ke.Kind == m.cfg.Networks.Kind():
			return nil, api.Conflict("network %q already exists", req.Name)
		}
		// Another network took the VXLAN id first, or another admission
		// of the project passed first: draw and decide again.
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("network %q: no free VXLAN id found; try again", req.Name)
}

// freeVNI draws a VXLAN id no network of the index holds.
func (m *Manager) freeVNI() int {
	for {
		v := randomVNI()
		if _, ok := m.cfg.Claims.Get(vniClaim(v)); !ok {
			return v
		}
	}
}

// portsOn lists the ports of a network.
func (m *Manager) portsOn(n *api.Network) []*api.Port {
	return listAll(m.cfg.Ports, func(p *api.Port) bool { return p.Project == n.Project && p.Spec.Network == n.Name })
}

// subnetsOf lists a network's subnets, oldest first.
func (m *Manager) subnetsOf(n *api.Network) []*api.Subnet {
	out := listAll(m.cfg.Subnets, func(s *api.Subnet) bool { return s.Project == n.Project && s.Spec.Network == n.Name })
	slices.SortStableFunc(out, func(a, b *api.Subnet) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// holders names the owners of claims, for an error: "port web-1, port web-2
// and 3 more".
func holders(claims []*Claim) string {
	seen := map[string]bool{}
	var names []string
	for _, c := range claims {
		_, name := api.SplitKey(c.Owner)
		if s := c.Kind + " " + name; !seen[s] {
			seen[s] = true
			names = append(names, s)
		}
	}
	slices.Sort(names)
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	return strings.Join(names, ", ")
}

// DeleteNetwork deletes a network with its subnets. It is refused while a
// port or floating IP holds anything of it.
func (m *Manager) DeleteNetwork(ctx context.Context, project, name string) error {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		n, ok := m.cfg.Networks.Get(key)
		if !ok {
			return api.NotFound("network", name)
		}
		if used := append(m.claimed(macPrefix(n.UID)), m.claimed(ipPrefix(n.UID))...); len(used) > 0 {
			return api.Conflict("network %q is in use by %s: delete those first", name, holders(used))
		}
		ops := []store.Op{
			m.cfg.Networks.OpDelete(key, n.Version),
			m.cfg.Claims.OpNoneUnder(ipPrefix(n.UID)),
			m.cfg.Claims.OpNoneUnder(macPrefix(n.UID)),
		}
		for _, s := range m.subnetsOf(n) {
			ops = append(ops, m.cfg.Subnets.OpDelete(s.Key(), s.Version))
			if c, ok := m.cfg.Claims.Get(subnetClaim(n.UID, s.UID)); ok {
				ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
			}
		}
		if c, ok := m.cfg.Claims.Get(vniClaim(n.Status.VNI)); ok && n.Status.VNI != 0 && c.OwnerUID == n.UID {
			ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
		}
		_, err := m.cfg.Store.Txn(ctx, ops...)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return fmt.Errorf("deleting network %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return err
		}
	}
	return api.Conflict("network %q is being changed concurrently; try again", name)
}

// CreateSubnet adds a subnet to a network of its project. Subnets of one
// network never overlap; each create changes the network's version, so
// two creates at once cannot both pass that check.
func (m *Manager) CreateSubnet(ctx context.Context, project string, req api.SubnetCreate) (*api.Subnet, error) {
	if err := validateMeta(req.Name, req.Labels); err != nil {
		return nil, err
	}
	spec := req.SubnetSpec
	if spec.Network == "" {
		return nil, api.Invalid("network", "is required")
	}
	plan, err := validateSubnetSpec(&spec)
	if err != nil {
		return nil, err
	}
	key := api.Key(project, req.Name)
	for attempt := range maxAttempts {
		if _, ok := m.cfg.Subnets.Get(key); ok {
			return nil, api.Conflict("subnet %q already exists", req.Name)
		}
		n, ok := m.cfg.Networks.Get(api.Key(project, spec.Network))
		if !ok {
			return nil, api.Invalid("network", "network %q not found", spec.Network)
		}
		for _, o := range m.subnetsOf(n) {
			op, err := planOf(o)
			if err != nil {
				return nil, err
			}
			if op.prefix.Overlaps(plan.prefix) {
				return nil, api.Invalid("cidr", "%s overlaps subnet %q (%s) of network %q", plan.prefix, o.Name, op.prefix, n.Name)
			}
		}
		now := time.Now().UTC()
		s := &api.Subnet{
			Meta: api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec: spec,
		}
		nn := store.Clone(n)
		nn.Generation++
		nn.UpdatedAt = now
		_, err := m.cfg.Store.Txn(ctx,
			m.cfg.Subnets.OpCreate(key, s),
			m.cfg.Claims.OpCreate(subnetClaim(n.UID, s.UID), &Claim{Name: subnetClaim(n.UID, s.UID), Kind: kindSubnet, Owner: key, OwnerUID: s.UID}),
			m.cfg.Networks.OpUpdate(n.Key(), nn, n.Version))
		if err == nil {
			return s, nil
		}
		ke, ok := keyErr(err)
		switch {
		case !ok:
			return nil, fmt.Errorf("storing subnet %q: %w", req.Name, err)
		case ke.Kind == m.cfg.Subnets.Kind():
			return nil, api.Conflict("subnet %q already exists", req.Name)
		}
		// The network changed (another subnet, a delete): look again.
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("network %q is being changed concurrently; try again", spec.Network)
}

// DeleteSubnet deletes a subnet none of whose addresses is in use.
func (m *Manager) DeleteSubnet(ctx context.Context, project, name string) error {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		s, ok := m.cfg.Subnets.Get(key)
		if !ok {
			return api.NotFound("subnet", name)
		}
		n, ok := m.cfg.Networks.Get(api.Key(project, s.Spec.Network))
		if !ok {
			return fmt.Errorf("subnet %q: its network %q is gone", name, s.Spec.Network)
		}
		if used := m.claimed(subnetIPPrefix(n.UID, s.UID)); len(used) > 0 {
			return api.Conflict("subnet %q has %d addresses in use by %s: delete those first", name, len(used), holders(used))
		}
		ops := []store.Op{m.cfg.Subnets.OpDelete(key, s.Version), m.cfg.Claims.OpNoneUnder(subnetIPPrefix(n.UID, s.UID))}
		if c, ok := m.cfg.Claims.Get(subnetClaim(n.UID, s.UID)); ok {
			ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
		}
		_, err := m.cfg.Store.Txn(ctx, ops...)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return fmt.Errorf("deleting subnet %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return err
		}
	}
	return api.Conflict("subnet %q is being changed concurrently; try again", name)
}

// NetworkView is a network as the API shows it: with its ports and the
// hosts they are on.
func (m *Manager) NetworkView(n *api.Network) api.Network {
	out := *n
	hosts := map[string]bool{}
	ports := m.portsOn(n)
	for _, p := range ports {
		if h := m.hostOf(p); h != "" {
			hosts[h] = true
		}
	}
	out.Status.Ports = len(ports)
	out.Status.Hosts = nil
	for h := range hosts {
		out.Status.Hosts = append(out.Status.Hosts, h)
	}
	slices.Sort(out.Status.Hosts)
	return out
}

// SubnetView is a subnet as the API shows it: with its addresses in use.
func (m *Manager) SubnetView(s *api.Subnet) api.Subnet {
	out := *s
	if n, ok := m.cfg.Networks.Get(api.Key(s.Project, s.Spec.Network)); ok {
		out.Status.Used = len(m.claimed(subnetIPPrefix(n.UID, s.UID)))
	}
	return out
}
