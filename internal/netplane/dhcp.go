package netplane

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DHCP and DNS for an overlay network's guests come from dnsmasq (Debian's
// dnsmasq-base, as libvirt, OpenStack and Proxmox use it), one per network
// per host, in the network's router namespace on its gateway device. It
// answers only the ports it is told of (static ranges: no address is ever
// handed out that the server's IPAM did not allocate), hands each its
// fixed address, the gateway, DNS servers, the MTU and static routes, and
// answers the network's VM names in DNS. It outlives the agent: a
// restarted agent finds it by its pid file and leaves it alone. Changed
// ports are reloaded with SIGHUP; a port removed restarts it without the
// port's lease.

// dhcpManager runs the dnsmasq of each network.
type dhcpManager struct {
	p   *Plane
	dir string // one directory per network, readable by dnsmasq's user
}

func newDHCPManager(p *Plane) *dhcpManager {
	dir := p.cfg.RunDir
	if dir == "" {
		sum := sha256.Sum256([]byte(p.cfg.StateDir))
		dir = filepath.Join("/run/polyvisor-net", hex.EncodeToString(sum[:6]))
	}
	return &dhcpManager{p: p, dir: dir}
}

func (m *dhcpManager) netDir(id string) string { return filepath.Join(m.dir, id) }
func (m *dhcpManager) pidFile(id string) string {
	return filepath.Join(m.netDir(id), "dnsmasq.pid")
}

// LeaseFile is where the dnsmasq of the network with the given id keeps
// its leases (for tests and people).
func (p *Plane) LeaseFile(netID string) string {
	return filepath.Join(p.dhcp.netDir(shortID(netID)), "leases")
}

// dhcpWanted tells whether a network runs dnsmasq here.
func dhcpWanted(n *dNet) bool {
	if !n.router() {
		return false
	}
	return slices.ContainsFunc(n.subnets, func(s *dSubnet) bool { return s.dhcp })
}

// apply makes each network's dnsmasq serve its ports, and stops those of
// networks gone.
func (m *dhcpManager) apply(ctx context.Context, d *desired, routers *routerSet, ch *changes) error {
	var errs []error
	want := map[string]bool{}
	for _, n := range sortedNets(d) {
		if !dhcpWanted(n) {
			continue
		}
		r := routers.get(n.id)
		if r == nil {
			continue
		}
		want[n.id] = true
		if err := m.applyNet(n, r, ch); err != nil {
			errs = append(errs, fmt.Errorf("network %s: dhcp: %w", n.key, err))
		}
	}
	ents, _ := os.ReadDir(m.dir)
	for _, e := range ents {
		if e.IsDir() && !want[e.Name()] {
			m.stop(e.Name(), ch)
		}
	}
	return errors.Join(errs...)
}

func (m *dhcpManager) applyNet(n *dNet, r *router, ch *changes) error {
	dir := m.netDir(n.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	os.Chmod(m.dir, 0o755)
	os.Chmod(filepath.Dir(m.dir), 0o755)
	hosts, names := dhcpHosts(n)
	args := m.args(n)
	hostsChanged, err := writeIfChanged(filepath.Join(dir, "hosts"), hosts)
	if err != nil {
		return err
	}
	namesChanged, err := writeIfChanged(filepath.Join(dir, "names"), names)
	if err != nil {
		return err
	}
	argsChanged, err := writeIfChanged(filepath.Join(dir, "args"), []byte(strings.Join(args, "\n")+"\n"))
	if err != nil {
		return err
	}
	gone := removedMACs(filepath.Join(dir, "leases"), n)
	pid := m.runningPID(n.id)
	if pid > 0 && !inNamespace(pid, r) {
		argsChanged = true // a dnsmasq of a router namespace made again
	}
	switch {
	case pid > 0 && !argsChanged && len(gone) == 0:
		if hostsChanged || namesChanged {
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				return fmt.Errorf("reloading dnsmasq %d: %w", pid, err)
			}
			ch.add("dhcp %s: reloaded", n.id)
		}
		return nil
	case pid > 0:
		m.kill(n.id, pid)
	}
	if err := dropLeases(filepath.Join(dir, "leases"), gone); err != nil {
		return err
	}
	if err := m.start(n, r, args); err != nil {
		return err
	}
	ch.add("dhcp %s: started dnsmasq", n.id)
	return nil
}

// args is dnsmasq's command line for a network.
func (m *dhcpManager) args(n *dNet) []string {
	dir := m.netDir(n.id)
	a := []string{
		"--conf-file=/dev/null",
		"--pid-file=" + m.pidFile(n.id),
		"--user=" + m.p.cfg.DnsmasqUser,
		"--interface=" + routerGW,
		"--except-interface=lo",
		"--bind-interfaces",
		"--no-hosts",
		"--domain-needed",
		"--bogus-priv",
		"--dhcp-authoritative",
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"),
		"--dhcp-hostsfile=" + filepath.Join(dir, "hosts"),
		"--addn-hosts=" + filepath.Join(dir, "names"),
		"--log-facility=" + filepath.Join(dir, "dnsmasq.log"),
	}
	ra := false
	for i, s := range n.subnets {
		if !s.dhcp {
			continue
		}
		tag := "s" + strconv.Itoa(i)
		if s.prefix.Addr().Is4() {
			a = append(a, fmt.Sprintf("--dhcp-range=set:%s,%s,static,%s,12h", tag, s.prefix.Addr(), net.IP(net.CIDRMask(s.prefix.Bits(), 32))))
			a = append(a, fmt.Sprintf("--dhcp-option=tag:%s,option:router,%s", tag, s.gateway))
			a = append(a, fmt.Sprintf("--dhcp-option=tag:%s,option:mtu,%d", tag, n.mtu))
			dns := []string{s.gateway.String()}
			if len(s.dns) > 0 {
				dns = nil
				for _, x := range s.dns {
					if x.Is4() {
						dns = append(dns, x.String())
					}
				}
			}
			if len(dns) > 0 {
				a = append(a, fmt.Sprintf("--dhcp-option=tag:%s,option:dns-server,%s", tag, strings.Join(dns, ",")))
			}
			if len(s.routes) > 0 {
				// With classless routes a client ignores the router
				// option: the default route goes with them.
				var rs []string
				for _, r := range s.routes {
					if r.dst.Addr().Is4() {
						rs = append(rs, r.dst.String(), r.nextHop.String())
					}
				}
				rs = append(rs, "0.0.0.0/0", s.gateway.String())
				a = append(a, fmt.Sprintf("--dhcp-option=tag:%s,option:classless-static-route,%s", tag, strings.Join(rs, ",")))
			}
		} else {
			ra = true
			a = append(a, fmt.Sprintf("--dhcp-range=set:%s,%s,static,%d,12h", tag, s.prefix.Addr(), s.prefix.Bits()))
			if len(s.dns) > 0 {
				var dns []string
				for _, x := range s.dns {
					if x.Is6() {
						dns = append(dns, "["+x.String()+"]")
					}
				}
				if len(dns) > 0 {
					a = append(a, fmt.Sprintf("--dhcp-option=tag:%s,option6:dns-server,%s", tag, strings.Join(dns, ",")))
				}
			}
		}
	}
	if ra {
		a = append(a, "--enable-ra")
	}
	return a
}

// dhcpHosts are a network's dhcp-hostsfile (MAC, addresses, name per
// port) and DNS names file (address and name per port, here and on other
// hosts).
func dhcpHosts(n *dNet) (hosts, names []byte) {
	var hb, nb bytes.Buffer
	named := map[string]bool{}
	for _, p := range n.ports {
		line := p.mac.String()
		v4 := false
		for _, a := range p.ips {
			switch {
			case a.Is4() && !v4:
				line += "," + a.String()
				v4 = true
			case a.Is6():
				line += ",[" + a.String() + "]"
			}
		}
		if p.hostname != "" && !named[p.hostname] {
			line += "," + p.hostname
			named[p.hostname] = true
			for _, a := range p.ips {
				fmt.Fprintf(&nb, "%s %s\n", a, p.hostname)
			}
		}
		hb.WriteString(line + "\n")
	}
	for _, r := range n.remotes {
		if r.hostname == "" || named[r.hostname] {
			continue
		}
		named[r.hostname] = true
		for _, a := range r.ips {
			fmt.Fprintf(&nb, "%s %s\n", a, r.hostname)
		}
	}
	return hb.Bytes(), nb.Bytes()
}

// writeIfChanged writes a file readable by dnsmasq's user when its content
// differs, and says whether it did.
func writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	return true, nil
}

// removedMACs are the MACs with a lease that no port of the network has.
func removedMACs(leaseFile string, n *dNet) map[string]bool {
	f, err := os.Open(leaseFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	ports := map[string]bool{}
	for _, p := range n.ports {
		ports[p.mac.String()] = true
	}
	gone := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 3 {
			if mac, err := net.ParseMAC(fl[1]); err == nil && !ports[mac.String()] {
				gone[mac.String()] = true
			}
		}
	}
	return gone
}

// dropLeases removes the leases of the given MACs from a stopped dnsmasq's
// lease file.
func dropLeases(leaseFile string, macs map[string]bool) error {
	if len(macs) == 0 {
		return nil
	}
	b, err := os.ReadFile(leaseFile)
	if err != nil {
		return nil
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		fl := strings.Fields(line)
		if len(fl) >= 3 {
			if mac, err := net.ParseMAC(fl[1]); err == nil && macs[mac.String()] {
				continue
			}
		}
		out.WriteString(line)
	}
	if err := os.WriteFile(leaseFile, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("removing leases: %w", err)
	}
	return nil
}

// start runs dnsmasq in the router namespace; it returns once dnsmasq has
// read its configuration and detached.
func (m *dhcpManager) start(n *dNet, r *router, args []string) error {
	bin := m.p.cfg.Dnsmasq
	if bin == "" {
		bin = "dnsmasq"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("dnsmasq is not installed (apt-get install dnsmasq-base): %w", err)
	}
	var out []byte
	err = inNetns(r.ns, func() error {
		cmd := exec.Command(path, args...)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return fmt.Errorf("starting dnsmasq: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// runningPID is the pid of the network's dnsmasq, or 0.
func (m *dhcpManager) runningPID(id string) int {
	b, err := os.ReadFile(m.pidFile(id))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("--pid-file="+m.pidFile(id)+"\x00")) {
		return 0
	}
	return pid
}

// inNamespace tells whether process pid runs in the router's namespace.
func inNamespace(pid int, r *router) bool {
	var a, b unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a) != nil || unix.Fstat(int(r.ns), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// kill ends a dnsmasq and waits for it to be gone.
func (m *dhcpManager) kill(id string, pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for m.runningPID(id) == pid && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.runningPID(id) == pid {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && m.runningPID(id) == pid; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	os.Remove(m.pidFile(id))
}

// stop ends a network's dnsmasq and removes its files.
func (m *dhcpManager) stop(id string, ch *changes) {
	if pid := m.runningPID(id); pid > 0 {
		m.kill(id, pid)
		ch.add("dhcp %s: stopped dnsmasq", id)
	}
	if _, err := os.Stat(m.netDir(id)); err == nil {
		os.RemoveAll(m.netDir(id))
		ch.add("dhcp %s: removed its files", id)
	}
}

// leases reads a lease file: MAC to address.
func leases(path string) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		fl := strings.Fields(line)
		if len(fl) >= 3 {
			if a, err := netip.ParseAddr(fl[2]); err == nil {
				out[strings.ToLower(fl[1])] = a
			}
		}
	}
	return out
}
