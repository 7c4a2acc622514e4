package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

func TestConnectErrors(t *testing.T) {
	cases := []struct {
		uri  string
		want error
	}{
		{"qemu+tcp://127.0.0.1:1/system", provider.ErrUnreachable},                       // refused
		{"qemu+tcp://no-such-host.invalid/system", provider.ErrUnreachable},              // no such host
		{"qemu:///system?socket=/nonexistent/libvirt-sock", provider.ErrUnreachable},     // no daemon
		{"qemu+ssh://root@127.0.0.1/system", provider.ErrUnsupported},                    // not yet
		{"qemu+tls://127.0.0.1/system", provider.ErrUnsupported},                         // not yet
		{"qemu+tcp://192.0.2.1:16509/system?connect_timeout=1", provider.ErrUnreachable}, // TEST-NET: times out
	}
	for _, c := range cases {
		t.Run(c.uri, func(t *testing.T) {
			p := New(provider.Config{URL: c.uri}, testLogger(t))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := p.Connect(ctx)
			if !errors.Is(err, c.want) {
				t.Fatalf("connect: %v, want %v", err, c.want)
			}
			t.Logf("connect: %v", err)
			if _, err := p.Inventory(context.Background()); !errors.Is(err, provider.ErrUnreachable) {
				t.Errorf("inventory without a connection: %v", err)
			}
		})
	}
}

// TestConnectNoDriver asks the daemon for a hypervisor it does not have.
func TestConnectNoDriver(t *testing.T) {
	requireDaemon(t)
	p := New(provider.Config{URL: "xen:///"}, testLogger(t))
	if err := p.Connect(context.Background()); !errors.Is(err, provider.ErrUnreachable) {
		t.Fatalf("connect xen:/// on a qemu host: %v, want ErrUnreachable", err)
	}
}

// TestConnectTCP connects over qemu+tcp:// to the daemon's loopback
// listener (scripts/libvirtd.sh with POLYVISOR_LIBVIRTD_TCP=1).
func TestConnectTCP(t *testing.T) {
	requireDaemon(t)
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+tcpPort, time.Second)
	if err != nil && os.Geteuid() == 0 {
		// A libvirtd that scripts/libvirtd.sh started without the listener
		// (another test restarted it so) is restarted with it.
		if out, serr := runScript("start"); serr != nil {
			t.Logf("scripts/libvirtd.sh start: %v\n%s", serr, out)
		}
		c, err = net.DialTimeout("tcp", "127.0.0.1:"+tcpPort, time.Second)
	}
	if err != nil {
		peer.Missing(t, "libvirtd does not listen on 127.0.0.1:%s (start it with POLYVISOR_LIBVIRTD_TCP=1 scripts/libvirtd.sh start, as scripts/test.sh does): %v", tcpPort, err)
	}
	c.Close()
	// A domain defined through the socket, so that the inventory over TCP
	// has at least one VM to show, under its TCP path.
	raw := rawConn(t, systemURI)
	name := uniqueName("pv-tcp")
	dom, err := raw.DomainDefineXML(fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>`+
		`<os><type>hvm</type></os></domain>`, name))
	if err != nil {
		t.Fatalf("define a domain: %v", err)
	}
	t.Cleanup(func() { raw.DomainUndefine(dom) })

	p := connect(t, "qemu+tcp://127.0.0.1/system")
	inv, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	local := connect(t, systemURI)
	linv, err := local.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Hosts) != 1 || len(linv.Hosts) != 1 || inv.Hosts[0].ID != linv.Hosts[0].ID {
		t.Fatalf("tcp sees hosts %+v, the socket %+v; want the same one", inv.Hosts, linv.Hosts)
	}
	found := false
	for _, vm := range inv.VMs {
		if !strings.HasPrefix(vm.Path, "qemu+tcp://127.0.0.1/system/") {
			t.Errorf("vm path %s", vm.Path)
		}
		found = found || vm.Name == name && vm.Path == "qemu+tcp://127.0.0.1/system/"+name
	}
	if !found {
		t.Errorf("the inventory over tcp lacks %s, defined through the socket: %+v", name, inv.VMs)
	}
}

// TestConnectionLoss kills libvirtd under a watch: the watch returns an
// error at once, calls fail as unreachable, and after a restart Connect
// and Inventory work again. It runs only on a libvirtd that
// scripts/libvirtd.sh started, which it restarts with that script.
func TestConnectionLoss(t *testing.T) {
	requireDaemon(t)
	b, err := os.ReadFile(daemonPidFile())
	if err != nil {
		peer.Missing(t, "libvirtd was not started by scripts/libvirtd.sh (%v): not killing a daemon the tests do not manage", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		peer.Missing(t, "libvirtd was not started by scripts/libvirtd.sh: bad pid file %s: %q", daemonPidFile(), b)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); strings.TrimSpace(string(comm)) != "libvirtd" {
		peer.Missing(t, "libvirtd was not started by scripts/libvirtd.sh: pid %d in %s is not libvirtd", pid, daemonPidFile())
	}
	p := connect(t, systemURI)
	before, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec := watch(t, p)
	rec.sync(t, rawConn(t, systemURI), virtType(t))

	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever happened, leave a daemon running.
		if out, err := runScript("start"); err != nil {
			t.Errorf("restart libvirtd: %v\n%s", err, out)
		}
	})
	select {
	case err := <-rec.done:
		if !errors.Is(err, provider.ErrUnreachable) {
			t.Errorf("watch returned %v, want ErrUnreachable", err)
		}
		t.Logf("watch returned %s after the kill: %v", time.Since(killed), err)
	case <-time.After(5 * time.Second):
		t.Fatal("watch still runs 5 s after libvirtd was killed")
	}
	if _, err := p.Inventory(context.Background()); !errors.Is(err, provider.ErrUnreachable) {
		t.Errorf("inventory after the kill: %v, want ErrUnreachable", err)
	}
	// Wait for the process to be gone before connecting to its socket.
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Connect(context.Background()); !errors.Is(err, provider.ErrUnreachable) {
		t.Errorf("connect while libvirtd is down: %v, want ErrUnreachable", err)
	}

	if out, err := runScript("start"); err != nil {
		t.Fatalf("restart libvirtd: %v\n%s", err, out)
	}
	if err := p.Connect(context.Background()); err != nil {
		t.Fatalf("connect after the restart: %v", err)
	}
	after, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatalf("inventory after the restart: %v", err)
	}
	if after.Hosts[0].ID != before.Hosts[0].ID {
		t.Errorf("the host id changed with the restart: %s, then %s", before.Hosts[0].ID, after.Hosts[0].ID)
	}
	rec = watch(t, p)
	rec.sync(t, rawConn(t, systemURI), virtType(t))
}
