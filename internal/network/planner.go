package network

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/store"
)

// planner gathers the writes of one transaction that makes ports: the
// ports, their claims and the checks of what they refer to. What the
// server chose (an address, a MAC, a port's name) may be chosen again
// when another writer took it first; what the request chose is a conflict.
type planner struct {
	m       *Manager
	project string
	ops     []store.Op
	checks  map[string]bool // "<kind>\x00<name>" of the objects checked
	// picked are the addresses chosen in this plan, by subnet UID, and
	// lost those other writers took first in earlier attempts.
	picked map[string]map[netip.Addr]bool
	lost   map[string]map[netip.Addr]bool
	// auto and user map the names of the claims (and port keys) of this
	// plan to whether the server chose them, or to the request's field.
	auto    map[string]bool
	user    map[string]string
	release []func()
	groups  map[string]*api.SecurityGroup // groups made by this plan (the default one)
	ports   []*api.Port
	// single allocates one address, of the first family that has a
	// subnet (IPv4 first), rather than one of each (a floating IP).
	single bool
}

func (m *Manager) newPlanner(project string, lost map[string]map[netip.Addr]bool) *planner {
	if lost == nil {
		lost = map[string]map[netip.Addr]bool{}
	}
	return &planner{m: m, project: project, checks: map[string]bool{}, picked: map[string]map[netip.Addr]bool{},
		lost: lost, auto: map[string]bool{}, user: map[string]string{}, groups: map[string]*api.SecurityGroup{}}
}

// done releases what the plan holds in this process.
func (p *planner) done() {
	for _, f := range p.release {
		f()
	}
	p.release = nil
}

func (p *planner) check(kind string, op store.Op) {
	if !p.checks[kind] {
		p.checks[kind] = true
		p.ops = append(p.ops, op)
	}
}

func (p *planner) claim(c *Claim, field string) {
	p.ops = append(p.ops, p.m.cfg.Claims.OpCreate(c.Name, c))
	if field == "" {
		p.auto[c.Name] = true
	} else {
		p.user[c.Name] = field
	}
}

// portRequest is one port to plan: from POST /v1/ports or a VM's NIC.
type portRequest struct {
	field  string // prefix of the request's field names: "" or "nics[1]."
	name   string
	labels map[string]string
	spec   api.PortSpec
	// autoName tells that the server chose the name (a VM's port).
	autoName bool
}

// plan adds one port to the transaction and returns it.
func (p *planner) plan(req portRequest) (*api.Port, error) {
	m := p.m
	f := req.field
	spec := req.spec
	n, ok := m.cfg.Networks.Get(api.Key(p.project, spec.Network))
	if !ok {
		return nil, api.Invalid(f+"network", "network %q not found", spec.Network)
	}
	p.check(m.cfg.Networks.Kind()+"\x00"+n.Key(), m.cfg.Networks.OpCheck(n.Key(), n.Version))
	now := time.Now().UTC()
	port := &api.Port{
		Meta:   api.Meta{Name: req.name, Project: p.project, UID: api.NewUID(), Labels: req.labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Status: api.PortStatus{State: api.PortDown},
	}
	key := port.Key()
	owner := func(name string) *Claim { return &Claim{Name: name, Kind: kindPort, Owner: key, OwnerUID: port.UID} }

	// The MAC: the request's, or one no port of the network holds.
	if spec.MAC != "" {
		mac, err := normalizeMAC(f+"mac", spec.MAC)
		if err != nil {
			return nil, err
		}
		if c, ok := m.cfg.Claims.Get(macClaim(n.UID, mac)); ok {
			return nil, taken(f+"mac", "%s is held by %s on network %q", mac, ownerName(c), n.Name)
		}
		spec.MAC = mac
		p.claim(owner(macClaim(n.UID, mac)), f+"mac")
	} else {
		for {
			spec.MAC = randomMAC()
			if _, ok := m.cfg.Claims.Get(macClaim(n.UID, spec.MAC)); !ok && !p.auto[macClaim(n.UID, spec.MAC)] {
				break
			}
		}
		p.claim(owner(macClaim(n.UID, spec.MAC)), "")
	}

	// The addresses.
	ips, err := p.addresses(n, f, spec.FixedIPs, owner)
	if err != nil {
		return nil, err
	}
	spec.FixedIPs = ips

	// The security groups.
	if spec.PortSecurity == nil {
		on := true
		spec.PortSecurity = &on
	}
	groups, err := p.groupsOf(f, spec.SecurityGroups, *spec.PortSecurity, spec.SecurityGroups == nil)
	if err != nil {
		return nil, err
	}
	spec.SecurityGroups = nil
	for _, g := range groups {
		spec.SecurityGroups = append(spec.SecurityGroups, g.Name)
		p.claim(owner(groupPortClaim(g.UID, port.UID)), "")
	}
	port.Spec = spec
	if req.autoName {
		p.auto[key] = true
	} else {
		p.user[key] = f + "name"
	}
	p.ops = append(p.ops, m.cfg.Ports.OpCreate(key, port))
	p.ports = append(p.ports, port)
	return port, nil
}

// ownerName names a claim's holder for an error: `port "web-1"`.
func ownerName(c *Claim) string {
	_, name := api.SplitKey(c.Owner)
	return fmt.Sprintf("%s %q", c.Kind, name)
}

// addresses checks the fixed IPs a port asks for and claims them, or
// allocates one of each family from the network's first subnet of that
// family with a free address.
func (p *planner) addresses(n *api.Network, f string, want []api.FixedIP, owner func(string) *Claim) ([]api.FixedIP, error) {
	m := p.m
	subnets := m.subnetsOf(n)
	plans := make(map[string]*subnetPlan, len(subnets))
	for _, s := range subnets {
		sp, err := planOf(s)
		if err != nil {
			return nil, err
		}
		plans[s.UID] = sp
	}
	if len(want) > maxFixedIPs {
		return nil, api.Invalid(f+"fixedIPs", "at most %d fixed IPs are allowed, not %d", maxFixedIPs, len(want))
	}
	var out []api.FixedIP
	useSubnet := func(s *api.Subnet) {
		p.check(m.cfg.Subnets.Kind()+"\x00"+s.Key(), m.cfg.Subnets.OpCheck(s.Key(), s.Version))
	}
	if len(want) == 0 {
		for _, fam := range []bool{true, false} { // IPv4, then IPv6
			var tried []string
			found := false
			for _, s := range subnets {
				sp := plans[s.UID]
				if sp.prefix.Addr().Is4() != fam {
					continue
				}
				tried = append(tried, fmt.Sprintf("%s (%s)", s.Name, s.Spec.CIDR))
				if a, ok := p.pick(n, s, sp); ok {
					out = append(out, api.FixedIP{Subnet: s.Name, IP: a.String()})
					p.claim(owner(ipClaim(n.UID, s.UID, a)), "")
					useSubnet(s)
					found = true
					break
				}
			}
			if len(tried) > 0 && !found {
				return nil, &api.Error{Code: api.CodeConflict, Field: f + "fixedIPs",
					Message: fmt.Sprintf("network %q has no free %s address: its subnets %s are full", n.Name, map[bool]string{true: "IPv4", false: "IPv6"}[fam], strings.Join(tried, ", "))}
			}
			if p.single && found {
				break
			}
		}
		return out, nil
	}
	seen := map[netip.Addr]bool{}
	for i, fx := range want {
		fi := fmt.Sprintf("%sfixedIPs[%d]", f, i)
		var s *api.Subnet
		if fx.Subnet != "" {
			for _, c := range subnets {
				if c.Name == fx.Subnet {
					s = c
				}
			}
			if s == nil {
				return nil, api.Invalid(fi+".subnet", "subnet %q is not a subnet of network %q", fx.Subnet, n.Name)
			}
		}
		if fx.IP == "" {
			if s == nil {
				return nil, api.Invalid(fi, "give an ip, a subnet, or both")
			}
			a, ok := p.pick(n, s, plans[s.UID])
			if !ok {
				return nil, &api.Error{Code: api.CodeConflict, Field: fi + ".subnet", Message: fmt.Sprintf("%s.subnet: subnet %q (%s) has no free address", fi, s.Name, s.Spec.CIDR)}
			}
			out = append(out, api.FixedIP{Subnet: s.Name, IP: a.String()})
			p.claim(owner(ipClaim(n.UID, s.UID, a)), "")
			useSubnet(s)
			continue
		}
		a, err := parseAddr(fi+".ip", fx.IP)
		if err != nil {
			return nil, err
		}
		if s == nil {
			for _, c := range subnets {
				if plans[c.UID].prefix.Contains(a) {
					s = c
				}
			}
			if s == nil {
				var cidrs []string
				for _, c := range subnets {
					cidrs = append(cidrs, c.Spec.CIDR)
				}
				if len(cidrs) == 0 {
					return nil, api.Invalid(fi+".ip", "network %q has no subnet: add one before asking for addresses", n.Name)
				}
				return nil, api.Invalid(fi+".ip", "%s is in no subnet of network %q (%s)", a, n.Name, strings.Join(cidrs, ", "))
			}
		}
		if err := plans[s.UID].usable(a); err != nil {
			return nil, api.Invalid(fi+".ip", "%v (subnet %q)", err, s.Name)
		}
		if seen[a] {
			return nil, api.Invalid(fi+".ip", "%s is asked for twice", a)
		}
		seen[a] = true
		name := ipClaim(n.UID, s.UID, a)
		if c, ok := m.cfg.Claims.Get(name); ok {
			return nil, taken(fi+".ip", "%s is held by %s", a, ownerName(c))
		}
		if p.picked[s.UID][a] {
			return nil, taken(fi+".ip", "%s is asked for by another NIC of this request", a)
		}
		p.mark(s.UID, a)
		out = append(out, api.FixedIP{Subnet: s.Name, IP: a.String()})
		p.claim(owner(name), fi+".ip")
		useSubnet(s)
	}
	return out, nil
}

func (p *planner) mark(subnetUID string, a netip.Addr) {
	if p.picked[subnetUID] == nil {
		p.picked[subnetUID] = map[netip.Addr]bool{}
	}
	p.picked[subnetUID][a] = true
}

// pick chooses a free address of a subnet: none the index shows claimed,
// none this plan took or lost, preferably none another create of this
// process is trying.
func (p *planner) pick(n *api.Network, s *api.Subnet, sp *subnetPlan) (netip.Addr, bool) {
	prefix := subnetIPPrefix(n.UID, s.UID)
	held := map[netip.Addr]bool{}
	for _, c := range p.m.claimed(prefix) {
		if a, err := netip.ParseAddr(strings.TrimPrefix(c.Name, prefix)); err == nil {
			held[a] = true
		}
	}
	for a := range p.picked[s.UID] {
		held[a] = true
	}
	for a := range p.lost[s.UID] {
		held[a] = true
	}
	a, ok := sp.pick(held, p.m.avoided(s.UID))
	if ok {
		p.mark(s.UID, a)
		p.release = append(p.release, p.m.try(s.UID, a))
	}
	return a, ok
}

// groupsOf resolves a port's security groups in the plan's project: by
// default the project's "default" group (made now if the project has none
// yet); none when port security is off.
func (p *planner) groupsOf(f string, names []string, portSecurity, byDefault bool) ([]*api.SecurityGroup, error) {
	if !portSecurity {
		if len(names) > 0 {
			return nil, api.Invalid(f+"securityGroups", "a port without port security has no security groups")
		}
		return nil, nil
	}
	if byDefault {
		names = []string{DefaultGroup}
	}
	if len(names) > maxPortGroups {
		return nil, api.Invalid(f+"securityGroups", "at most %d security groups are allowed, not %d", maxPortGroups, len(names))
	}
	var out []*api.SecurityGroup
	for i, name := range names {
		fi := fmt.Sprintf("%ssecurityGroups[%d]", f, i)
		if strings.Contains(name, "/") {
			return nil, api.Invalid(fi, "%q: a port uses security groups of its own project only", name)
		}
		if err := validateName(fi, name); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(g *api.SecurityGroup) bool { return g.Name == name }) {
			return nil, api.Invalid(fi, "security group %q is named twice", name)
		}
		g, err := p.group(name)
		if err != nil {
			return nil, api.Invalid(fi, "%v", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// group finds a group of the plan's project, checked in the transaction;
// the default group is made by the plan if it does not exist.
func (p *planner) group(name string) (*api.SecurityGroup, error) {
	m := p.m
	key := api.Key(p.project, name)
	if g, ok := p.groups[key]; ok {
		return g, nil
	}
	if g, ok := m.cfg.SecurityGroups.Get(key); ok {
		p.check(m.cfg.SecurityGroups.Kind()+"\x00"+key, m.cfg.SecurityGroups.OpCheck(key, g.Version))
		return g, nil
	}
	if name != DefaultGroup {
		return nil, fmt.Errorf("security group %q not found in project %q", name, p.project)
	}
	g := defaultGroupOf(p.project)
	p.groups[key] = g
	p.auto[key] = true
	p.ops = append(p.ops, m.cfg.SecurityGroups.OpCreate(key, g))
	return g, nil
}

// failed sorts out why the plan's transaction failed: retry says that a
// fresh plan may succeed (the server's choice was taken, something it
// checked changed); otherwise err is the request's fault, or nil when the
// failure is not the plan's.
func (p *planner) failed(cause error) (retry bool, err error) {
	ke, ok := keyErr(cause)
	if !ok {
		return false, nil
	}
	if field, ok := p.user[ke.Name]; ok && errors.Is(cause, store.ErrExists) {
		if ke.Kind == p.m.cfg.Ports.Kind() {
			_, name := api.SplitKey(ke.Name)
			return false, taken(field, "port %q already exists", name)
		}
		return false, taken(field, "taken by another object a moment ago")
	}
	if p.auto[ke.Name] && ke.Kind == p.m.cfg.Claims.Kind() {
		p.lose(ke.Name)
	}
	if admission.Retry(cause) {
		return true, nil // another admission of the project passed first
	}
	// A check, the server's choice or an object of the VM's own write:
	// read again and plan again.
	for _, own := range p.ports {
		if ke.Kind == p.m.cfg.Ports.Kind() && ke.Name == own.Key() {
			return true, nil
		}
	}
	switch ke.Kind {
	case p.m.cfg.Claims.Kind(), p.m.cfg.Networks.Kind(), p.m.cfg.Subnets.Kind(), p.m.cfg.SecurityGroups.Kind(), p.m.cfg.Ports.Kind(), p.m.cfg.FloatingIPs.Kind():
		return true, nil
	}
	return false, nil
}

// lose records that an address claim of the plan was taken first.
func (p *planner) lose(claim string) {
	rest, ok := strings.CutPrefix(claim, "net/")
	if !ok {
		return
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "ip" {
		return
	}
	if a, err := netip.ParseAddr(parts[3]); err == nil {
		if p.lost[parts[2]] == nil {
			p.lost[parts[2]] = map[netip.Addr]bool{}
		}
		p.lost[parts[2]][a] = true
	}
}
