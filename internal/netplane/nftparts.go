package netplane

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"

	"github.com/polyvisor/polyvisor/api"
)

// The host's tables are built from parts: the sets made from the ports,
// those made from the networks, and each security group's sets and
// chains. Each part is fingerprinted from what it is made of, and a part
// whose fingerprint has not changed since the last build is the very same
// object again: syncTable skips a set that is the one it last applied
// without comparing a single element. A change of one rule thus rebuilds
// one group's part and diffs its sets only, whatever the size of the host.
//
// A part is only reused by pointer, never mutated after it is built, and
// syncTable trusts a pointer only when it comes from what the last
// successful transaction made (the cache in nft.go); after a start or a
// failure the kernel is read and diffed element by element as before.

// nftPart is one part of the host's tables.
type nftPart struct {
	fp     [32]byte
	sets   []*nftSet
	chains []*nftChain
	// remotes are the keys of the groups a group's rules name as remotes.
	remotes []string
}

// nftParts memoizes the parts of the last build, by name.
type nftParts struct {
	parts map[string]*nftPart
	used  map[string]bool
}

func newNFTParts() *nftParts { return &nftParts{parts: map[string]*nftPart{}} }

// begin starts a build; end drops the parts it did not use.
func (m *nftParts) begin() { m.used = map[string]bool{} }

func (m *nftParts) end() {
	for name := range m.parts {
		if !m.used[name] {
			delete(m.parts, name)
		}
	}
	m.used = nil
}

// part returns the part named name made from what fp fingerprints: the
// last one if fp is the same, else a new one from build.
func (m *nftParts) part(name string, fp [32]byte, build func() *nftPart) *nftPart {
	if m.used != nil {
		m.used[name] = true
	}
	if p := m.parts[name]; p != nil && p.fp == fp {
		return p
	}
	p := build()
	p.fp = fp
	m.parts[name] = p
	return p
}

// fpWriter fingerprints a part's inputs: every field written with its
// length, so that no two inputs write the same bytes, hashed at the end.
type fpWriter struct {
	h hash.Hash
	b []byte // bytes not yet hashed
}

func newFP() *fpWriter { return &fpWriter{h: sha256.New(), b: make([]byte, 0, 8192)} }

// flush hashes what is buffered once the buffer is half full.
func (w *fpWriter) flush() {
	if len(w.b) >= 4096 {
		w.h.Write(w.b)
		w.b = w.b[:0]
	}
}

func (w *fpWriter) str(s string) *fpWriter {
	w.int(len(s))
	w.b = append(w.b, s...)
	w.flush()
	return w
}

func (w *fpWriter) bytes(b []byte) *fpWriter {
	w.int(len(b))
	w.b = append(w.b, b...)
	w.flush()
	return w
}

func (w *fpWriter) int(n int) *fpWriter {
	w.b = binary.LittleEndian.AppendUint64(w.b, uint64(n))
	return w
}

func (w *fpWriter) bool(v bool) *fpWriter {
	if v {
		return w.int(1)
	}
	return w.int(0)
}

func (w *fpWriter) addrs(as []netip.Addr) *fpWriter {
	w.int(len(as))
	for _, a := range as {
		w.bytes(a.AsSlice())
	}
	return w
}

func (w *fpWriter) sum() [32]byte {
	w.h.Write(w.b)
	var out [32]byte
	copy(out[:], w.h.Sum(nil))
	return out
}

// fpSecurePorts fingerprints what the port sets are made of: each secured
// port's tap, bridge, MAC, addresses and groups (by id, as they name
// chains).
func fpSecurePorts(d *desired) [32]byte {
	w := newFP()
	for _, p := range sortedPorts(d) {
		if !p.secure {
			continue
		}
		w.str(p.key).str(p.tap).str(p.net.bridge).bytes(p.mac).addrs(p.ips)
		w.int(len(p.groups))
		for _, g := range p.groups {
			w.str(g).str(d.groups[g].id)
		}
	}
	return w.sum()
}

// fpNetworks fingerprints what the network sets are made of: bridges,
// their conntrack zones and the other hosts' underlay addresses.
func fpNetworks(d *desired, bridgeIndex map[string]int) [32]byte {
	w := newFP()
	for _, n := range sortedNets(d) {
		w.str(n.key).str(n.bridge).bool(n.overlay).int(len(n.ports)).int(bridgeIndex[n.bridge])
		w.int(len(n.remotes))
		for _, r := range n.remotes {
			w.bytes(r.underlay.AsSlice())
		}
	}
	return w.sum()
}

// fpGroup fingerprints a group's rules, with the ids of the groups they
// name as remotes (or their absence).
func fpGroup(g *dGroup, d *desired) [32]byte {
	w := newFP().str(g.key).str(g.id).int(len(g.rules))
	for _, r := range g.rules {
		w.bool(r.ingress).bool(r.v6).int(int(r.protoLo)).int(int(r.protoHi)).int(int(r.portLo)).int(int(r.portHi))
		w.bytes(r.cidr.Addr().AsSlice()).int(r.cidr.Bits()).str(r.remote)
		if r.remote != "" {
			if rg := d.groups[r.remote]; rg != nil {
				w.bool(true).str(rg.id)
			} else {
				w.bool(false)
			}
		}
	}
	return w.sum()
}

// fpMembers fingerprints a group's member addresses.
func fpMembers(g *dGroup) [32]byte {
	return newFP().str(g.id).addrs(g.members4).addrs(g.members6).sum()
}

// The parts of a HostNetworkState are fingerprinted field by field (a JSON
// encoding of a host's thousands of rules and ports cost more than all
// the rest of a rule change); TestStateFingerprints holds these functions
// to every field of their types.

func (w *fpWriter) strs(ss []string) *fpWriter {
	w.int(len(ss))
	for _, s := range ss {
		w.str(s)
	}
	return w
}

func fpPorts(ps []api.HostPort) [32]byte {
	w := newFP().int(len(ps))
	for _, p := range ps {
		w.str(p.Key).str(p.ID).str(p.Network).str(p.MAC).int(len(p.FixedIPs))
		for _, f := range p.FixedIPs {
			w.str(f.Subnet).str(f.IP)
		}
		w.strs(p.SecurityGroups).bool(p.PortSecurity).str(p.VM).int(p.NIC)
	}
	return w.sum()
}

func fpRemote(rs []api.RemotePort) [32]byte {
	w := newFP().int(len(rs))
	for _, r := range rs {
		w.str(r.Network).str(r.MAC).strs(r.IPs).str(r.Underlay).str(r.Port).str(r.VM)
	}
	return w.sum()
}

func fpGroups(gs []api.HostSecurityGroup) [32]byte {
	w := newFP().int(len(gs))
	for _, g := range gs {
		w.str(g.Key).str(g.ID).int(len(g.Rules))
		for _, r := range g.Rules {
			w.str(r.ID).str(r.Direction).str(r.EtherType).str(r.Protocol).int(r.PortMin).int(r.PortMax).str(r.RemoteCIDR).str(r.RemoteGroup)
		}
		w.strs(g.Members)
	}
	return w.sum()
}

func fpFloatingIPs(fs []api.HostFloatingIP) [32]byte {
	w := newFP().int(len(fs))
	for _, f := range fs {
		w.str(f.Address).str(f.Network).str(f.Port).str(f.FixedIP)
	}
	return w.sum()
}
