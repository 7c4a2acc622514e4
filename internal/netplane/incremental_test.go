package netplane

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// churn is a world of one local host and one remote host that random
// changes are made to: rules added, changed and removed, ports added,
// removed, moved between groups, readdressed and unsecured, groups made.
type churn struct {
	v6   bool // ports get IPv6 addresses too
	w    *world
	r    *rand.Rand
	next int
}

func newChurn(seed uint64, underlays []string, v6 bool) *churn {
	c := &churn{v6: v6, w: &world{underlays: underlays}, r: rand.New(rand.NewPCG(seed, 1))}
	for n := 0; n < 3; n++ {
		subnets := []api.Subnet{subnet(fmt.Sprintf("p%d", n), "v4", "net", "10.1.0.0/16")}
		if n == 0 {
			subnets = append(subnets, subnet("p0", "v6", "net", "fd00:1::/64"))
		}
		c.w.net(api.HostNetwork{Key: fmt.Sprintf("p%d/net", n), ID: fmt.Sprintf("00000c%04d", n), Type: api.NetworkOverlay,
			VNI: 2000 + n, MTU: 1450, NAT: n == 0, Subnets: subnets})
	}
	for g := 0; g < 3; g++ {
		c.addGroup()
	}
	for i := 0; i < 12; i++ {
		c.addPort()
	}
	for i := 0; i < 30; i++ {
		c.addRule()
	}
	return c
}

func (c *churn) addGroup() string {
	c.next++
	key := fmt.Sprintf("p%d/g%d", c.next%3, c.next)
	c.w.group(api.HostSecurityGroup{Key: key, ID: fmt.Sprintf("00000d%04d", c.next)})
	return key
}

// groupsOf picks up to two groups of the port's project.
func (c *churn) groupsOf(project string) []string {
	var mine []string
	for _, g := range c.w.groups {
		if strings.HasPrefix(g.Key, project+"/") {
			mine = append(mine, g.Key)
		}
	}
	var out []string
	for _, g := range mine {
		if c.r.IntN(2) == 0 && len(out) < 2 {
			out = append(out, g)
		}
	}
	return out
}

func (c *churn) addPort() {
	c.next++
	i := c.next
	n := c.r.IntN(3)
	project := fmt.Sprintf("p%d", n)
	p := hostPort(project, fmt.Sprintf("port%d", i), fmt.Sprintf("0000e%05d", i), project+"/net",
		fmt.Sprintf("52:54:00:cc:%02x:%02x", i>>8&255, i&255), fmt.Sprintf("10.1.%d.%d", i/200, i%200+2), c.groupsOf(project)...)
	p.FixedIPs[0].Subnet = "v4"
	if c.v6 && n == 0 && c.r.IntN(2) == 0 {
		p.FixedIPs = append(p.FixedIPs, api.FixedIP{Subnet: "v6", IP: fmt.Sprintf("fd00:1::%x", i)})
	}
	c.w.port(c.r.IntN(2), p)
}

func (c *churn) addRule() {
	if len(c.w.groups) == 0 {
		return
	}
	g := &c.w.groups[c.r.IntN(len(c.w.groups))]
	r := api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 1 + c.r.IntN(2000)}
	if c.r.IntN(3) == 0 {
		r.Direction = api.DirectionEgress
	}
	switch c.r.IntN(4) {
	case 0:
		r.Protocol = api.ProtocolUDP
		r.PortMax = r.PortMin + c.r.IntN(100)
	case 1:
		r.Protocol, r.PortMin = api.ProtocolICMP, 0
	}
	switch c.r.IntN(4) {
	case 0:
		project, _ := api.SplitKey(g.Key)
		if mine := c.groupsOf(project); len(mine) > 0 {
			r.RemoteGroup = mine[0]
		}
	case 1:
		r.EtherType, r.RemoteCIDR = api.EtherTypeIPv6, fmt.Sprintf("fd%02x::/16", c.r.IntN(256))
	default:
		r.RemoteCIDR = fmt.Sprintf("172.%d.%d.0/24", 16+c.r.IntN(16), c.r.IntN(256))
	}
	g.Rules = append(g.Rules, r)
}

// step makes one random change and says what it was.
func (c *churn) step() string {
	pick := func(n int) int { return c.r.IntN(n) }
	switch pick(9) {
	case 0, 1:
		c.addRule()
		return "rule added"
	case 2:
		g := &c.w.groups[pick(len(c.w.groups))]
		if len(g.Rules) > 0 {
			i := pick(len(g.Rules))
			g.Rules = slices.Delete(slices.Clone(g.Rules), i, i+1)
		}
		return "rule removed from " + g.Key
	case 3:
		g := &c.w.groups[pick(len(c.w.groups))]
		if len(g.Rules) > 0 {
			g.Rules = slices.Clone(g.Rules)
			r := &g.Rules[pick(len(g.Rules))]
			if r.Protocol == api.ProtocolTCP {
				r.PortMin = 1 + pick(2000)
			}
		}
		return "rule changed in " + g.Key
	case 4:
		c.addPort()
		return "port added"
	case 5:
		if len(c.w.ports) > 4 {
			p := c.w.ports[pick(len(c.w.ports))]
			c.w.removePort(p.Key)
			return "port removed: " + p.Key
		}
	case 6:
		p := &c.w.ports[pick(len(c.w.ports))]
		project, _ := api.SplitKey(p.Key)
		p.SecurityGroups = c.groupsOf(project)
		return "groups changed: " + p.Key
	case 7:
		p := &c.w.ports[pick(len(c.w.ports))]
		p.FixedIPs = slices.Clone(p.FixedIPs)
		c.next++
		p.FixedIPs[0].IP = fmt.Sprintf("10.1.%d.%d", 100+c.next/200, c.next%200+2)
		return "readdressed: " + p.Key
	case 8:
		if pick(2) == 0 {
			p := &c.w.ports[pick(len(c.w.ports))]
			p.PortSecurity = !p.PortSecurity
			return "port security toggled: " + p.Key
		}
		g := c.addGroup()
		project, _ := api.SplitKey(g)
		for i := range c.w.ports {
			if strings.HasPrefix(c.w.ports[i].Key, project+"/") {
				c.w.ports[i].SecurityGroups = append(slices.Clone(c.w.ports[i].SecurityGroups), g)
				break
			}
		}
		c.addRule()
		return "group added: " + g
	}
	return "nothing"
}

// tablesDump is every set (with its elements) and chain (with its rules)
// of tables, for comparing two builds.
func tablesDump(tabs []*nftTable) []string {
	var out []string
	for _, t := range tabs {
		for _, s := range t.sets {
			ids := make([]string, 0, len(s.elems))
			for id := range s.elems {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			out = append(out, fmt.Sprintf("%s set %s %s: %s", t.name, s.name, s.def(), strings.Join(ids, " ")))
		}
		for _, c := range t.chains {
			out = append(out, fmt.Sprintf("%s/%d chain %s %s: %s", t.name, t.family, c.name, baseDef(c.base), strings.Join(c.ids(), " ")))
		}
	}
	slices.Sort(out)
	return out
}

// TestIncrementalBuild: after each of a series of random changes, the
// tables built from the parts of the last build are those built from
// nothing, and a change of rules alone reuses the port and network sets.
func TestIncrementalBuild(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		c := newChurn(seed, []string{"192.0.2.1", "192.0.2.2"}, true)
		m := newNFTParts()
		idx := map[string]int{}
		var last []*nftTable
		for i := 0; i < 60; i++ {
			what := c.step()
			d := compile(c.w.state(0))
			if len(d.portErrs) > 0 {
				t.Fatalf("seed %d step %d (%s): ports refused: %v", seed, i, what, d.portErrs)
			}
			inc := hostTables(m, d, idx, 4789)
			scratch := hostTables(newNFTParts(), d, idx, 4789)
			if a, b := tablesDump(inc), tablesDump(scratch); !slices.Equal(a, b) {
				t.Fatalf("seed %d step %d (%s): the incremental build differs from a build from nothing:\n%s", seed, i, what, diffLines(a, b))
			}
			if strings.HasPrefix(what, "rule ") && last != nil && inc[0].sets[1] != last[0].sets[1] {
				t.Fatalf("seed %d step %d (%s): a rule change rebuilt the ports' sets", seed, i, what)
			}
			last = inc
		}
	}
}

func diffLines(a, b []string) string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, "- incremental only: "+l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, "+ from nothing only: "+l)
		}
	}
	if len(out) > 20 {
		out = append(out[:20], "...")
	}
	return strings.Join(out, "\n")
}

// nftListing is the host's tables as nft lists them (JSON), each object
// without its handle, set elements sorted, rules by chain and position,
// the whole sorted: what two hosts with the same rule set list alike.
func nftListing(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	for _, tab := range []string{"bridge " + tableName, "inet " + tableName, "ip " + natTableName} {
		args := append([]string{"netns", "exec", ns, "nft", "-j", "list", "table"}, strings.Fields(tab)...)
		b, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatalf("listing %s: %v", tab, err)
		}
		var doc struct {
			Nftables []map[string]map[string]any `json:"nftables"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("reading the listing of %s: %v", tab, err)
		}
		pos := map[string]int{}
		for _, obj := range doc.Nftables {
			for kind, v := range obj {
				if kind == "metainfo" {
					continue
				}
				delete(v, "handle")
				prefix := kind
				if kind == "rule" {
					chain := fmt.Sprint(v["family"], v["table"], v["chain"])
					prefix = fmt.Sprintf("rule %s #%d", chain, pos[chain])
					pos[chain]++
				}
				if elems, ok := v["elem"].([]any); ok {
					keys := make([]string, len(elems))
					for i, e := range elems {
						eb, _ := json.Marshal(e)
						keys[i] = string(eb)
					}
					slices.Sort(keys)
					v["elem"] = keys
				}
				vb, _ := json.Marshal(v)
				out = append(out, prefix+" "+string(vb))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestIncrementalRuleset: on a real host, a Plane applying a series of
// random changes one after the other leaves in the kernel exactly the
// rule set that a Plane making the same state from nothing makes (the
// two compared as nft lists them).
func TestIncrementalRuleset(t *testing.T) {
	l := newLab(t, 1)
	h := l.hosts[0]
	// IPv4 ports only: the lab's router namespaces take no IPv6 neighbours
	// (the rules still name IPv6 ranges).
	c := newChurn(7, []string{h.underlay, "10.98.0.2"}, false)
	for i := 0; i < 12; i++ {
		what := c.step()
		st := c.w.state(0)
		if _, err := h.plane.Apply(context.Background(), st); err != nil {
			t.Fatalf("step %d (%s): %v", i, what, err)
		}
		inc := nftListing(t, h.name)
		// The same state from nothing: our tables removed, a new Plane.
		for _, tab := range []string{"bridge " + tableName, "inet " + tableName, "ip " + natTableName} {
			run(t, append([]string{"ip", "netns", "exec", h.name, "nft", "delete", "table"}, strings.Fields(tab)...)...)
		}
		fresh := h.newPlane()
		if err := fresh.applyHostNFT(compile(st), &changes{}); err != nil {
			t.Fatalf("step %d (%s): from nothing: %v", i, what, err)
		}
		scratch := nftListing(t, h.name)
		if !slices.Equal(inc, scratch) {
			t.Fatalf("step %d (%s): the rule set made change by change differs from that made from nothing:\n%s", i, what, diffLines(inc, scratch))
		}
		t.Logf("step %d (%s): %d objects alike", i, what, len(inc))
	}
}
