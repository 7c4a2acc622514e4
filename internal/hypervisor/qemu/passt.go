package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// A user-mode NIC is served by passt (Debian's passt package), not by
// QEMU's built-in slirp, which maps its gateway address to the host's
// loopback. Each NIC gets a passt of its own connected to QEMU through a
// socket pair: no socket file, so nothing else can connect to either end.
// passt runs outside QEMU, in its own namespaces and seccomp sandbox, as
// the unprivileged user QEMU runs as, and exits when QEMU closes its end;
// so it outlives the agent with QEMU and needs nothing on re-attach.
//
// The guest sees the network QEMU's slirp gave it: DHCP offers 10.0.2.15/24
// with the gateway 10.0.2.2, and the host's resolvers for DNS. passt is
// told --no-map-gw, so the gateway address is not the host; the firewall
// rule of closeLoopback keeps crafted packets off the host's loopback.
const (
	userNetAddr    = "10.0.2.15"
	userNetPrefix  = "24"
	userNetGateway = "10.0.2.2"
)

// userNet is the user-mode network of a starting VM.
type userNet struct {
	qemuEnds []*os.File // QEMU's ends of the socket pairs, one per NIC
	procs    []*exec.Cmd
	exited   []chan struct{}
}

// startUserNet starts one passt per NIC, in the VM's cgroup when it has
// one, with its output in logf. A passt that cannot serve (no interface to
// take the guest's network from, say) exits at once with its reason in
// logf: alive checks that they all still run once QEMU is up.
func (d *Driver) startUserNet(dir string, nics int, logf *os.File, cg *vmCgroup) (_ *userNet, err error) {
	n := &userNet{}
	if nics == 0 {
		return n, nil
	}
	defer func() {
		if err != nil {
			n.kill()
			n.closeQEMUEnds()
		}
	}()
	c := d.confinement()
	if c.passt == "" {
		return nil, errors.New("starting user-mode network: passt is not installed (apt-get install passt)")
	}
	base := []string{"--foreground", "--quiet", "--fd", "3", "--no-map-gw",
		"--address", userNetAddr, "--netmask", userNetPrefix, "--gateway", userNetGateway}
	if c.jail.User != "" {
		base = append(base, "--runas", c.jail.User)
	}
	if ifname, err := outboundInterface(); err != nil {
		return nil, fmt.Errorf("starting user-mode network: %w", err)
	} else if ifname != "" {
		base = append(base, "--interface", ifname)
	}
	for i := 0; i < nics; i++ {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("making socket pair for nic %d: %w", i, err)
		}
		passtEnd := os.NewFile(uintptr(fds[0]), "passt")
		n.qemuEnds = append(n.qemuEnds, os.NewFile(uintptr(fds[1]), "qemu-net"))
		fmt.Fprintf(logf, "--- polyvisor: starting passt for nic %d at %s\n", i, time.Now().Format(time.RFC3339))
		cmd := exec.Command(c.passt, base...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.ExtraFiles = []*os.File{passtEnd}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
		passtEnd.Close()
		if err != nil {
			return nil, fmt.Errorf("spawning passt for nic %d: %w", i, err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		n.procs, n.exited = append(n.procs, cmd), append(n.exited, exited)
		if cg != nil {
			if err := cg.add(cmd.Process.Pid); errors.Is(err, syscall.ESRCH) {
				return nil, fmt.Errorf("passt of nic %d exited", i) // its reason is in logf
			} else if err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// alive fails when a passt has exited.
func (n *userNet) alive() error {
	for i := range n.procs {
		select {
		case <-n.exited[i]:
			return fmt.Errorf("passt of nic %d exited", i)
		default:
		}
	}
	return nil
}

// fds are the descriptor numbers QEMU sees its NICs' ends under, when they
// are its first extra files.
func (n *userNet) fds() []int {
	var fds []int
	for i := range n.qemuEnds {
		fds = append(fds, 3+i)
	}
	return fds
}

// closeQEMUEnds drops the agent's copies of QEMU's ends, once QEMU has
// its own (or will not run).
func (n *userNet) closeQEMUEnds() {
	for _, f := range n.qemuEnds {
		f.Close()
	}
	n.qemuEnds = nil
}

// kill stops the passt processes of a start that failed.
func (n *userNet) kill() {
	for i, cmd := range n.procs {
		cmd.Process.Kill()
		<-n.exited[i]
	}
}

// outboundInterface is the interface passt takes the guest's network from:
// "" (passt's own choice, the interface of the default route) when the
// host has a default route, else the first interface that is up with an
// IPv4 address, so a host with no default route still serves its guests.
func outboundInterface() (string, error) {
	if hasDefaultRoute() {
		return "", nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil {
				return ifc.Name, nil
			}
		}
	}
	return "", errors.New("the host has no default route and no interface with an IPv4 address for the guests' user-mode network")
}

// hasDefaultRoute reports whether the main IPv4 or IPv6 routing table has a
// default route.
func hasDefaultRoute() bool {
	if f, err := os.Open("/proc/net/route"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) > 7 && fl[1] == "00000000" && fl[7] == "00000000" {
				return true
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/ipv6_route"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			fl := strings.Fields(line)
			if len(fl) == 10 && fl[0] == strings.Repeat("0", 32) && fl[1] == "00" && fl[9] != "lo" {
				return true
			}
		}
	}
	return false
}
