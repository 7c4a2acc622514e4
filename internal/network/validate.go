package network

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/labels"
)

// Limits of what one request may ask for.
const (
	MaxRulesPerGroup   = 1000 // rules of one security group
	maxPools           = 16
	maxDNSServers      = 8
	maxRoutes          = 32
	maxFixedIPs        = 8
	maxPortGroups      = 16 // security groups of one port
	maxDescriptionSize = 1024
	minMTU, maxMTU     = 576, 9000
	defaultOverlayMTU  = 1450 // a 1500-byte underlay less the VXLAN header
	defaultBridgedMTU  = 1500
	// Prefix lengths a subnet may have: room for a gateway and ports.
	minBits4, maxBits4 = 8, 30
	minBits6, maxBits6 = 48, 126
)

var (
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// ifaceRE is a Linux interface name a bridged network may name.
	ifaceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)
)

// validateName checks a DNS-label object name.
func validateName(field, name string) error {
	if name == "" {
		return api.Invalid(field, "is required")
	}
	if !dnsLabelRE.MatchString(name) {
		return api.Invalid(field, "%q is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

func validateMeta(name string, lbls map[string]string) error {
	if err := validateName("name", name); err != nil {
		return err
	}
	if key, err := labels.Validate(lbls); err != nil {
		return api.Invalid("labels."+key, "%v", err)
	}
	return nil
}

func validateDescription(d string) error {
	if len(d) > maxDescriptionSize {
		return api.Invalid("description", "is %d bytes, more than the %d allowed", len(d), maxDescriptionSize)
	}
	return nil
}

// validateNetworkSpec checks a network's spec and fills its defaults.
// Bridged and external networks are the installation's: only a superadmin
// makes them.
func validateNetworkSpec(spec *api.NetworkSpec, superadmin bool) error {
	if err := validateDescription(spec.Description); err != nil {
		return err
	}
	switch spec.Type {
	case "":
		spec.Type = api.NetworkOverlay
	case api.NetworkOverlay, api.NetworkBridged:
	case api.NetworkProvider:
		return api.Invalid("type", "provider networks are the connected estates' own; they cannot be made here")
	default:
		return api.Invalid("type", "must be overlay or bridged, not %q", spec.Type)
	}
	if spec.Type == api.NetworkBridged {
		if !superadmin {
			return &api.Error{Code: api.CodeForbidden, Message: "only a superadmin makes bridged networks: they attach to the hosts' own bridges"}
		}
		if !ifaceRE.MatchString(spec.Bridge) {
			return api.Invalid("bridge", "a bridged network needs the name of a bridge or interface of its hosts (1-15 letters, digits, '_', '.', '-'), not %q", spec.Bridge)
		}
		if spec.NAT {
			return api.Invalid("nat", "a bridged network reaches out through its bridge; NAT is for overlay networks")
		}
	} else if spec.Bridge != "" {
		return api.Invalid("bridge", "only a bridged network names a bridge")
	}
	if spec.External {
		if !superadmin {
			return &api.Error{Code: api.CodeForbidden, Message: "only a superadmin makes external networks"}
		}
		if spec.Type != api.NetworkBridged {
			return api.Invalid("external", "an external network is a bridged network (type bridged)")
		}
	}
	switch {
	case spec.MTU == 0 && spec.Type == api.NetworkOverlay:
		spec.MTU = defaultOverlayMTU
	case spec.MTU == 0:
		spec.MTU = defaultBridgedMTU
	case spec.MTU < minMTU || spec.MTU > maxMTU:
		return api.Invalid("mtu", "must be from %d to %d, not %d", minMTU, maxMTU, spec.MTU)
	}
	return nil
}

// parseAddr parses an address, refusing IPv4-mapped IPv6 and zones.
func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, api.Invalid(field, "%q is not an IP address", s)
	}
	return a, nil
}

// parsePrefix parses a CIDR whose address has no bits beyond its length.
func parsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, api.Invalid(field, "%q is not a CIDR such as 10.0.0.0/24 or fd00::/64", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, api.Invalid(field, "%q has bits set beyond its prefix length: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// validateSubnetSpec checks a subnet's spec (all but its network), fills
// its defaults and returns the allocator's view of it.
func validateSubnetSpec(spec *api.SubnetSpec) (*subnetPlan, error) {
	if spec.CIDR == "" {
		return nil, api.Invalid("cidr", "is required")
	}
	prefix, err := parsePrefix("cidr", spec.CIDR)
	if err != nil {
		return nil, err
	}
	lo, hi := minBits4, maxBits4
	if prefix.Addr().Is6() {
		lo, hi = minBits6, maxBits6
	}
	if prefix.Bits() < lo || prefix.Bits() > hi {
		return nil, api.Invalid("cidr", "an %s subnet's prefix length must be from /%d to /%d, not /%d", family(prefix.Addr()), lo, hi, prefix.Bits())
	}
	spec.CIDR = prefix.String()
	p := &subnetPlan{prefix: prefix}
	if spec.Gateway == "" {
		p.gateway = prefix.Addr().Next()
	} else {
		if p.gateway, err = parseAddr("gateway", spec.Gateway); err != nil {
			return nil, err
		}
		if !prefix.Contains(p.gateway) {
			return nil, api.Invalid("gateway", "%s is outside the subnet's CIDR %s", p.gateway, prefix)
		}
		gw := p.gateway
		p.gateway = netip.Addr{} // usable checks network and broadcast only
		if err := p.usable(gw); err != nil {
			return nil, api.Invalid("gateway", "%v", err)
		}
		p.gateway = gw
	}
	spec.Gateway = p.gateway.String()
	if spec.DHCP == nil {
		on := true
		spec.DHCP = &on
	}
	if len(spec.Pools) > maxPools {
		return nil, api.Invalid("pools", "at most %d pools are allowed, not %d", maxPools, len(spec.Pools))
	}
	if len(spec.Pools) == 0 {
		first, last := prefix.Addr().Next(), lastAddr(prefix)
		if prefix.Addr().Is4() {
			last = last.Prev()
		}
		spec.Pools = []api.IPRange{{Start: first.String(), End: last.String()}}
	}
	for i := range spec.Pools {
		field := fmt.Sprintf("pools[%d]", i)
		start, err := parseAddr(field+".start", spec.Pools[i].Start)
		if err != nil {
			return nil, err
		}
		end, err := parseAddr(field+".end", spec.Pools[i].End)
		if err != nil {
			return nil, err
		}
		for _, b := range []struct {
			name string
			a    netip.Addr
		}{{"start", start}, {"end", end}} {
			if err := (&subnetPlan{prefix: prefix}).usable(b.a); err != nil {
				return nil, api.Invalid(field+"."+b.name, "%v", err)
			}
		}
		if end.Less(start) {
			return nil, api.Invalid(field+".end", "%s comes before the pool's start %s", end, start)
		}
		r := addrRange{start, end}
		for j, o := range p.pools {
			if !(r.end.Less(o.start) || o.end.Less(r.start)) {
				return nil, api.Invalid(field, "%s-%s overlaps pools[%d] (%s-%s)", start, end, j, o.start, o.end)
			}
		}
		p.pools = append(p.pools, r)
		spec.Pools[i] = api.IPRange{Start: start.String(), End: end.String()}
	}
	if len(spec.DNSServers) > maxDNSServers {
		return nil, api.Invalid("dnsServers", "at most %d DNS servers are allowed, not %d", maxDNSServers, len(spec.DNSServers))
	}
	for i, d := range spec.DNSServers {
		a, err := parseAddr(fmt.Sprintf("dnsServers[%d]", i), d)
		if err != nil {
			return nil, err
		}
		spec.DNSServers[i] = a.String()
	}
	if len(spec.Routes) > maxRoutes {
		return nil, api.Invalid("routes", "at most %d routes are allowed, not %d", maxRoutes, len(spec.Routes))
	}
	for i, rt := range spec.Routes {
		field := fmt.Sprintf("routes[%d]", i)
		dst, err := parsePrefix(field+".destination", rt.Destination)
		if err != nil {
			return nil, err
		}
		hop, err := parseAddr(field+".nextHop", rt.NextHop)
		if err != nil {
			return nil, err
		}
		if dst.Addr().Is4() != prefix.Addr().Is4() {
			return nil, api.Invalid(field+".destination", "%s is %s; the subnet is %s", dst, family(dst.Addr()), family(prefix.Addr()))
		}
		if !prefix.Contains(hop) {
			return nil, api.Invalid(field+".nextHop", "%s is outside the subnet's CIDR %s: a next hop must be on the link", hop, prefix)
		}
		spec.Routes[i] = api.Route{Destination: dst.String(), NextHop: hop.String()}
	}
	return p, nil
}

// planOf is the allocator's view of a stored subnet.
func planOf(s *api.Subnet) (*subnetPlan, error) {
	spec := s.Spec
	spec.Pools = slices.Clone(spec.Pools)
	spec.DNSServers, spec.Routes = nil, nil
	p, err := validateSubnetSpec(&spec)
	if err != nil {
		return nil, fmt.Errorf("subnet %s: %w", s.Key(), err)
	}
	return p, nil
}

// normalizeMAC checks a unicast MAC and writes it in lowercase colon form.
func normalizeMAC(field, mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", api.Invalid(field, "%q is not a MAC address", mac)
	}
	if hw[0]&1 == 1 {
		return "", api.Invalid(field, "%q is a multicast address", mac)
	}
	return hw.String(), nil
}

// validateRule checks one rule and fills its defaults; field names it in
// the request.
func validateRule(field string, r *api.SecurityGroupRule) error {
	switch r.Direction {
	case api.DirectionIngress, api.DirectionEgress:
	case "":
		return api.Invalid(field+".direction", "is required: ingress or egress")
	default:
		return api.Invalid(field+".direction", "must be ingress or egress, not %q", r.Direction)
	}
	switch r.EtherType {
	case "":
		r.EtherType = api.EtherTypeIPv4
	case api.EtherTypeIPv4, api.EtherTypeIPv6:
	default:
		return api.Invalid(field+".etherType", "must be IPv4 or IPv6, not %q", r.EtherType)
	}
	switch r.Protocol {
	case "":
		r.Protocol = api.ProtocolAny
	case api.ProtocolAny, api.ProtocolTCP, api.ProtocolUDP, api.ProtocolICMP:
	default:
		return api.Invalid(field+".protocol", "must be any, tcp, udp or icmp, not %q", r.Protocol)
	}
	if r.PortMin != 0 || r.PortMax != 0 {
		if r.Protocol != api.ProtocolTCP && r.Protocol != api.ProtocolUDP {
			return api.Invalid(field+".portMin", "ports apply to tcp and udp, not %s", r.Protocol)
		}
		if r.PortMax == 0 {
			r.PortMax = r.PortMin
		}
		if r.PortMin < 1 || r.PortMin > 65535 {
			return api.Invalid(field+".portMin", "must be from 1 to 65535, not %d", r.PortMin)
		}
		if r.PortMax < r.PortMin || r.PortMax > 65535 {
			return api.Invalid(field+".portMax", "must be from portMin (%d) to 65535, not %d", r.PortMin, r.PortMax)
		}
	}
	if r.RemoteCIDR != "" && r.RemoteGroup != "" {
		return api.Invalid(field+".remoteGroup", "give at most one of remoteCIDR and remoteGroup")
	}
	if r.RemoteCIDR != "" {
		p, err := parsePrefix(field+".remoteCIDR", r.RemoteCIDR)
		if err != nil {
			return err
		}
		if family(p.Addr()) != r.EtherType {
			return api.Invalid(field+".remoteCIDR", "%s is %s; the rule's etherType is %s", p, family(p.Addr()), r.EtherType)
		}
		r.RemoteCIDR = p.String()
	}
	if r.RemoteGroup != "" {
		if err := validateName(field+".remoteGroup", r.RemoteGroup); err != nil {
			return err
		}
	}
	return nil
}

// ruleIDRE is the form of the ids the server gives rules.
var ruleIDRE = regexp.MustCompile(`^[0-9a-f]{8,32}$`)

// sameRule tells whether two rules allow the same traffic.
func sameRule(a, b api.SecurityGroupRule) bool {
	a.ID, b.ID = "", ""
	return a == b
}

// validateRules checks the rules a group would have, keeping the ids of
// those in known and giving the others new ones. start is the index of
// the first rule of the request in rules (the rules before it are the
// group's own, already checked).
func validateRules(rules []api.SecurityGroupRule, start int, known map[string]bool, field string) error {
	if len(rules) > MaxRulesPerGroup {
		return api.Invalid(field, "a security group holds at most %d rules, not %d", MaxRulesPerGroup, len(rules))
	}
	ids := map[string]bool{}
	for i := range rules {
		r := &rules[i]
		f := fmt.Sprintf("%s[%d]", field, i-start)
		if i >= start {
			if err := validateRule(f, r); err != nil {
				return err
			}
			switch {
			case r.ID == "":
				r.ID = newRuleID()
			case !ruleIDRE.MatchString(r.ID) || !known[r.ID]:
				return api.Invalid(f+".id", "%q is not a rule of this group: rule ids are given by the server (leave id out)", r.ID)
			}
			for j := range i {
				if sameRule(rules[j], *r) {
					what := fmt.Sprintf("%s[%d]", field, j-start)
					if j < start {
						what = "rule " + rules[j].ID
					}
					return &api.Error{Code: api.CodeConflict, Field: f,
						Message: fmt.Sprintf("%s: the same rule as %s", f, what)}
				}
			}
		}
		if ids[r.ID] {
			return api.Invalid(f+".id", "rule id %q is given twice", r.ID)
		}
		ids[r.ID] = true
	}
	return nil
}
