package netplane

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// benchState is one host's state with ports local ports spread over 10
// overlay networks (as many again on another host), and groups security
// groups sharing rules rules in all: nine in ten name a remote CIDR and
// a port range, one in ten a remote group.
func benchState(ports, rules, groups int) *api.HostNetworkState {
	w := &world{underlays: []string{"192.0.2.1", "192.0.2.2"}}
	const nets = 10
	for n := 0; n < nets; n++ {
		w.net(api.HostNetwork{Key: fmt.Sprintf("p%d/net", n), ID: fmt.Sprintf("00000n%04d", n), Type: api.NetworkOverlay, VNI: 1000 + n, NAT: n%2 == 0,
			Subnets: []api.Subnet{subnet(fmt.Sprintf("p%d", n), "v4", "net", "10.1.0.0/16")}})
	}
	for g := 0; g < groups; g++ {
		hg := api.HostSecurityGroup{Key: fmt.Sprintf("p%d/g%d", g%nets, g), ID: fmt.Sprintf("00000g%04d", g)}
		for r := 0; r < rules/groups; r++ {
			rule := api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 1000 + r, PortMax: 1000 + r}
			if r%10 == 0 {
				rule.RemoteGroup = fmt.Sprintf("p%d/g%d", (g+1)%groups%nets, (g+1)%groups)
			} else {
				rule.RemoteCIDR = fmt.Sprintf("172.%d.%d.0/24", 16+r%16, r/16%256)
			}
			if r%7 == 0 {
				rule.Direction = api.DirectionEgress
			}
			hg.Rules = append(hg.Rules, rule)
		}
		w.group(hg)
	}
	for i := 0; i < 2*ports; i++ {
		n := i % nets
		host := i / nets % 2
		p := hostPort(fmt.Sprintf("p%d", n), fmt.Sprintf("port%d", i), fmt.Sprintf("0000p%05d", i), fmt.Sprintf("p%d/net", n),
			fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&255, i>>8&255, i&255), fmt.Sprintf("10.1.%d.%d", i/250, i%250+2),
			fmt.Sprintf("p%d/g%d", n, n%groups))
		w.port(host, p)
	}
	return w.state(0)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestScale applies 1,000 ports and 10,000 security group rules on one
// host from scratch, then one rule change, and reports the times, the
// objects made and the CPU used (docs/BENCHMARKS.md). It runs when
// POLYVISOR_NETPLANE_BENCH=1.
func TestScale(t *testing.T) {
	if os.Getenv("POLYVISOR_NETPLANE_BENCH") == "" {
		t.Skip("set POLYVISOR_NETPLANE_BENCH=1 to measure the dataplane at scale")
	}
	l := newLab(t, 1)
	h := l.hosts[0]
	st := benchState(1000, 10000, 10)
	st.Underlay = h.underlay
	runtime.GC()
	cpu0, start := cpuTime(), time.Now()
	res, err := h.plane.Apply(context.Background(), st)
	scratch, scratchCPU := time.Since(start), cpuTime()-cpu0
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Active) != 1000 {
		t.Fatalf("active %d, errors %v", len(res.Active), res.Errors)
	}
	objects := countNFT(t, h)
	// One rule added to one group.
	st.Revision++
	st.SecurityGroups[3].Rules = append(st.SecurityGroups[3].Rules, api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolUDP, PortMin: 53, RemoteCIDR: "198.51.100.0/24"})
	cpu0, start = cpuTime(), time.Now()
	res, err = h.plane.Apply(context.Background(), st)
	one, oneCPU := time.Since(start), cpuTime()-cpu0
	if err != nil {
		t.Fatal(err)
	}
	// Twenty more one-rule changes, each to another group: a rule's port
	// changed, a rule removed, a rule added back.
	var walls []time.Duration
	cpu0 = cpuTime()
	for i := 0; i < 20; i++ {
		g := &st.SecurityGroups[i%10]
		switch i % 3 {
		case 0:
			g.Rules[1].PortMin, g.Rules[1].PortMax = 2000+i, 2000+i
		case 1:
			g.Rules = g.Rules[:len(g.Rules)-1]
		case 2:
			g.Rules = append(g.Rules, api.SecurityGroupRule{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 3000 + i, RemoteCIDR: "198.51.100.0/24"})
		}
		st.Revision++
		start = time.Now()
		r, err := h.plane.Apply(context.Background(), st)
		walls = append(walls, time.Since(start))
		if err != nil || r.Changed == 0 {
			t.Fatalf("change %d: %v, %d changes", i, err, r.Changed)
		}
	}
	manyCPU := (cpuTime() - cpu0) / 20
	slices.Sort(walls)
	// The same state again: nothing changes.
	if f := os.Getenv("POLYVISOR_NETPLANE_PROFILE"); f != "" {
		pf, _ := os.Create(f)
		pprof.StartCPUProfile(pf)
		for i := 0; i < 10; i++ {
			st.SecurityGroups[3].Rules[len(st.SecurityGroups[3].Rules)-1].PortMin = 100 + i
			h.plane.Apply(context.Background(), st)
		}
		pprof.StopCPUProfile()
		pf.Close()
	}
	cpu0, start = cpuTime(), time.Now()
	res2, _ := h.plane.Apply(context.Background(), st)
	same, sameCPU := time.Since(start), cpuTime()-cpu0
	// A restarted agent: everything read back from the kernel.
	h.plane = h.newPlane()
	cpu0, start = cpuTime(), time.Now()
	res3, _ := h.plane.Apply(context.Background(), st)
	restart, restartCPU := time.Since(start), cpuTime()-cpu0
	t.Logf("from scratch: %s (cpu %s), %d changes", scratch.Round(time.Millisecond), scratchCPU.Round(time.Millisecond), 0)
	t.Logf("nftables objects: %s", objects)
	t.Logf("one rule added: %s (cpu %s), changes %v", one.Round(time.Microsecond), oneCPU.Round(time.Microsecond), res.Changes)
	t.Logf("20 more one-rule changes: median %s, max %s (cpu %s each on average)", walls[10].Round(time.Microsecond), walls[19].Round(time.Microsecond), manyCPU.Round(time.Microsecond))
	t.Logf("same state again: %s (cpu %s), %d changes", same.Round(time.Microsecond), sameCPU.Round(time.Microsecond), res2.Changed)
	t.Logf("after a restart: %s (cpu %s), %d changes %v", restart.Round(time.Millisecond), restartCPU.Round(time.Millisecond), res3.Changed, res3.Changes)
}

func countNFT(t *testing.T, h *labHost) string {
	out := run(t, "ip", "netns", "exec", h.name, "nft", "-a", "list", "ruleset")
	var chains, rules, sets, elems int
	inSet := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "chain "):
			chains++
		case strings.HasPrefix(line, "set ") || strings.HasPrefix(line, "map "):
			sets++
			inSet = true
		case inSet && strings.HasPrefix(line, "}"):
			inSet = false
		case inSet && strings.Contains(line, "elements = {"):
			elems += strings.Count(line, ",") + 1
		case inSet && !strings.HasPrefix(line, "type") && !strings.HasPrefix(line, "flags"):
			elems += strings.Count(line, ",")
		case !inSet && strings.Contains(line, "# handle") && !strings.HasPrefix(line, "table"):
			rules++
		}
	}
	return fmt.Sprintf("%d sets/maps, ~%d elements, %d chains, %d rules", sets, elems, chains, rules)
}
