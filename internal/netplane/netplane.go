// Package netplane makes a host's network dataplane match the part of the
// network state the server sends it (api.HostNetworkState): a Linux bridge
// per network, a VXLAN device per overlay network with static forwarding
// and neighbour entries for the network's ports on other hosts (no
// learning, no flooding), a tap per port for QEMU, a router namespace per
// overlay network holding its distributed gateway (the same address and MAC
// on every host), DHCP and DNS (dnsmasq), outbound NAT and floating IPs,
// and nftables rules for anti-spoofing and security groups.
//
// Apply is declarative and idempotent: it reads what exists, changes only
// what differs and removes what it made that is no longer wanted, so an
// agent that restarts re-applies the state without disturbing traffic.
// Everything it makes carries a prefix of its own (see names.go); nothing
// else on the host is touched. docs/NETWORKING.md draws the result.
package netplane

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/polyvisor/polyvisor/api"
)

// Config configures a Plane.
type Config struct {
	// StateDir holds the router namespaces' files (StateDir/netns) and
	// each network's DHCP files (StateDir/dhcp/<id>).
	StateDir string
	// NetNS is the path of the network namespace the host's dataplane is
	// made in; empty for the agent's own.
	NetNS string
	// RunDir holds each network's dnsmasq files, readable by the user
	// dnsmasq drops to; default /run/polyvisor-net/<hash of StateDir>.
	RunDir string
	// Dnsmasq is the dnsmasq binary; default dnsmasq found on PATH.
	Dnsmasq string
	// DnsmasqUser is the user dnsmasq drops to; default "nobody".
	DnsmasqUser string
	// VXLANPort is the UDP port of VXLAN; default 4789.
	VXLANPort int
	Logger    *slog.Logger
}

// Plane makes one host's dataplane. Apply calls are serialized.
type Plane struct {
	cfg         Config
	log         *slog.Logger
	host        netns.NsHandle // the host's namespace
	nl          *netlink.Handle
	mu          sync.Mutex
	nft         *nftCache // what Apply last made in nftables, per namespace
	parts       *nftParts // the parts of the host's tables last built
	dhcp        *dhcpManager
	snap        map[string]netlink.Link // the host's devices during an Apply
	bridgeIndex map[string]int          // network bridges' indexes, as last made
	phases      phases
	// proxies are the floating IPs this host answers ARP for, with the
	// bridge they are answered on.
	proxies map[string]string
	close   sync.Once
}

// New opens the host's namespace; Apply makes the dataplane.
func New(cfg Config) (*Plane, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("configuring the network dataplane: no state dir")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = 4789
	}
	if cfg.DnsmasqUser == "" {
		cfg.DnsmasqUser = "nobody"
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "netns"), filepath.Join(cfg.StateDir, "dhcp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("making network state dir: %w", err)
		}
	}
	var host netns.NsHandle
	var err error
	if cfg.NetNS == "" {
		host, err = netns.Get()
	} else {
		host, err = netns.GetFromPath(cfg.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the host's network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(host)
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	p := &Plane{cfg: cfg, log: cfg.Logger, host: host, nl: h, nft: newNFTCache(), parts: newNFTParts(), phases: phases{}}
	p.dhcp = newDHCPManager(p)
	return p, nil
}

// Close releases the Plane's handles. What it made stays.
func (p *Plane) Close() {
	p.close.Do(func() {
		p.nl.Close()
		p.host.Close()
	})
}

// Result is what one Apply made.
type Result struct {
	// Revision is the state's revision.
	Revision int64
	// Active are the keys of the ports whose dataplane is made, sorted.
	Active []string
	// Errors says, by port key, why a port of the state is not made.
	Errors map[string]string
	// Changes lists what Apply changed on the host (at most maxChanges
	// entries; Changed counts them all). An Apply of a state the host
	// already matches changes nothing.
	Changes []string
	Changed int
	// Took is how long Apply ran.
	Took time.Duration
}

const maxChanges = 200

// changes records what an Apply changes.
type changes struct {
	list []string
	n    int
}

func (c *changes) add(format string, args ...any) {
	c.n++
	if len(c.list) < maxChanges {
		c.list = append(c.list, fmt.Sprintf(format, args...))
	}
}

// Apply makes the host's dataplane match st. It does what it can: a
// network or port that cannot be made is reported in the Result (the rest
// is made), and the error tells what failed on the host as a whole.
//
// Apply works in three phases, each skipped when its part of the state is
// what the Plane last made without error: the devices, router namespaces
// and forwarding entries; the host's nftables rules; DHCP. A security
// group's rule change thus costs one nftables transaction. Resync makes
// the next Apply read everything back from the host and mend it.
func (p *Plane) Apply(ctx context.Context, st *api.HostNetworkState) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	if st == nil {
		st = &api.HostNetworkState{}
	}
	d := compile(st)
	res := Result{Revision: st.Revision, Errors: map[string]string{}}
	ch := &changes{}
	var errs []error
	for k, why := range d.portErrs {
		res.Errors[k] = why
	}
	for k, why := range d.netErrs {
		p.log.Warn("network cannot be made on this host", "network", k, "why", why)
	}
	// Each part of the state is fingerprinted once; a phase's fingerprint
	// is made of those of the parts it reads.
	underlayFP, networksFP, portsFP := fingerprint(st.Underlay), fingerprint(st.Networks), fpPorts(st.Ports)
	remoteFP, groupsFP, fipsFP := fpRemote(st.Remote), fpGroups(st.SecurityGroups), fpFloatingIPs(st.FloatingIPs)
	netFP := combineFP(underlayFP, networksFP, portsFP, remoteFP, fipsFP)
	nftFP := combineFP(underlayFP, networksFP, portsFP, remoteFP, groupsFP)
	dhcpFP := combineFP(networksFP, portsFP, remoteFP)
	var routers *routerSet
	if !p.phases.same("net", netFP) || !p.phases.same("dhcp", dhcpFP) {
		var err error
		routers, err = p.applyRouterNamespaces(d, ch)
		if err != nil {
			errs = append(errs, err)
		}
		defer routers.close()
	}
	if !p.phases.same("net", netFP) {
		portErrs, err := p.applyNet(d, routers, ch)
		p.phases.done("net", netFP, portErrs, err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !p.phases.same("nft", nftFP) {
		portErrs := map[string]string{}
		err := p.applyHostNFT(d, ch)
		if err != nil {
			for k := range d.ports {
				portErrs[k] = err.Error()
			}
		}
		p.phases.done("nft", nftFP, portErrs, err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !p.phases.same("dhcp", dhcpFP) {
		err := p.dhcp.apply(ctx, d, routers, ch)
		if err == nil {
			err = routers.removeStale(ch)
		}
		p.phases.done("dhcp", dhcpFP, nil, err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, ph := range []string{"net", "nft"} {
		for k, why := range p.phases.portErrs(ph) {
			if _, ok := res.Errors[k]; !ok && d.ports[k] != nil {
				res.Errors[k] = why
			}
		}
	}
	for k := range d.ports {
		if _, bad := res.Errors[k]; !bad {
			res.Active = append(res.Active, k)
		}
	}
	slices.Sort(res.Active)
	res.Changes, res.Changed = ch.list, ch.n
	res.Took = time.Since(start)
	return res, errors.Join(errs...)
}

// applyNet makes the devices, router namespaces, forwarding entries and
// floating IPs' routes; it returns why ports could not be made.
func (p *Plane) applyNet(d *desired, routers *routerSet, ch *changes) (map[string]string, error) {
	portErrs := map[string]string{}
	var errs []error
	fail := func(port string, err error) {
		if _, ok := portErrs[port]; !ok {
			portErrs[port] = err.Error()
		}
	}
	netFail := func(n *dNet, err error) {
		errs = append(errs, err)
		for _, pt := range n.ports {
			fail(pt.key, err)
		}
	}
	if err := p.snapshot(); err != nil {
		return portErrs, err
	}
	defer func() { p.snap = nil }()
	if err := p.hostSettings(d, ch); err != nil {
		errs = append(errs, err)
	}
	for _, n := range sortedNets(d) {
		if err := p.applyNetworkLinks(n, routers, ch); err != nil {
			netFail(n, err)
			continue
		}
		if n.router() {
			if err := p.applyRouter(n, routers.get(n.id), d, ch); err != nil {
				netFail(n, err)
				continue
			}
		}
		if n.overlay {
			if err := p.applyForwarding(n, ch); err != nil {
				netFail(n, err)
			}
		}
	}
	for _, pt := range sortedPorts(d) {
		if _, bad := portErrs[pt.key]; bad {
			continue
		}
		if err := p.applyTap(pt, ch); err != nil {
			fail(pt.key, err)
		}
	}
	if err := p.removeStaleLinks(d, ch); err != nil {
		errs = append(errs, err)
	}
	if err := p.applyHostFloatingIPs(d, ch); err != nil {
		errs = append(errs, err)
		for _, f := range d.fips {
			fail(f.port.key, err)
		}
	}
	p.bridgeIndex = map[string]int{}
	for _, n := range d.networks {
		if l, err := p.linkByName(n.bridge); err == nil {
			p.bridgeIndex[n.bridge] = l.Attrs().Index
		}
	}
	return portErrs, errors.Join(errs...)
}

// Resync makes the next Apply read the whole dataplane back from the host
// and mend what differs, as after a start.
func (p *Plane) Resync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases = phases{}
	p.parts = newNFTParts()
	p.nft.mu.Lock()
	p.nft.tables = map[string]map[string]*nftTable{}
	p.nft.mu.Unlock()
}

// phases remembers, per phase of Apply, the fingerprint of the part of the
// state it last made without error, and the ports it could not make.
type phases map[string]phase

type phase struct {
	fp       [32]byte
	portErrs map[string]string
}

func (ph phases) same(name string, fp [32]byte) bool {
	x, ok := ph[name]
	return ok && x.fp == fp
}

func (ph phases) done(name string, fp [32]byte, portErrs map[string]string, err error) {
	if err != nil {
		delete(ph, name)
		ph[name+"/errs"] = phase{portErrs: portErrs}
		return
	}
	delete(ph, name+"/errs")
	ph[name] = phase{fp: fp, portErrs: portErrs}
}

func (ph phases) portErrs(name string) map[string]string {
	if x, ok := ph[name]; ok {
		return x.portErrs
	}
	return ph[name+"/errs"].portErrs
}

// fingerprint hashes a part of a state (or the fingerprints of parts).
func fingerprint(part any) [32]byte {
	b, _ := json.Marshal(part)
	return sha256.Sum256(b)
}

// combineFP hashes fingerprints together.
func combineFP(fps ...[32]byte) [32]byte {
	h := sha256.New()
	for _, fp := range fps {
		h.Write(fp[:])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func sortedNets(d *desired) []*dNet {
	out := make([]*dNet, 0, len(d.networks))
	for _, n := range d.networks {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *dNet) int { return cmpStr(a.key, b.key) })
	return out
}

func sortedPorts(d *desired) []*dPort {
	out := make([]*dPort, 0, len(d.ports))
	for _, pt := range d.ports {
		out = append(out, pt)
	}
	slices.SortFunc(out, func(a, b *dPort) int { return cmpStr(a.key, b.key) })
	return out
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
