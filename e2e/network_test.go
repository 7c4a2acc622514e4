package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/netplane"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestNetworks: project networks across two hosts, end to end through the
// API, with real guests exchanging real packets. Five guests boot at once:
// a1 (host a) and a2 (host b) of project pa on overlay network a, with
// NAT; b1 (host a) and b2 (host b) of project pb on overlay network b, of
// the same CIDR, without NAT; a3 (host a, a1's neighbour on one bridge) on
// network a in security group "locked" (egress only). Each answers "hello from <name>" on TCP 7000
// (a3 on 8080) from its boot. The guests are driven through their serial
// consoles.
func TestNetworks(t *testing.T) {
	began := time.Now()
	w := newNetWorld(t)
	ctx := context.Background()
	c := w.c
	for _, p := range []string{"pa", "pb"} {
		if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: p}); err != nil {
			t.Fatal(err)
		}
		importGuest(t, c.WithProject(p))
	}
	ca, cb := c.WithProject("pa"), c.WithProject("pb")
	mk := func(cl *client.Client, n api.NetworkCreate, s api.SubnetCreate) {
		t.Helper()
		if _, err := cl.CreateNetwork(ctx, n); err != nil {
			t.Fatalf("network %s: %v", n.Name, err)
		}
		if _, err := cl.CreateSubnet(ctx, s); err != nil {
			t.Fatalf("subnet %s: %v", s.Name, err)
		}
	}
	mk(ca, api.NetworkCreate{Name: "a", NetworkSpec: api.NetworkSpec{Type: api.NetworkOverlay, NAT: true}},
		api.SubnetCreate{Name: "a4", SubnetSpec: api.SubnetSpec{Network: "a", CIDR: "10.60.0.0/24"}})
	mk(cb, api.NetworkCreate{Name: "b", NetworkSpec: api.NetworkSpec{Type: api.NetworkOverlay}},
		api.SubnetCreate{Name: "b4", SubnetSpec: api.SubnetSpec{Network: "b", CIDR: "10.60.0.0/24"}})
	ext := strings.TrimSuffix(w.subnet, "0/24")
	mk(c, api.NetworkCreate{Name: "ext", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext", External: true}},
		api.SubnetCreate{Name: "ext4", SubnetSpec: api.SubnetSpec{Network: "ext", CIDR: w.subnet, Gateway: w.outside,
			Pools: []api.IPRange{{Start: ext + "100", End: ext + "120"}}}})
	if _, err := ca.CreateSecurityGroup(ctx, api.SecurityGroupCreate{Name: "locked", SecurityGroupSpec: api.SecurityGroupSpec{
		Rules: []api.SecurityGroupRule{{Direction: api.DirectionEgress}}}}); err != nil {
		t.Fatal(err)
	}
	sa, err := ca.GetSubnet(ctx, "a4")
	if err != nil {
		t.Fatal(err)
	}
	gw := sa.Spec.Gateway
	hA, hB := w.hosts[0], w.hosts[1]
	booted := time.Now()
	vms := w.vms(
		guestSpec{ca, "a1", hA, []api.NIC{{Network: "a"}}, []int{7000}},
		guestSpec{ca, "a2", hB, []api.NIC{{Network: "a"}}, []int{7000}},
		guestSpec{cb, "b1", hA, []api.NIC{{Network: "b"}}, []int{7000}},
		guestSpec{cb, "b2", hB, []api.NIC{{Network: "b"}}, []int{7000}},
		guestSpec{ca, "a3", hA, []api.NIC{{Network: "a", SecurityGroups: []string{"locked"}}}, []int{8080}},
	)
	t.Logf("five guests made, booted and on their networks in %s (%s after the test began)",
		time.Since(booted).Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
	a1, a2, b1, b2, a3 := vms["a1"], vms["a2"], vms["b1"], vms["b2"], vms["a3"]
	clientOf := map[string]*client.Client{"a1": ca, "a2": ca, "a3": ca, "b1": cb, "b2": cb}

	t.Run("dhcp gives the ipam address", func(t *testing.T) {
		for _, vm := range []*api.VM{a1, a2, b1, b2, a3} {
			ip := nicIP(vm, 0)
			if a, err := netip4(ip); err != nil || !strings.HasPrefix(a, "10.60.0.") {
				t.Fatalf("%s's address in the API is %q, not one of its subnet: %+v", vm.Name, ip, vm.Spec.NICs)
			}
			log := waitConsole(t, clientOf[vm.Name], vm.Name, guest.DHCPPrefix, 1)
			if want := guest.DHCPPrefix + "eth0 " + ip + " gateway " + gw; !strings.Contains(log, want) {
				t.Fatalf("%s's lease is not its address %s from the API with gateway %s:\n%s", vm.Name, ip, gw, grepLog(log, guest.DHCPPrefix))
			}
		}
	})

	t.Run("overlay across hosts, projects isolated", func(t *testing.T) {
		// Each script begins with a check that the guest's own listener
		// runs, so that a refused greeting elsewhere means the network.
		// Both guests' scripts run at once, and within each the two
		// connections that must fail (waiting out their timeouts) too.
		fromA := w.execAsync(ca, "a1", fmt.Sprintf(`nc -w 5 127.0.0.1 7000 </dev/null
ping -c 2 -W 2 %[1]s >/dev/null 2>&1 && echo ping-a2-ok
nc -w 5 %[1]s 7000 </dev/null
nc -w 3 %[2]s 7000 </dev/null 2>&1 | sed 's/^/to-b1 /' &
nc -w 3 %[3]s 7000 </dev/null 2>&1 | sed 's/^/to-b2 /' &
wait
`, nicIP(a2, 0), nicIP(b1, 0), nicIP(b2, 0)))
		fromB := w.execAsync(cb, "b2", fmt.Sprintf(`nc -w 5 127.0.0.1 7000 </dev/null
ping -c 2 -W 2 %[1]s >/dev/null 2>&1 && echo ping-b1-ok
nc -w 5 %[1]s 7000 </dev/null
nc -w 3 %[2]s 7000 </dev/null 2>&1 | sed 's/^/to-a1 /' &
nc -w 3 %[3]s 7000 </dev/null 2>&1 | sed 's/^/to-a2 /' &
wait
`, nicIP(b1, 0), nicIP(a1, 0), nicIP(a2, 0)))
		out, _ := fromA()
		for _, want := range []string{"hello from a1", "ping-a2-ok", "hello from a2"} {
			if !strings.Contains(out, want) {
				t.Fatalf("a1 (host a) to a2 (host b) across the overlay: no %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "hello from b") {
			t.Fatalf("a1 of pa reached a VM of pb:\n%s", out)
		}
		out, _ = fromB()
		for _, want := range []string{"hello from b2", "ping-b1-ok", "hello from b1"} {
			if !strings.Contains(out, want) {
				t.Fatalf("b2 (host b) to b1 (host a) across the overlay: no %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "hello from a") {
			t.Fatalf("b2 of pb reached a VM of pa:\n%s", out)
		}
	})

	t.Run("security groups", func(t *testing.T) {
		// a3 is in "locked": nothing comes in.
		if out, _ := w.exec(ca, "a1", fmt.Sprintf("nc -w 3 %s 8080 </dev/null", nicIP(a3, 0))); strings.Contains(out, "hello from a3") {
			t.Fatalf("a1 reached a3:8080 with no rule: %q", out)
		}
		sg, err := ca.AddSecurityGroupRules(ctx, "locked", []api.SecurityGroupRule{{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 8080, PortMax: 8080, RemoteGroup: "default"}})
		if err != nil {
			t.Fatal(err)
		}
		// The answer reaches a1 although a1's group lets in only its own
		// members: it belongs to a connection a1 opened (stateful).
		eventually(t, 20*time.Second, "a1 reaches a3:8080 once a rule lets its group in", func() error {
			if out, _ := w.exec(ca, "a1", fmt.Sprintf("nc -w 5 %s 8080 </dev/null", nicIP(a3, 0))); !strings.Contains(out, "hello from a3") {
				return fmt.Errorf("got %q", out)
			}
			return nil
		})
		// a3 may send anything out, but a1 lets in no new connection
		// from outside its group.
		if out, _ := w.exec(ca, "a3", fmt.Sprintf("nc -w 3 %s 7000 </dev/null", nicIP(a1, 0))); strings.Contains(out, "hello from a1") {
			t.Fatalf("a3 opened a connection to a1:7000, which a1's group does not let in: %q", out)
		}
		var id string
		for _, r := range sg.Spec.Rules {
			if r.Direction == api.DirectionIngress && r.PortMin == 8080 {
				id = r.ID
			}
		}
		if _, err := ca.RemoveSecurityGroupRule(ctx, "locked", id); err != nil {
			t.Fatal(err)
		}
		removed := time.Now()
		closed := time.Duration(0)
		for time.Since(removed) < time.Second {
			// Asked of host a's dataplane directly: a guest's nc takes
			// longer than a second to give up.
			if out := w.onHost(hA, "nft", "list", "table", "inet", "polyvisor-net"); !strings.Contains(out, "8080") {
				closed = time.Since(removed)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if closed == 0 {
			t.Fatal("the rule is still in host a's nftables a second after its removal")
		}
		t.Logf("the rule left host a's nftables %s after its removal", closed.Round(time.Millisecond))
		if out, _ := w.exec(ca, "a1", fmt.Sprintf("nc -w 3 %s 8080 </dev/null", nicIP(a3, 0))); strings.Contains(out, "hello from a3") {
			t.Fatalf("a1 still reaches a3:8080 after the rule's removal: %q", out)
		}
	})

	t.Run("anti-spoofing", func(t *testing.T) {
		// a1 tries its gateway (which no security group guards) from
		// another address, then from another MAC; then, as itself again,
		// its gateway and a2.
		out, _ := w.exec(ca, "a1", fmt.Sprintf(`gw=%[1]s
ping -c 1 -W 2 $gw >/dev/null 2>&1 && echo before-ok || echo before-failed
ip addr flush dev eth0
ip addr add 10.60.0.250/24 dev eth0
ip neigh flush all
ping -c 2 -W 1 $gw >/dev/null 2>&1 && echo spoofed-ip-through || echo spoofed-ip-dropped
ip addr flush dev eth0
ip addr add %[2]s/24 dev eth0
ip link set eth0 address 52:54:00:66:66:66
ip neigh flush all
ping -c 2 -W 1 $gw >/dev/null 2>&1 && echo spoofed-mac-through || echo spoofed-mac-dropped
ip link set eth0 address %[3]s
ip neigh flush all
ip route add default via $gw
ping -c 1 -W 2 $gw >/dev/null 2>&1 && ping -c 1 -W 2 %[4]s >/dev/null 2>&1 && echo restored-ok || echo restored-failed
`, gw, nicIP(a1, 0), a1.Spec.NICs[0].MAC, nicIP(a2, 0)))
		for _, want := range []string{"before-ok", "spoofed-ip-dropped", "spoofed-mac-dropped", "restored-ok"} {
			if !strings.Contains(out, want) {
				t.Fatalf("a1's spoofing: want %s in:\n%s", want, out)
			}
		}
	})

	t.Run("a guest claiming a neighbour's address or serving dhcp", func(t *testing.T) {
		// a1 and a3 share host a's bridge for network a: what a1 broadcasts
		// reaches a3 unless the dataplane drops it (broadcasts do not cross
		// the overlay). First a1 asks a3's MAC as itself, then as a2: with
		// a2's address on its own interface (its kernel now answers ARP for
		// it) and as the sender of its requests. a3 must not answer, nor
		// learn a1's MAC for a2's address.
		a1IP, a2IP, a3IP := nicIP(a1, 0), nicIP(a2, 0), nicIP(a3, 0)
		out, _ := w.exec(ca, "a1", fmt.Sprintf(`arping -c 2 -w 3 -I eth0 -s %[1]s %[3]s | grep Received | sed 's/^/as-itself /'
ip addr add %[2]s/32 dev eth0
arping -c 2 -w 2 -I eth0 -s %[2]s %[3]s | grep Received | sed 's/^/as-a2 /'
arping -A -c 1 -w 1 -I eth0 -s %[2]s %[2]s >/dev/null 2>&1
ip addr del %[2]s/32 dev eth0
`, a1IP, a2IP, a3IP))
		if !regexp.MustCompile(`as-itself Received [1-9]`).MatchString(out) {
			t.Fatalf("a1 asking a3's MAC as itself got no answer:\n%s", out)
		}
		if !strings.Contains(out, "as-a2 Received 0 ") {
			t.Fatalf("a1 claiming a2's address in ARP got an answer:\n%s", out)
		}
		// a1 runs a DHCP server (busybox udhcpd) handing out another range
		// with itself as the router; a3 asks for a lease three times. Every
		// answer must be its network's (from the gateway, with its address
		// from the IPAM), none a1's, though a1's server makes offers.
		if out, _ := w.exec(ca, "a1", fmt.Sprintf(`mkdir -p /var/lib/misc
touch /var/lib/misc/udhcpd.leases
printf 'start 10.60.0.200\nend 10.60.0.210\ninterface eth0\noption subnet 255.255.255.0\noption router %[1]s\noption lease 600\n' >/tmp/udhcpd.conf
udhcpd -f -a 0 /tmp/udhcpd.conf >/tmp/udhcpd.log 2>&1 &
echo $! >/tmp/udhcpd.pid
sleep 1
kill -0 $(cat /tmp/udhcpd.pid) && echo serving
`, a1IP)); !strings.Contains(out, "serving") {
			t.Fatalf("a1's DHCP server does not run: %q", out)
		}
		leases, _ := w.exec(ca, "a3", `ip neigh show `+a2IP+` | sed 's/^/neigh /'
printf '#!/bin/sh\n[ "$1" = bound ] && echo "lease $ip from $serverid router $router"\nexit 0\n' >/tmp/lease.sh
chmod +x /tmp/lease.sh
for i in 1 2 3; do udhcpc -i eth0 -f -n -q -t 3 -T 1 -s /tmp/lease.sh 2>/dev/null | grep '^lease'; done
`)
		if strings.Contains(strings.ToLower(leases), strings.ToLower(a1.Spec.NICs[0].MAC)) {
			t.Fatalf("a3 learnt a1's MAC for a2's address:\n%s", leases)
		}
		rogue, _ := w.exec(ca, "a1", "kill $(cat /tmp/udhcpd.pid)\ngrep -c -i offer /tmp/udhcpd.log | sed 's/^/offers /'")
		t.Logf("a3's leases with a DHCP server on a1:\n%s\na1's server: %s", leases, rogue)
		if !regexp.MustCompile(`offers [1-9]`).MatchString(rogue) {
			t.Fatalf("a1's DHCP server made no offer (so the test proves nothing): %q", rogue)
		}
		if n := strings.Count(leases, "lease "+a3IP+" from "+gw+" router "+gw); n != 3 {
			t.Fatalf("a3 got %d of 3 leases from its network, want all:\n%s", n, leases)
		}
		// Router advertisements: the test guest has nothing that sends an
		// ICMPv6 router advertisement (no radvd, no raw packet tool); the
		// rule that drops them is held by the netplane package's tests.
	})

	t.Run("a nic plugged in and out of a running guest", func(t *testing.T) {
		op := waitOK(t, ca, mustOp(t)(ca.AddNIC(ctx, "a3", api.NIC{Network: "a"})))
		vm, err := ca.GetVM(ctx, "a3")
		if err != nil || len(vm.Spec.NICs) != 2 || nicIP(vm, 1) == "" {
			t.Fatalf("a3 after %s: %+v %v", op.Kind, vm, err)
		}
		ip, mac := nicIP(vm, 1), strings.ToLower(vm.Spec.NICs[1].MAC)
		out, _ := w.exec(ca, "a3", `printf '#!/bin/sh\n[ "$1" = bound ] && echo "lease $ip from $serverid router $router"\nexit 0\n' >/tmp/lease.sh
chmod +x /tmp/lease.sh
for i in 1 2 3 4 5 6 7 8 9 10; do ip link show eth1 >/dev/null 2>&1 && break; sleep 1; done
cat /sys/class/net/eth1/address
ip link set eth1 up
udhcpc -i eth1 -f -n -q -t 5 -T 1 -s /tmp/lease.sh 2>/dev/null | grep '^lease'
`)
		if !strings.Contains(out, mac) || !strings.Contains(out, "lease "+ip+" ") {
			t.Fatalf("a3's plugged NIC (%s, %s from the API):\n%s", mac, ip, out)
		}
		waitOK(t, ca, mustOp(t)(ca.RemoveNIC(ctx, "a3", 1)))
		out, _ = w.exec(ca, "a3", `for i in 1 2 3 4 5 6 7 8 9 10; do ip link show eth1 >/dev/null 2>&1 || break; sleep 1; done
ip link show eth1 >/dev/null 2>&1 && echo eth1-still-there || echo eth1-gone`)
		if !strings.Contains(out, "eth1-gone") {
			t.Fatalf("a3's NIC is still in the guest after its removal: %q", out)
		}
	})

	t.Run("floating ip and nat", func(t *testing.T) {
		fip, err := ca.CreateFloatingIP(ctx, api.FloatingIPCreate{Name: "web", FloatingIPSpec: api.FloatingIPSpec{Network: "default/ext", Port: a1.Spec.NICs[0].Port}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ca.AddSecurityGroupRules(ctx, "default", []api.SecurityGroupRule{{Direction: api.DirectionIngress, Protocol: api.ProtocolTCP, PortMin: 7000, PortMax: 7000, RemoteCIDR: w.subnet}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the floating ip "+fip.Spec.Address+" answers from the underlay", func() error {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(fip.Spec.Address, "7000"), 2*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			b, _ := io.ReadAll(conn)
			if !strings.Contains(string(b), "hello from a1") {
				return fmt.Errorf("got %q", b)
			}
			return nil
		})
		// Outbound: a1 leaves from its floating IP, a2 from its host's
		// address; network b has no NAT, b1 stays inside.
		ln, err := net.Listen("tcp", w.outside+":0")
		if err != nil {
			t.Fatal(err)
		}
		from := make(chan string, 4)
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			from <- strings.Trim(r.URL.Path, "/") + " " + host
			fmt.Fprint(rw, "outside-ok")
		})}
		go srv.Serve(ln)
		defer srv.Close()
		for _, v := range []struct {
			vm, want string
		}{{"a1", fip.Spec.Address}, {"a2", hB.addr}} {
			out, _ := w.exec(ca, v.vm, httpGet(ln.Addr(), v.vm, 5))
			if !strings.Contains(out, "outside-ok") {
				t.Fatalf("%s does not reach the outside: %q", v.vm, out)
			}
			if got := <-from; got != v.vm+" "+v.want {
				t.Fatalf("%s reached the outside as %q, want from %s", v.vm, got, v.want)
			}
		}
		if out, _ := w.exec(cb, "b1", httpGet(ln.Addr(), "b1", 3)); strings.Contains(out, "outside-ok") {
			t.Fatal("b1 reached the outside although network b has no NAT")
		}
	})

	t.Run("an agent killed and restarted", func(t *testing.T) {
		con, err := ca.Console(ctx, "a1", "serial")
		if err != nil {
			t.Fatal(err)
		}
		defer con.Close()
		go io.Copy(io.Discard, con)
		tag := "pingkill"
		if _, err := io.WriteString(con, guest.ExecLine(tag, "echo pinging\nping -c 40 -i 0.2 -W 1 "+nicIP(a2, 0)+" | tail -n 2")); err != nil {
			t.Fatal(err)
		}
		waitConsole(t, ca, "a1", guest.ExecOutputPrefix(tag)+"pinging", 1)
		time.Sleep(1500 * time.Millisecond)
		hA.agent.cmd.Process.Kill()
		<-hA.agent.done
		time.Sleep(time.Second)
		w.startAgent(hA, false)
		out, _ := w.execResult(ca, "a1", tag)
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no ping summary in a1's output: %q", out)
		}
		sent, got := atoi(m[1]), atoi(m[2])
		t.Logf("a1 pinged a2 while host a's agent was killed and restarted: %d sent, %d answered", sent, got)
		if got < sent-1 {
			t.Fatalf("the ping stopped: %d of %d answered", got, sent)
		}
		// The restarted agent found the dataplane as it should be.
		if strings.Contains(hA.agent.log.String(), "host network changed") {
			t.Fatalf("the restarted agent changed the host's network:\n%s", grepLog(hA.agent.log.String(), "host network changed"))
		}
	})

	t.Run("a vm deleted", func(t *testing.T) {
		tap := netplane.TapName(portID(t, ca, a2.Spec.NICs[0].Port))
		mac := a2.Spec.NICs[0].MAC
		if !strings.Contains(w.onHost(hA, "bridge", "fdb", "show"), mac) {
			t.Fatalf("host a has no forwarding entry for a2's mac %s", mac)
		}
		waitOK(t, ca, mustOp(t)(ca.DeleteVM(ctx, "a2", false)))
		eventually(t, 20*time.Second, "a2's port, tap, lease, rules and entries are gone", func() error {
			if _, err := ca.GetPort(ctx, a2.Spec.NICs[0].Port); !client.IsNotFound(err) {
				return fmt.Errorf("its port: %v", err)
			}
			if out := w.onHost(hB, "ip", "link", "show"); strings.Contains(out, tap) {
				return fmt.Errorf("its tap %s is on host b", tap)
			}
			for _, h := range w.hosts {
				if out := w.onHost(h, "bridge", "fdb", "show"); strings.Contains(out, mac) {
					return fmt.Errorf("%s keeps a forwarding entry for %s", h.name, mac)
				}
				if out := w.onHost(h, "nft", "list", "ruleset"); strings.Contains(out, nicIP(a2, 0)+" ") || strings.Contains(out, nicIP(a2, 0)+",") {
					return fmt.Errorf("%s keeps its address in nftables", h.name)
				}
			}
			// dnsmasq's files are under /run/polyvisor-net/<hash of the
			// agent's state dir>/<network id>/.
			if out, _ := exec.Command("sh", "-c", "cat /run/polyvisor-net/*/*/leases 2>/dev/null").Output(); strings.Contains(string(out), mac) {
				return fmt.Errorf("a lease of %s is left", mac)
			}
			return nil
		})
	})

	t.Run("a host removed", func(t *testing.T) {
		waitOK(t, ca, mustOp(t)(ca.DeleteVM(ctx, "a3", false)))
		waitOK(t, cb, mustOp(t)(cb.DeleteVM(ctx, "b2", false)))
		if err := c.DeleteHost(ctx, hB.name); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "host a keeps no entry toward host b", func() error {
			out := w.onHost(hA, "bridge", "fdb", "show") + w.onHost(hA, "nft", "list", "set", "inet", "polyvisor-net", "underlays4")
			if strings.Contains(out, hB.addr) {
				return fmt.Errorf("entries toward %s:\n%s", hB.addr, grepLog(out, hB.addr))
			}
			return nil
		})
	})
	t.Logf("the network test took %s", time.Since(began).Round(100*time.Millisecond))
}

// netip4 checks that s is an IPv4 address.
func netip4(s string) (string, error) {
	a := net.ParseIP(s)
	if a == nil || a.To4() == nil {
		return "", fmt.Errorf("%q is not an IPv4 address", s)
	}
	return a.String(), nil
}

// httpGet is a guest's script that asks an HTTP server for /path, with nc
// (the test guest's static busybox wget dies of a segmentation fault).
func httpGet(addr net.Addr, path string, timeout int) string {
	a := addr.(*net.TCPAddr)
	// The echo ends the body's line: the guest reports whole lines only.
	return fmt.Sprintf("printf 'GET /%s HTTP/1.0\\r\\n\\r\\n' | nc -w %d %s %d; echo", path, timeout, a.IP, a.Port)
}
