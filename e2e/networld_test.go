package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/netplane"
	"github.com/polyvisor/polyvisor/internal/network"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// The network tests run three hosts on this machine: the server (no
// built-in agent) in the root namespace, and two agents, each in a network
// namespace of its own, joined to the server by an underlay bridge. Each
// agent host's underlay interface is a bridge (br-ext), which is also the
// bridged external network floating IPs come from; the test process, in
// the root namespace on the underlay, plays the outside world.

type netHost struct {
	name, ns, addr, dir string
	agent               *agentProc
	joinArgs            []string
}

type netWorld struct {
	t        *testing.T
	srv      *serverProc
	c        *client.Client // superadmin, over the socket
	prefix   string
	bridge   string // the underlay bridge, in the root namespace
	outside  string // the root namespace's underlay address
	subnet   string // the underlay's /24
	hosts    []*netHost
	extBegin string
}

func newNetWorld(t *testing.T, serverArgs ...string) *netWorld {
	t.Helper()
	requireQEMU(t)
	peer.Root(t, "the network tests' namespaces")
	for b, pkg := range map[string]string{"ip": "iproute2", "bridge": "iproute2", "nsenter": "util-linux", "dnsmasq": "dnsmasq-base", "nft": "nftables"} {
		peer.Binary(t, b, "apt-get install "+pkg)
	}
	b, _ := os.ReadFile(guestDir + "/features")
	if !strings.Contains(string(b), "exec") {
		t.Fatalf("the test guest in %s cannot run commands on its console: rebuild it with scripts/build-guest.sh %s", guestDir, guestDir)
	}
	id := strconv.Itoa(os.Getpid()%200 + 20)
	w := &netWorld{t: t, prefix: "pvn" + id, bridge: "pvn" + id + "ul", outside: "10.215." + id + ".1", subnet: "10.215." + id + ".0/24"}
	exec.Command("ip", "link", "del", w.bridge).Run()
	sh(t, "ip", "link", "add", w.bridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", w.bridge).Run() })
	sh(t, "ip", "addr", "add", w.outside+"/24", "dev", w.bridge)
	sh(t, "ip", "link", "set", w.bridge, "up")
	for i, name := range []string{"hosta", "hostb"} {
		h := &netHost{name: name, ns: w.prefix + name, addr: "10.215." + id + "." + strconv.Itoa(i+2), dir: t.TempDir()}
		exec.Command("ip", "netns", "del", h.ns).Run()
		sh(t, "ip", "netns", "add", h.ns)
		t.Cleanup(func() {
			killQEMUs(h.dir)
			w.teardown(h)
			exec.Command("ip", "netns", "del", h.ns).Run()
		})
		veth := w.prefix + "v" + strconv.Itoa(i)
		sh(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "ul0", "netns", h.ns)
		t.Cleanup(func() { exec.Command("ip", "link", "del", veth).Run() })
		sh(t, "ip", "link", "set", veth, "master", w.bridge, "up")
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			{"link", "add", "br-ext", "type", "bridge"},
			{"link", "set", "ul0", "master", "br-ext", "up"},
			{"addr", "add", h.addr + "/24", "dev", "br-ext"},
			{"link", "set", "br-ext", "up"},
			{"route", "add", "default", "via", w.outside},
		} {
			sh(t, append([]string{"ip", "-n", h.ns}, args...)...)
		}
		w.hosts = append(w.hosts, h)
	}
	port := freePort(t)
	w.srv = startServerWith(t, &serverProc{t: t, dataDir: t.TempDir(), port: port, noAgent: true,
		args: append([]string{"--no-agent", "--listen", "0.0.0.0:" + strconv.Itoa(port), "--advertise-address", w.outside, "--heartbeat-timeout", "4s"}, serverArgs...)})
	w.c = w.srv.c
	ctx := context.Background()
	for _, h := range w.hosts {
		jt, err := w.c.CreateJoinToken(ctx, api.JoinTokenCreate{TTLSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		h.joinArgs = []string{"--server", fmt.Sprintf("https://%s:%d", w.outside, port), "--join-token", jt.Token, "--name", h.name}
		w.startAgent(h, true)
	}
	return w
}

// teardown removes what the host's agent made and left behind on purpose
// (it outlives the agent): its router namespaces, bound under its data
// dir, its dnsmasq processes, its devices and tables; by applying a state
// with no network, as the agent would.
func (w *netWorld) teardown(h *netHost) {
	p, err := netplane.New(netplane.Config{StateDir: filepath.Join(h.dir, "net"), NetNS: "/run/netns/" + h.ns})
	if err != nil {
		w.t.Logf("tearing down %s's network: %v", h.name, err)
		return
	}
	defer p.Close()
	if _, err := p.Apply(context.Background(), &api.HostNetworkState{Revision: 1 << 62, Underlay: h.addr}); err != nil {
		w.t.Logf("tearing down %s's network: %v", h.name, err)
	}
}

// startAgent runs a host's agent in its network namespace (only: it
// shares the machine's mount namespace, as a real agent does its host's).
func (w *netWorld) startAgent(h *netHost, join bool) {
	t := w.t
	t.Helper()
	args := []string{"--net=/run/netns/" + h.ns, binary, "agent", "--log-level", "debug", "--heartbeat-interval", "500ms", "--data-dir", h.dir, "--address", h.addr}
	if join {
		args = append(args, h.joinArgs...)
	}
	a := &agentProc{log: &bytes.Buffer{}, done: make(chan struct{})}
	a.cmd = exec.Command("nsenter", args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", h.name, a.log)
		}
	})
	h.agent = a
	eventually(t, 60*time.Second, h.name+" is ready", func() error {
		hh, err := w.c.GetHost(context.Background(), h.name)
		if err != nil {
			return err
		}
		if hh.Status.State != api.HostReady {
			return fmt.Errorf("%s is %s", h.name, hh.Status.State)
		}
		return nil
	})
}

// onHost runs a command in a host's namespace.
func (w *netWorld) onHost(h *netHost, args ...string) string {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.ns}, args...)...).CombinedOutput()
	if err != nil {
		w.t.Logf("%s on %s: %v", strings.Join(args, " "), h.name, err)
	}
	return string(out)
}

// guestSpec is a VM of the test guest to make: its NICs, pinned to a host,
// and the TCP ports it answers on with "hello from <name>" from its boot.
type guestSpec struct {
	c      *client.Client
	name   string
	host   *netHost
	nics   []api.NIC
	listen []int
}

// vms makes the VMs at once and waits until each has run its boot script
// (DHCP on its NICs, then its listeners); it returns them by name, with
// their NICs' addresses.
func (w *netWorld) vms(specs ...guestSpec) map[string]*api.VM {
	w.t.Helper()
	ctx := context.Background()
	ops := make([]*api.Operation, len(specs))
	for i, s := range specs {
		req := guestVM(s.name)
		req.Host = s.host.name
		req.NICs = s.nics
		var script strings.Builder
		for _, p := range s.listen {
			fmt.Fprintf(&script, "nc -ll -p %d -e echo hello from %s </dev/null >/dev/null 2>&1 &\n", p, s.name)
		}
		script.WriteString("echo networked\n")
		req.Boot.Cmdline = guest.RunCmdline(script.String())
		ops[i] = mustOp(w.t)(s.c.CreateVM(ctx, req, client.CreateOptions{}))
	}
	out := map[string]*api.VM{}
	for i, s := range specs {
		waitOK(w.t, s.c, ops[i])
		w.t.Cleanup(func() {
			if w.t.Failed() {
				b, err := s.c.ConsoleLog(context.Background(), s.name, 1<<20)
				w.t.Logf("the end of %s's console (%v):\n%s", s.name, err, b[max(0, len(b)-3000):])
			}
		})
		// Generous: five guests boot at once under TCG, on a machine that
		// may be busy with other tests.
		eventually(w.t, 5*time.Minute, s.name+" ran its boot script", func() error {
			b, err := s.c.ConsoleLog(context.Background(), s.name, 1<<20)
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), guest.RunExitPrefix) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		vm, err := s.c.GetVM(ctx, s.name)
		if err != nil {
			w.t.Fatal(err)
		}
		out[s.name] = vm
	}
	return out
}

var execSeq atomic.Int64

// exec runs a script in a running guest through its serial console and
// returns its output and exit status.
func (w *netWorld) exec(c *client.Client, vm, script string) (string, string) {
	w.t.Helper()
	return w.execAsync(c, vm, script)()
}

// execAsync starts script in vm as exec does and returns at once, with a
// function that waits for its end and returns what exec would: scripts
// in several guests run at the same time.
func (w *netWorld) execAsync(c *client.Client, vm, script string) func() (string, string) {
	w.t.Helper()
	tag := fmt.Sprintf("t%d", execSeq.Add(1))
	ctx := context.Background()
	con, err := c.Console(ctx, vm, "serial")
	if err != nil {
		w.t.Fatalf("opening the console of %s: %v", vm, err)
	}
	closeCon := sync.OnceFunc(func() { con.Close() })
	w.t.Cleanup(closeCon) // if the test ends before anyone waits
	go io.Copy(io.Discard, con)
	if _, err := io.WriteString(con, guest.ExecLine(tag, script)); err != nil {
		closeCon()
		w.t.Fatal(err)
	}
	return func() (string, string) {
		w.t.Helper()
		defer closeCon()
		return w.execResult(c, vm, tag)
	}
}

// execResult waits for the end of the script run under tag and returns
// its output and exit status.
func (w *netWorld) execResult(c *client.Client, vm, tag string) (string, string) {
	w.t.Helper()
	exitRE := regexp.MustCompile(regexp.QuoteMeta(guest.ExecExitPrefix(tag)) + `(\S+)`)
	var out, exit string
	eventually(w.t, 90*time.Second, "the script "+tag+" ends in "+vm, func() error {
		b, err := c.ConsoleLog(context.Background(), vm, 1<<20)
		if err != nil {
			return err
		}
		m := exitRE.FindStringSubmatch(string(b))
		if m == nil {
			return fmt.Errorf("not yet")
		}
		exit = m[1]
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if i := strings.Index(l, guest.ExecOutputPrefix(tag)); i >= 0 {
				lines = append(lines, strings.TrimRight(l[i+len(guest.ExecOutputPrefix(tag)):], "\r"))
			}
		}
		out = strings.Join(lines, "\n")
		return nil
	})
	return out, exit
}

func nicIP(vm *api.VM, i int) string { return vm.Spec.NICs[i].IP }

func portID(t *testing.T, c *client.Client, name string) string {
	t.Helper()
	// The port's id is the one the host's state names its tap with: the
	// first 10 hex digits of its UID's hash, as the server derives it.
	p, err := c.GetPort(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return network.ShortID(p.UID)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func grepLog(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
