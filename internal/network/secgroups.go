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

// DefaultGroup is the security group every project has, made with it:
// everything out, and in what comes from ports of the same group.
const DefaultGroup = "default"

// defaultGroupOf is a project's default security group.
func defaultGroupOf(project string) *api.SecurityGroup {
	now := time.Now().UTC()
	rules := []api.SecurityGroupRule{
		{Direction: api.DirectionEgress, EtherType: api.EtherTypeIPv4, Protocol: api.ProtocolAny},
		{Direction: api.DirectionEgress, EtherType: api.EtherTypeIPv6, Protocol: api.ProtocolAny},
		{Direction: api.DirectionIngress, EtherType: api.EtherTypeIPv4, Protocol: api.ProtocolAny, RemoteGroup: DefaultGroup},
		{Direction: api.DirectionIngress, EtherType: api.EtherTypeIPv6, Protocol: api.ProtocolAny, RemoteGroup: DefaultGroup},
	}
	for i := range rules {
		rules[i].ID = newRuleID()
	}
	return &api.SecurityGroup{
		Meta: api.Meta{Name: DefaultGroup, Project: project, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.SecurityGroupSpec{Description: "Everything out; in from the ports of this group.", Rules: rules},
	}
}

// DefaultGroupOp is the write that makes a project's default group, to
// add to the transaction that makes the project.
func (m *Manager) DefaultGroupOp(project string) store.Op {
	g := defaultGroupOf(project)
	return m.cfg.SecurityGroups.OpCreate(g.Key(), g)
}

// EnsureDefaultGroups makes the default group of every project that has
// none (projects made before networks existed).
func (m *Manager) EnsureDefaultGroups(ctx context.Context) error {
	for _, p := range listAll(m.cfg.Projects, nil) {
		if _, ok := m.cfg.SecurityGroups.Get(api.Key(p.Name, DefaultGroup)); ok {
			continue
		}
		if _, err := m.cfg.Store.Txn(ctx, m.DefaultGroupOp(p.Name)); err != nil && !lost(err) {
			return fmt.Errorf("making the default security group of project %q: %w", p.Name, err)
		}
	}
	return nil
}

// refOps are the claims a group's rules hold on the remote groups they
// name (none on itself), against those it held: created, deleted, and the
// remote groups checked. field names the rules in the request.
func (m *Manager) refOps(g *api.SecurityGroup, held []*Claim, field string, start int) ([]store.Op, error) {
	var ops []store.Op
	want := map[string]bool{}
	for i, r := range g.Spec.Rules {
		if r.RemoteGroup == "" || r.RemoteGroup == g.Name {
			continue
		}
		rkey := api.Key(g.Project, r.RemoteGroup)
		remote, ok := m.cfg.SecurityGroups.Get(rkey)
		if !ok {
			f := fmt.Sprintf("%s[%d].remoteGroup", field, i-start)
			if i < start {
				f = field
			}
			return nil, api.Invalid(f, "security group %q not found in project %q", r.RemoteGroup, g.Project)
		}
		c := groupRefClaim(remote.UID, g.UID)
		if want[c] {
			continue
		}
		want[c] = true
		ops = append(ops, m.cfg.SecurityGroups.OpCheck(rkey, remote.Version))
		if !slices.ContainsFunc(held, func(h *Claim) bool { return h.Name == c }) {
			ops = append(ops, m.cfg.Claims.OpCreate(c, &Claim{Name: c, Kind: kindGroup, Owner: g.Key(), OwnerUID: g.UID}))
		}
	}
	for _, h := range held {
		if !want[h.Name] {
			ops = append(ops, m.cfg.Claims.OpDelete(h.Name, h.Version))
		}
	}
	return ops, nil
}

// CreateSecurityGroup makes a security group.
func (m *Manager) CreateSecurityGroup(ctx context.Context, project string, req api.SecurityGroupCreate) (*api.SecurityGroup, error) {
	if err := validateMeta(req.Name, req.Labels); err != nil {
		return nil, err
	}
	if err := validateDescription(req.Description); err != nil {
		return nil, err
	}
	key := api.Key(project, req.Name)
	for attempt := range maxAttempts {
		if _, ok := m.cfg.SecurityGroups.Get(key); ok {
			return nil, api.Conflict("security group %q already exists", req.Name)
		}
		now := time.Now().UTC()
		g := &api.SecurityGroup{
			Meta: api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec: api.SecurityGroupSpec{Description: req.Description, Rules: slices.Clone(req.Rules)},
		}
		if err := validateRules(g.Spec.Rules, 0, nil, "rules"); err != nil {
			return nil, err
		}
		refs, err := m.refOps(g, nil, "rules", 0)
		if err != nil {
			return nil, err
		}
		_, err = m.cfg.Store.Txn(ctx, append([]store.Op{m.cfg.SecurityGroups.OpCreate(key, g)}, refs...)...)
		if err == nil {
			return g, nil
		}
		ke, ok := keyErr(err)
		switch {
		case !ok:
			return nil, fmt.Errorf("storing security group %q: %w", req.Name, err)
		case ke.Kind == m.cfg.SecurityGroups.Kind() && ke.Name == key:
			return nil, api.Conflict("security group %q already exists", req.Name)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("security group %q: the groups it names are being changed concurrently; try again", req.Name)
}

// changeGroup applies change to a group and stores it with the claims its
// rules hold, retrying on a concurrent change. field names the rules of
// the request in errors.
func (m *Manager) changeGroup(ctx context.Context, project, name, field string, change func(g *api.SecurityGroup) (start int, err error)) (*api.SecurityGroup, error) {
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		cur, ok := m.cfg.SecurityGroups.Get(key)
		if !ok {
			return nil, api.NotFound("security group", name)
		}
		next := store.Clone(cur)
		start, err := change(next)
		if err != nil {
			return nil, err
		}
		var held []*Claim
		for _, c := range m.claimsOf(cur.UID) {
			if strings.HasPrefix(c.Name, "sg/") && strings.Contains(c.Name, "/group/") {
				held = append(held, c)
			}
		}
		refs, err := m.refOps(next, held, field, start)
		if err != nil {
			return nil, err
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		_, err = m.cfg.Store.Txn(ctx, append([]store.Op{m.cfg.SecurityGroups.OpUpdate(key, next, cur.Version)}, refs...)...)
		if err == nil {
			return next, nil
		}
		if !lost(err) {
			return nil, fmt.Errorf("updating security group %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return nil, err
		}
	}
	return nil, api.Conflict("security group %q is being changed concurrently; try again", name)
}

// UpdateSecurityGroup changes a group's description, or replaces its rules
// (rules keep their ids when given back).
func (m *Manager) UpdateSecurityGroup(ctx context.Context, project, name string, upd api.SecurityGroupUpdate) (*api.SecurityGroup, error) {
	if upd.Description != nil {
		if err := validateDescription(*upd.Description); err != nil {
			return nil, err
		}
	}
	return m.changeGroup(ctx, project, name, "rules", func(g *api.SecurityGroup) (int, error) {
		if upd.Description != nil {
			g.Spec.Description = *upd.Description
		}
		if upd.Rules != nil {
			known := map[string]bool{}
			for _, r := range g.Spec.Rules {
				known[r.ID] = true
			}
			rules := slices.Clone(*upd.Rules)
			if err := validateRules(rules, 0, known, "rules"); err != nil {
				return 0, err
			}
			g.Spec.Rules = rules
		}
		return 0, nil
	})
}

// AddRules adds rules to a group.
func (m *Manager) AddRules(ctx context.Context, project, name string, rules []api.SecurityGroupRule) (*api.SecurityGroup, error) {
	if len(rules) == 0 {
		return nil, api.Invalid("rules", "give at least one rule")
	}
	if len(rules) > MaxRulesPerGroup {
		return nil, api.Invalid("rules", "a security group holds at most %d rules, not %d", MaxRulesPerGroup, len(rules))
	}
	return m.changeGroup(ctx, project, name, "rules", func(g *api.SecurityGroup) (int, error) {
		start := len(g.Spec.Rules)
		all := append(g.Spec.Rules, slices.Clone(rules)...)
		if len(all) > MaxRulesPerGroup {
			return 0, api.Invalid("rules", "security group %q has %d rules: %d more would pass the %d a group may hold", name, start, len(rules), MaxRulesPerGroup)
		}
		if err := validateRules(all, start, nil, "rules"); err != nil {
			return 0, err
		}
		g.Spec.Rules = all
		return start, nil
	})
}

// RemoveRule removes a rule of a group by its id.
func (m *Manager) RemoveRule(ctx context.Context, project, name, id string) (*api.SecurityGroup, error) {
	return m.changeGroup(ctx, project, name, "rules", func(g *api.SecurityGroup) (int, error) {
		i := slices.IndexFunc(g.Spec.Rules, func(r api.SecurityGroupRule) bool { return r.ID == id })
		if i < 0 {
			return 0, api.NotFound("rule", id)
		}
		g.Spec.Rules = slices.Delete(g.Spec.Rules, i, i+1)
		return len(g.Spec.Rules), nil
	})
}

// DeleteSecurityGroup deletes a group no port uses and no other group's
// rule names. A project's default group goes with the project.
func (m *Manager) DeleteSecurityGroup(ctx context.Context, project, name string) error {
	if name == DefaultGroup {
		return api.Conflict("the default security group goes with its project; change its rules instead")
	}
	key := api.Key(project, name)
	for attempt := range maxAttempts {
		g, ok := m.cfg.SecurityGroups.Get(key)
		if !ok {
			return api.NotFound("security group", name)
		}
		if used := m.claimed(groupPrefix(g.UID)); len(used) > 0 {
			return api.Conflict("security group %q is used by %s", name, holders(used))
		}
		ops := []store.Op{m.cfg.SecurityGroups.OpDelete(key, g.Version), m.cfg.Claims.OpNoneUnder(groupPrefix(g.UID))}
		for _, c := range m.claimsOf(g.UID) {
			ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
		}
		_, err := m.cfg.Store.Txn(ctx, ops...)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return fmt.Errorf("deleting security group %q: %w", name, err)
		}
		if err := sleep(ctx, retryPause(attempt)); err != nil {
			return err
		}
	}
	return api.Conflict("security group %q is being changed concurrently; try again", name)
}

// ProjectHolds names what network objects a project still holds beyond
// its default group ("2 networks", "1 port"), for a project delete.
func (m *Manager) ProjectHolds(project string) []string {
	var out []string
	count := func(n int, what string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	in := func(meta *api.Meta) bool { return meta.Project == project }
	count(len(listAll(m.cfg.Networks, func(n *api.Network) bool { return in(&n.Meta) })), "networks")
	count(len(listAll(m.cfg.Ports, func(p *api.Port) bool { return in(&p.Meta) })), "ports")
	count(len(listAll(m.cfg.FloatingIPs, func(f *api.FloatingIP) bool { return in(&f.Meta) })), "floating IPs")
	count(len(listAll(m.cfg.SecurityGroups, func(g *api.SecurityGroup) bool { return in(&g.Meta) && g.Name != DefaultGroup })), "security groups")
	return out
}

// DeleteProjectOps are the writes that delete what a project's delete
// takes with it: its default group, which nothing else may use once the
// project holds nothing (ProjectHolds).
func (m *Manager) DeleteProjectOps(project string) []store.Op {
	g, ok := m.cfg.SecurityGroups.Get(api.Key(project, DefaultGroup))
	if !ok {
		return nil
	}
	ops := []store.Op{m.cfg.SecurityGroups.OpDelete(g.Key(), g.Version), m.cfg.Claims.OpNoneUnder(groupPrefix(g.UID))}
	for _, c := range m.claimsOf(g.UID) {
		ops = append(ops, m.cfg.Claims.OpDelete(c.Name, c.Version))
	}
	return ops
}
