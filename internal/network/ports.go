package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// CreatePort makes a port on a network of its project, allocating its MAC
// and addresses unless the request names them.
func (m *Manager) CreatePort(ctx context.Context, project string, req api.PortCreate) (*api.Port, error) {
	if err := validateMeta(req.Name, req.Labels); err != nil {
		return nil, err
	}
	switch {
	case req.VM != "":
		return nil, api.Invalid("vm", "is set by the server when a VM's NIC names the port")
	case req.NIC != 0:
		return nil, api.Invalid("nic", "is set by the server when a VM's NIC names the port")
	case req.DeleteWithVM:
		return nil, api.Invalid("deleteWithVM", "is set by the server on the ports it makes for VMs")
	case req.Network == "":
		return nil, api.Invalid("network", "is required")
	}
	if _, ok := m.cfg.Ports.Get(api.Key(project, req.Name)); ok {
		return nil, api.Conflict("port %q already exists", req.Name)
	}
	var lostAddrs map[string]map[netip.Addr]bool
	for attempt := range maxAttempts {
		conds, err := m.admit(ctx, project, api.Usage{Ports: 1})
		if err != nil {
			return nil, err
		}
		p := m.newPlanner(project, lostAddrs)
		lostAddrs = p.lost
		port, err := p.plan(portRequest{name: req.Name, labels: req.Labels, spec: req.PortSpec})
		if err != nil {
			p.done()
			return nil, err
		}
		_, err = m.cfg.Store.Txn(ctx, append(p.ops, conds...)...)
		p.done()
		if err == nil {
			return port, nil
		}
		retry, aerr := p.failed(err)
		switch {
		case aerr != nil:
			return nil, aerr
		case !retry:
			return nil, fmt.Errorf("storing port %q: %w", req.Name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("port %q: its network is being changed concurrently; try again", req.Name)
}

// usedBy returns the VM using a port: the VM the port names, if that VM's
// NIC names the port back.
func (m *Manager) usedBy(p *api.Port) (*api.VM, bool) {
	if p.Spec.VM == "" {
		return nil, false
	}
	vm, ok := m.cfg.VMs.Get(p.Spec.VM)
	if !ok || p.Spec.NIC < 0 || p.Spec.NIC >= len(vm.Spec.NICs) || vm.Spec.NICs[p.Spec.NIC].Port != p.Name || vm.Project != p.Project {
		return nil, false
	}
	return vm, true
}

// hostOf is the host a port lives on: its VM's.
func (m *Manager) hostOf(p *api.Port) string {
	if vm, ok := m.usedBy(p); ok {
		return vm.Spec.Host
	}
	return ""
}

// PortView is a port as the API shows it: with its host.
func (m *Manager) PortView(p *api.Port) api.Port {
	out := *p
	out.Status.Host = m.hostOf(p)
	return out
}

// claimsOf lists the claims an object holds.
func (m *Manager) claimsOf(uid string) []*Claim {
	return listAll(m.cfg.Claims, func(c *Claim) bool { return c.OwnerUID == uid })
}

// deletePortOps are the writes that delete a port: the port, its claims,
// and the mapping of any floating IP to it.
func (m *Manager) deletePortOps(p *api.Port) []store.Op {
	ops := []store.Op{m.cfg.Ports.OpDelete(p.Key(), p.Version)}
	for _, c := range m.claimsOf(p.UID) {
		ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
	}
	return append(ops, m.unmapOps(p)...)
}

// unmapOps are the writes that take a port's floating IPs off it.
func (m *Manager) unmapOps(p *api.Port) []store.Op {
	var ops []store.Op
	for _, f := range listAll(m.cfg.FloatingIPs, func(f *api.FloatingIP) bool { return f.Project == p.Project && f.Spec.Port == p.Name }) {
		nf := store.Clone(f)
		nf.Spec.Port = ""
		nf.Generation++
		nf.UpdatedAt = time.Now().UTC()
		ops = append(ops, m.cfg.FloatingIPs.OpUpdate(f.Key(), nf, f.Version))
	}
	if c, ok := m.cfg.Claims.Get(fipClaim(p.UID)); ok {
		ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
	}
	return ops
}

// DeletePort deletes a port no VM uses, freeing its addresses.
func (m *Manager) DeletePort(ctx context.Context, project, name string) error {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		p, ok := m.cfg.Ports.Get(key)
		if !ok {
			return api.NotFound("port", name)
		}
		if vm, ok := m.usedBy(p); ok {
			return api.Conflict("port %q is used by vm %q (NIC %d): remove the NIC or delete the vm", name, vm.Name, p.Spec.NIC)
		}
		_, err := m.cfg.Store.Txn(ctx, m.deletePortOps(p)...)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return fmt.Errorf("deleting port %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return err
		}
	}
	return api.Conflict("port %q is being changed concurrently; try again", name)
}

// UpdatePort changes a port's security groups or port security.
func (m *Manager) UpdatePort(ctx context.Context, project, name string, upd api.PortUpdate) (*api.Port, error) {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		cur, ok := m.cfg.Ports.Get(key)
		if !ok {
			return nil, api.NotFound("port", name)
		}
		next := store.Clone(cur)
		if upd.PortSecurity != nil {
			next.Spec.PortSecurity = upd.PortSecurity
		}
		names := next.Spec.SecurityGroups
		byDefault := false
		if upd.SecurityGroups != nil {
			names = *upd.SecurityGroups
		}
		on := next.Spec.PortSecurity == nil || *next.Spec.PortSecurity
		if !on && upd.SecurityGroups == nil {
			names = nil // turning port security off drops the groups
		}
		if on && len(names) == 0 && upd.SecurityGroups == nil {
			byDefault = true
		}
		p := m.newPlanner(project, nil)
		groups, err := p.groupsOf("", names, on, byDefault)
		if err != nil {
			return nil, err
		}
		next.Spec.SecurityGroups = nil
		want := map[string]bool{}
		for _, g := range groups {
			next.Spec.SecurityGroups = append(next.Spec.SecurityGroups, g.Name)
			c := groupPortClaim(g.UID, cur.UID)
			want[c] = true
			if _, ok := m.cfg.Claims.Get(c); !ok {
				p.claim(&Claim{Name: c, Kind: kindPort, Owner: key, OwnerUID: cur.UID}, "")
			}
		}
		for _, c := range m.claimsOf(cur.UID) {
			if strings.HasPrefix(c.Name, "sg/") && !want[c.Name] {
				p.ops = append(p.ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
			}
		}
		if slices.Equal(next.Spec.SecurityGroups, cur.Spec.SecurityGroups) && ptrEq(next.Spec.PortSecurity, cur.Spec.PortSecurity) {
			return cur, nil
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		p.ops = append(p.ops, m.cfg.Ports.OpUpdate(key, next, cur.Version))
		_, err = m.cfg.Store.Txn(ctx, p.ops...)
		if err == nil {
			return next, nil
		}
		if !lost(err) {
			return nil, fmt.Errorf("updating port %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("port %q is being changed concurrently; try again", name)
}

func ptrEq(a, b *bool) bool {
	return (a == nil || *a) == (b == nil || *b)
}

// ReportPorts records what a host's agent made: the host's ports it lists
// active, its other ports down. It returns how many ports changed.
func (m *Manager) ReportPorts(ctx context.Context, host string, rep api.PortReport) (int, error) {
	active := map[string]bool{}
	for _, k := range rep.Active {
		active[k] = true
	}
	changed := 0
	for _, p := range listAll(m.cfg.Ports, func(p *api.Port) bool { return p.Spec.VM != "" }) {
		if m.hostOf(p) != host {
			continue
		}
		state := api.PortDown
		if active[p.Key()] {
			state = api.PortActive
		}
		msg := rep.Errors[p.Key()]
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		if p.Status.State == state && p.Status.Message == msg {
			continue
		}
		for range 5 {
			next := store.Clone(p)
			next.Status.State, next.Status.Message = state, msg
			_, err := m.cfg.Store.Txn(ctx, m.cfg.Ports.OpUpdate(p.Key(), next, p.Version))
			if err == nil {
				changed++
				break
			}
			if !errors.Is(err, store.ErrConflict) {
				if errors.Is(err, store.ErrNotFound) {
					break
				}
				return changed, fmt.Errorf("recording the state of port %q: %w", p.Key(), err)
			}
			var ok bool
			if p, ok = m.cfg.Ports.Get(p.Key()); !ok {
				break
			}
		}
	}
	return changed, nil
}
