package netplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// A lab is a few hosts, each a network namespace, joined by an underlay
// bridge in a namespace of its own (which also plays the outside world at
// labOutside). A guest is a namespace of its own whose eth0 is joined to a
// port's tap by a copy loop in the test (what QEMU does for a real guest):
// the guest has a real network stack, and busybox's udhcpc, ping, nc and
// arping run in it.

const (
	labUnderlayNet = "10.98.0."
	labOutside     = "10.98.0.254"
)

type lab struct {
	t      *testing.T
	prefix string
	ul     string // the underlay namespace
	hosts  []*labHost
}

type labHost struct {
	lab      *lab
	name     string // namespace
	underlay string
	state    string
	plane    *Plane
}

func needRoot(t *testing.T) {
	t.Helper()
	peer.Root(t, "the dataplane tests' network namespaces")
	for b, pkg := range map[string]string{"ip": "iproute2", "busybox": "busybox-static", "dnsmasq": "dnsmasq-base", "ethtool": "ethtool", "nft": "nftables"} {
		peer.Binary(t, b, "apt-get install "+pkg)
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs a command in a namespace and returns its output and error.
func inNS(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func newLab(t *testing.T, hosts int) *lab {
	t.Helper()
	needRoot(t)
	l := &lab{t: t, prefix: "pvl" + strconv.Itoa(os.Getpid()%10000)}
	l.ul = l.prefix + "-ul"
	l.cleanupNS(l.ul)
	run(t, "ip", "netns", "add", l.ul)
	t.Cleanup(func() { l.cleanupNS(l.ul) })
	run(t, "ip", "-n", l.ul, "link", "add", "ul", "type", "bridge")
	run(t, "ip", "-n", l.ul, "addr", "add", labOutside+"/24", "dev", "ul")
	run(t, "ip", "-n", l.ul, "link", "set", "ul", "up")
	run(t, "ip", "-n", l.ul, "link", "set", "lo", "up")
	for i := 0; i < hosts; i++ {
		h := &labHost{lab: l, name: fmt.Sprintf("%s-h%d", l.prefix, i), underlay: labUnderlayNet + strconv.Itoa(i+1), state: t.TempDir()}
		l.cleanupNS(h.name)
		run(t, "ip", "netns", "add", h.name)
		t.Cleanup(func() { l.cleanupNS(h.name) })
		run(t, "ip", "-n", h.name, "link", "set", "lo", "up")
		// The host's underlay interface is a bridge (br-ext), as on a host
		// whose external network is a provider bridge.
		run(t, "ip", "-n", h.name, "link", "add", "br-ext", "type", "bridge")
		run(t, "ip", "link", "add", "pvlv"+strconv.Itoa(i), "netns", l.ul, "type", "veth", "peer", "name", "ul0", "netns", h.name)
		run(t, "ip", "-n", l.ul, "link", "set", "pvlv"+strconv.Itoa(i), "master", "ul", "up")
		run(t, "ip", "-n", h.name, "link", "set", "ul0", "master", "br-ext", "up")
		run(t, "ip", "-n", h.name, "addr", "add", h.underlay+"/24", "dev", "br-ext")
		run(t, "ip", "-n", h.name, "link", "set", "br-ext", "up")
		h.plane = h.newPlane()
		l.hosts = append(l.hosts, h)
	}
	return l
}

func (h *labHost) newPlane() *Plane {
	t := h.lab.t
	p, err := New(Config{StateDir: h.state, NetNS: "/run/netns/" + h.name, RunDir: filepath.Join(h.state, "run")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// dnsmasq outlives a Plane: end those of this host.
		ents, _ := os.ReadDir(filepath.Join(h.state, "run"))
		for _, e := range ents {
			if pid := p.dhcp.runningPID(e.Name()); pid > 0 {
				p.dhcp.kill(e.Name(), pid)
			}
		}
		ents, _ = os.ReadDir(filepath.Join(h.state, "netns"))
		for _, e := range ents {
			deleteNamedNetns(filepath.Join(h.state, "netns", e.Name()))
		}
		p.Close()
	})
	// RunDir below a test's temp dir must be reachable by dnsmasq's user.
	os.Chmod(filepath.Dir(h.state), 0o755)
	os.Chmod(h.state, 0o755)
	return p
}

func (l *lab) cleanupNS(name string) {
	exec.Command("ip", "netns", "del", name).Run()
}

// apply applies a state on a host and fails the test on an error.
func (h *labHost) apply(st *api.HostNetworkState) Result {
	h.lab.t.Helper()
	res, err := h.plane.Apply(context.Background(), st)
	if err != nil {
		h.lab.t.Fatalf("applying on %s: %v (result %+v)", h.name, err, res)
	}
	return res
}

// guest is a network namespace joined to a port's tap.
type guest struct {
	ns   string
	mac  string
	stop func()
}

// attach makes a guest for the port with the given tap on host h, with
// eth0's MAC set to mac.
func (h *labHost) attach(name, tap, mac string) *guest {
	t := h.lab.t
	t.Helper()
	g := &guest{ns: h.lab.prefix + "-" + name, mac: mac}
	h.lab.cleanupNS(g.ns)
	run(t, "ip", "netns", "add", g.ns)
	peer := "pg" + name
	run(t, "ip", "-n", h.name, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
	run(t, "ip", "-n", g.ns, "link", "set", "eth0", "address", mac)
	run(t, "ip", "-n", g.ns, "link", "set", "eth0", "mtu", "1450")
	// The copy loop reads frames as the guest's veth hands them over: their
	// checksums must be complete, as a NIC's are on the wire.
	run(t, "ip", "netns", "exec", g.ns, "ethtool", "-K", "eth0", "tx", "off")
	run(t, "ip", "-n", g.ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", g.ns, "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", h.name, "sysctl", "-qw", "net.ipv6.conf."+peer+".disable_ipv6=1")
	run(t, "ip", "-n", h.name, "link", "set", peer, "mtu", "1450", "up")
	stop, err := splice(h.name, tap, peer)
	if err != nil {
		t.Fatal(err)
	}
	g.stop = stop
	t.Cleanup(func() {
		stop()
		h.lab.cleanupNS(g.ns)
	})
	return g
}

// splice copies frames between a tap (as QEMU would hold it) and a veth
// end, both in namespace ns, until stop is called.
func splice(ns, tap, veth string) (stop func(), err error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var tapFD, pktFD int
	err = inNetns(h, func() error {
		tapFD, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, _ := unix.NewIfreq(tap)
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(tapFD, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(tapFD)
			return fmt.Errorf("attaching to tap %s: %w", tap, err)
		}
		ifc, err := net.InterfaceByName(veth)
		if err != nil {
			unix.Close(tapFD)
			return err
		}
		pktFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			unix.Close(tapFD)
			return err
		}
		if err := unix.Bind(pktFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
			unix.Close(tapFD)
			unix.Close(pktFD)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // guest -> tap
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := unix.Recvfrom(pktFD, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			unix.Write(tapFD, buf[:n])
		}
	}()
	go func() { // tap -> guest
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := unix.Read(tapFD, buf)
			if err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
					continue
				}
				return
			}
			unix.Write(pktFD, buf[:n])
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			unix.Shutdown(pktFD, unix.SHUT_RDWR)
			unix.Close(pktFD)
			unix.Close(tapFD)
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
		})
	}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udhcpcScript configures eth0 from a lease, as the test guest's does.
const udhcpcScript = `#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	gw=${router%% *}
	[ -n "$gw" ] && ip route replace default via "$gw" dev "$interface"
	echo "lease $ip gw ${gw:-none} mtu ${mtu:-none}"
	;;
esac
exit 0
`

// dhcp runs udhcpc in the guest and returns the address it was given.
func (g *guest) dhcp(t *testing.T) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := inNS(g.ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "5", "-T", "1", "-s", script)
	if err != nil {
		t.Fatalf("dhcp in %s: %v: %s", g.ns, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "lease" {
			return f[1]
		}
	}
	t.Fatalf("dhcp in %s: no lease in %s", g.ns, out)
	return ""
}

// ping tells whether the guest gets an answer from addr within two
// seconds (the first may wait for ARP).
func (g *guest) ping(addr string) bool {
	_, err := inNS(g.ns, "busybox", "ping", "-c", "2", "-i", "0.2", "-w", "2", addr)
	return err == nil
}

// setIP gives eth0 exactly this address, as a guest configuring itself.
func (g *guest) setIP(t *testing.T, cidr, gw string) {
	t.Helper()
	run(t, "ip", "-n", g.ns, "addr", "flush", "dev", "eth0")
	run(t, "ip", "-n", g.ns, "addr", "add", cidr, "dev", "eth0")
	if gw != "" {
		run(t, "ip", "-n", g.ns, "route", "replace", "default", "via", gw, "dev", "eth0")
	}
}

// listen starts a TCP server on port that answers each connection with
// "hello from <name>" and returns a stop function.
func (g *guest) listen(t *testing.T, port int, name string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", g.ns, "busybox", "nc", "-ll", "-p", strconv.Itoa(port), "-e", "busybox", "echo", "hello from "+name)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(100 * time.Millisecond)
}

// listenEcho starts a TCP server on port that echoes what it gets.
func (g *guest) listenEcho(t *testing.T, port int) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", g.ns, "busybox", "nc", "-ll", "-p", strconv.Itoa(port), "-e", "busybox", "cat")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(100 * time.Millisecond)
}

// connect connects to addr:port and returns what the server said, or "".
func (g *guest) connect(addr string, port int) string {
	out, err := inNS(g.ns, "busybox", "nc", "-w", "1", addr, strconv.Itoa(port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// sendARPReply sends, from the guest's eth0, an ARP reply saying that
// addr is at the guest's MAC, to the guest with MAC toMAC and address toIP.
func (g *guest) sendARPReply(t *testing.T, addr, toMAC, toIP string) {
	t.Helper()
	h, err := netns.GetFromName(g.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	src, _ := net.ParseMAC(g.mac)
	dst, _ := net.ParseMAC(toMAC)
	f := append(append(append([]byte{}, dst...), src...), 0x08, 0x06)
	f = append(f, 0, 1, 8, 0, 6, 4, 0, 2)
	f = append(append(f, src...), net.ParseIP(addr).To4()...)
	f = append(append(f, dst...), net.ParseIP(toIP).To4()...)
	err = inNetns(h, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6, Addr: [8]byte{dst[0], dst[1], dst[2], dst[3], dst[4], dst[5]}})
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
}

// routerAdvert is an ICMPv6 router advertisement (type 134): hop limit 64,
// a router lifetime of 1800 s, no options.
var routerAdvert = []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}

// raSocket opens a raw ICMPv6 socket in the guest's namespace.
func (g *guest) raSocket(t *testing.T) int {
	t.Helper()
	h, err := netns.GetFromName(g.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var fd int
	if err := inNetns(h, func() error {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		return err
	}); err != nil {
		t.Fatalf("opening an ICMPv6 socket in %s: %v", g.ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// sendRA sends a router advertisement to all nodes from the guest's eth0,
// as a router would (hop limit 255).
func (g *guest) sendRA(t *testing.T) {
	t.Helper()
	// A router speaks from its link-local address (setIP flushes it).
	mac, _ := net.ParseMAC(g.mac)
	run(t, "ip", "-n", g.ns, "-6", "addr", "replace", linkLocal(mac).String()+"/64", "dev", "eth0", "nodad")
	fd := g.raSocket(t)
	h, err := netns.GetFromName(g.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var idx int
	inNetns(h, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			idx = ifc.Index
		}
		return err
	})
	unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255)
	unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, idx)
	to := &unix.SockaddrInet6{ZoneId: uint32(idx), Addr: [16]byte{0xff, 0x02, 15: 1}}
	for i := 0; i < 3; i++ {
		if err := unix.Sendto(fd, routerAdvert, 0, to); err != nil {
			t.Fatalf("%s sending a router advertisement: %v", g.ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hearsRA tells whether a router advertisement reaches the guest on fd (a
// raSocket) within d.
func (g *guest) hearsRA(fd int, d time.Duration) bool {
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 1500)
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == nil && n >= 1 && buf[0] == 134 {
			return true
		}
	}
	return false
}
