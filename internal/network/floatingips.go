package network

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// ExternalNetwork finds the network ref names for a floating IP of
// project: a network of the project, else of the default project, or
// "<project>/<name>". External networks are shared by every project; a
// network of another project that is not external does not exist for it.
func (m *Manager) ExternalNetwork(project, ref string) (*api.Network, bool) {
	var keys []string
	if strings.Contains(ref, "/") {
		keys = []string{ref}
	} else {
		keys = []string{api.Key(project, ref), api.Key(api.DefaultProject, ref)}
	}
	for _, k := range keys {
		if n, ok := m.cfg.Networks.Get(k); ok && (n.Project == project || n.Spec.External) {
			return n, true
		}
	}
	return nil, false
}

// mapping checks that a floating IP of family is4 may map to a port of the
// project, and returns the port and the writes that map it.
func (m *Manager) mapping(project, portName string, f *api.FloatingIP, is4 bool) (*api.Port, []store.Op, error) {
	port, ok := m.cfg.Ports.Get(api.Key(project, portName))
	if !ok {
		return nil, nil, api.Invalid("port", "port %q not found", portName)
	}
	if fixedOf(port, is4) == "" {
		return nil, nil, api.Invalid("port", "port %q has no %s address to map the floating IP to", portName, map[bool]string{true: "IPv4", false: "IPv6"}[is4])
	}
	if c, ok := m.cfg.Claims.Get(fipClaim(port.UID)); ok && c.OwnerUID != f.UID {
		return nil, nil, taken("port", "port %q already has %s mapped to it", portName, ownerName(c))
	}
	ops := []store.Op{m.cfg.Ports.OpCheck(port.Key(), port.Version)}
	if _, ok := m.cfg.Claims.Get(fipClaim(port.UID)); !ok {
		ops = append(ops, m.cfg.Claims.OpCreate(fipClaim(port.UID), &Claim{Name: fipClaim(port.UID), Kind: kindFloatingIP, Owner: f.Key(), OwnerUID: f.UID}))
	}
	return port, ops, nil
}

// fixedOf is a port's first address of a family.
func fixedOf(p *api.Port, is4 bool) string {
	for _, f := range p.Spec.FixedIPs {
		if a, err := netip.ParseAddr(f.IP); err == nil && a.Is4() == is4 {
			return a.String()
		}
	}
	return ""
}

// CreateFloatingIP allocates an address of an external network, mapped to
// a port of the project when the request names one.
func (m *Manager) CreateFloatingIP(ctx context.Context, project string, req api.FloatingIPCreate) (*api.FloatingIP, error) {
	if err := validateMeta(req.Name, req.Labels); err != nil {
		return nil, err
	}
	if req.Network == "" {
		return nil, api.Invalid("network", "is required: the external network the address comes from")
	}
	key := api.Key(project, req.Name)
	if _, ok := m.cfg.FloatingIPs.Get(key); ok {
		return nil, api.Conflict("floating IP %q already exists", req.Name)
	}
	var lostAddrs map[string]map[netip.Addr]bool
	for attempt := range maxAttempts {
		conds, err := m.admit(ctx, project, api.Usage{FloatingIPs: 1})
		if err != nil {
			return nil, err
		}
		n, ok := m.ExternalNetwork(project, req.Network)
		if !ok {
			return nil, api.Invalid("network", "network %q not found", req.Network)
		}
		if !n.Spec.External {
			return nil, api.Invalid("network", "network %q is not external: floating IPs come from external networks", req.Network)
		}
		now := time.Now().UTC()
		f := &api.FloatingIP{Meta: api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now}}
		p := m.newPlanner(project, lostAddrs)
		p.single = true
		lostAddrs = p.lost
		var want []api.FixedIP
		if req.Address != "" {
			want = []api.FixedIP{{IP: req.Address}}
		}
		owner := func(name string) *Claim { return &Claim{Name: name, Kind: kindFloatingIP, Owner: key, OwnerUID: f.UID} }
		ips, err := p.addresses(n, "", want, owner)
		if err != nil {
			p.done()
			return nil, renameAddress(err)
		}
		if len(ips) == 0 {
			p.done()
			return nil, api.Invalid("network", "network %q has no subnet to take an address from", n.Name)
		}
		addr := netip.MustParseAddr(ips[0].IP)
		f.Spec = api.FloatingIPSpec{Network: n.Key(), Address: addr.String()}
		ops := p.ops
		if req.Port != "" {
			_, mops, err := m.mapping(project, req.Port, f, addr.Is4())
			if err != nil {
				p.done()
				return nil, err
			}
			f.Spec.Port = req.Port
			ops = append(ops, mops...)
		}
		ops = append(append(ops, m.cfg.FloatingIPs.OpCreate(key, f)), conds...)
		_, err = m.cfg.Store.Txn(ctx, ops...)
		p.done()
		if err == nil {
			return f, nil
		}
		if ke, ok := keyErr(err); ok && ke.Kind == m.cfg.FloatingIPs.Kind() && ke.Name == key {
			return nil, api.Conflict("floating IP %q already exists", req.Name)
		}
		if ke, ok := keyErr(err); ok && ke.Name == fipClaim(strings.TrimPrefix(ke.Name, "fip/")) && strings.HasPrefix(ke.Name, "fip/") {
			return nil, taken("port", "port %q got another floating IP a moment ago", req.Port)
		}
		retry, aerr := p.failed(err)
		switch {
		case aerr != nil:
			return nil, renameAddress(aerr)
		case !retry:
			return nil, fmt.Errorf("storing floating IP %q: %w", req.Name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("floating IP %q: its network is being changed concurrently; try again", req.Name)
}

// renameAddress turns the field names of a port's addresses into the
// floating IP's ("fixedIPs[0].ip" into "address").
func renameAddress(err error) error {
	ae, ok := err.(*api.Error)
	if !ok || !strings.HasPrefix(ae.Field, "fixedIPs") {
		return err
	}
	out := *ae
	out.Field = "address"
	out.Message = strings.Replace(out.Message, ae.Field, out.Field, 1)
	return &out
}

// changeFloatingIP applies change to a floating IP and stores it with the
// writes change returns, retrying on a concurrent change.
func (m *Manager) changeFloatingIP(ctx context.Context, project, name string, change func(f *api.FloatingIP) ([]store.Op, error)) (*api.FloatingIP, error) {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		cur, ok := m.cfg.FloatingIPs.Get(key)
		if !ok {
			return nil, api.NotFound("floating IP", name)
		}
		next := store.Clone(cur)
		ops, err := change(next)
		if err != nil {
			return nil, err
		}
		if next.Spec == cur.Spec {
			return cur, nil
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		_, err = m.cfg.Store.Txn(ctx, append(ops, m.cfg.FloatingIPs.OpUpdate(key, next, cur.Version))...)
		if err == nil {
			return next, nil
		}
		if !lost(err) {
			return nil, fmt.Errorf("updating floating IP %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("floating IP %q is being changed concurrently; try again", name)
}

// unmapClaimOps are the writes that drop the claim a floating IP holds on
// the port it maps to.
func (m *Manager) unmapClaimOps(f *api.FloatingIP) []store.Op {
	var ops []store.Op
	for _, c := range m.claimsOf(f.UID) {
		if strings.HasPrefix(c.Name, "fip/") {
			ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
		}
	}
	return ops
}

// AssociateFloatingIP maps a floating IP to a port of its project (moving
// it from the port it mapped to, if any).
func (m *Manager) AssociateFloatingIP(ctx context.Context, project, name, port string) (*api.FloatingIP, error) {
	if port == "" {
		return nil, api.Invalid("port", "is required")
	}
	return m.changeFloatingIP(ctx, project, name, func(f *api.FloatingIP) ([]store.Op, error) {
		if f.Spec.Port == port {
			return nil, nil
		}
		a, err := netip.ParseAddr(f.Spec.Address)
		if err != nil {
			return nil, fmt.Errorf("floating IP %q holds no address: %w", name, err)
		}
		p, ops, err := m.mapping(project, port, f, a.Is4())
		if err != nil {
			return nil, err
		}
		for _, c := range m.claimsOf(f.UID) {
			if strings.HasPrefix(c.Name, "fip/") && c.Name != fipClaim(p.UID) {
				ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
			}
		}
		f.Spec.Port = port
		return ops, nil
	})
}

// DisassociateFloatingIP unmaps a floating IP from its port.
func (m *Manager) DisassociateFloatingIP(ctx context.Context, project, name string) (*api.FloatingIP, error) {
	return m.changeFloatingIP(ctx, project, name, func(f *api.FloatingIP) ([]store.Op, error) {
		f.Spec.Port = ""
		return m.unmapClaimOps(f), nil
	})
}

// DeleteFloatingIP deletes a floating IP, freeing its address.
func (m *Manager) DeleteFloatingIP(ctx context.Context, project, name string) error {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		f, ok := m.cfg.FloatingIPs.Get(key)
		if !ok {
			return api.NotFound("floating IP", name)
		}
		ops := []store.Op{m.cfg.FloatingIPs.OpDelete(key, f.Version)}
		for _, c := range m.claimsOf(f.UID) {
			ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
		}
		_, err := m.cfg.Store.Txn(ctx, ops...)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return fmt.Errorf("deleting floating IP %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return err
		}
	}
	return api.Conflict("floating IP %q is being changed concurrently; try again", name)
}

// FloatingIPView is a floating IP as the API shows it: with the host and
// the address of the port it maps to.
func (m *Manager) FloatingIPView(f *api.FloatingIP) api.FloatingIP {
	out := *f
	out.Status = api.FloatingIPStatus{}
	if f.Spec.Port == "" {
		return out
	}
	p, ok := m.cfg.Ports.Get(api.Key(f.Project, f.Spec.Port))
	if !ok {
		return out
	}
	if a, err := netip.ParseAddr(f.Spec.Address); err == nil {
		out.Status.FixedIP = fixedOf(p, a.Is4())
	}
	out.Status.Host = m.hostOf(p)
	return out
}
