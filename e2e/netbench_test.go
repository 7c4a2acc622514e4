package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestNetworkBench measures, with real guests on the network test's two
// agent hosts (docs/BENCHMARKS.md):
//
//   - create → the guest holds its DHCP lease → it answers a ping from a
//     peer on another host, beside the same guest made with no network;
//   - guest-to-guest TCP throughput (busybox nc from /dev/zero, 4 MiB
//     counted by the receiver, timed by the sender's /proc/uptime and by
//     the test) across the VXLAN overlay, and between the same two guests
//     over a plain bridged network (the hosts' br-ext on the underlay
//     segment, no encapsulation).
//
// It asserts nothing about the figures; it runs when
// POLYVISOR_NETWORK_BENCH=1.
func TestNetworkBench(t *testing.T) {
	if os.Getenv("POLYVISOR_NETWORK_BENCH") == "" {
		t.Skip("set POLYVISOR_NETWORK_BENCH=1 to measure the network with real guests")
	}
	w := newNetWorld(t)
	ctx := context.Background()
	c := w.c
	importGuest(t, c)
	if _, err := c.CreateNetwork(ctx, api.NetworkCreate{Name: "ov", NetworkSpec: api.NetworkSpec{Type: api.NetworkOverlay}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSubnet(ctx, api.SubnetCreate{Name: "ov4", SubnetSpec: api.SubnetSpec{Network: "ov", CIDR: "10.62.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	ext := strings.TrimSuffix(w.subnet, "0/24")
	if _, err := c.CreateNetwork(ctx, api.NetworkCreate{Name: "plain", NetworkSpec: api.NetworkSpec{Type: api.NetworkBridged, Bridge: "br-ext"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSubnet(ctx, api.SubnetCreate{Name: "plain4", SubnetSpec: api.SubnetSpec{Network: "plain", CIDR: w.subnet, Gateway: w.outside,
		Pools: []api.IPRange{{Start: ext + "150", End: ext + "170"}}}}); err != nil {
		t.Fatal(err)
	}
	hA, hB := w.hosts[0], w.hosts[1]
	// Two guests, one per host, each on both networks. The bridged
	// network has no DHCP of Polyvisor's: its address is set by hand.
	vms := w.vms(
		guestSpec{c, "g1", hA, []api.NIC{{Network: "ov"}, {Network: "plain"}}, nil},
		guestSpec{c, "g2", hB, []api.NIC{{Network: "ov"}, {Network: "plain"}}, nil},
	)
	g1, g2 := vms["g1"], vms["g2"]
	for _, vm := range []*api.VM{g1, g2} {
		out, _ := w.exec(c, vm.Name, fmt.Sprintf("ip addr add %s/24 dev eth1 && ip link set eth1 up && echo eth1-up", nicIP(vm, 1)))
		if !strings.Contains(out, "eth1-up") {
			t.Fatalf("%s's eth1: %q", vm.Name, out)
		}
	}

	t.Run("create to dhcp and ping", func(t *testing.T) {
		for round := 1; round <= 3; round++ {
			// A guest with no network, then one on the overlay whose fixed
			// address g1 (the other host) pings from before it exists.
			bare := fmt.Sprintf("bare%d", round)
			req := guestVM(bare)
			req.Host = hB.name
			req.Boot.Cmdline = guest.RunCmdline("echo booted\n")
			start := time.Now()
			mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{}))
			bareUp := waitFor(t, c, bare, guest.RunExitPrefix, start)

			netted := fmt.Sprintf("net%d", round)
			ip := "10.62.0." + strconv.Itoa(200+round)
			con, err := c.Console(ctx, "g1", "serial")
			if err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, con)
			tag := "pingwait-" + netted
			script := fmt.Sprintf("echo waiting\nuntil ping -c 1 -W 1 %s >/dev/null 2>&1; do :; done\necho answered", ip)
			if _, err := io.WriteString(con, guest.ExecLine(tag, script)); err != nil {
				t.Fatal(err)
			}
			waitConsole(t, c, "g1", guest.ExecOutputPrefix(tag)+"waiting", 1)
			req = guestVM(netted)
			req.Host = hB.name
			req.NICs = []api.NIC{{Network: "ov", IP: ip}}
			req.Boot.Cmdline = guest.RunCmdline("echo booted\n")
			start = time.Now()
			mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{}))
			leased := waitFor(t, c, netted, guest.DHCPPrefix+"eth0 "+ip, start)
			pinged := waitFor(t, c, "g1", guest.ExecOutputPrefix(tag)+"answered", start)
			netUp := waitFor(t, c, netted, guest.RunExitPrefix, start)
			con.Close()
			t.Logf("round %d: no network: boot script ran %s after create; on the overlay: DHCP lease %s, boot script ran %s, answers g1's ping %s after create",
				round, ms(bareUp), ms(leased), ms(netUp), ms(pinged))
			for _, vm := range []string{bare, netted} {
				waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, vm, false)))
			}
		}
	})

	t.Run("throughput", func(t *testing.T) {
		const mib = 4
		// rate is the transfer's rate as the guest timed it, and as the
		// test saw it (its script's whole run through the console: an
		// upper bound of the time).
		rate := func(to string) (guestRate, hostRate float64) {
			t.Helper()
			// The sender sends zeros until the receiver has had mib MiB
			// and goes (busybox nc neither passes an end of file on nor
			// stops at the peer's): the receiver, in a session of its own
			// as the console's script ends first, counts what it took.
			if out, _ := w.exec(c, "g2", fmt.Sprintf(`rm -f /tmp/got
setsid sh -c 'sleep 300 | nc -l -p 5001 | head -c %d | wc -c >/tmp/got' </dev/null >/dev/null 2>&1 &
sleep 1
netstat -ltn | grep -q ':5001 ' && echo listening`, mib<<20)); !strings.Contains(out, "listening") {
				t.Fatalf("g2's listener: %q", out)
			}
			began := time.Now()
			out, _ := w.exec(c, "g1", fmt.Sprintf(`a=$(cut -d' ' -f1 /proc/uptime)
timeout 60 nc %s 5001 </dev/zero
b=$(cut -d' ' -f1 /proc/uptime)
echo "took $a $b"`, to))
			hostSecs := time.Since(began).Seconds()
			m := regexp.MustCompile(`took ([0-9.]+) ([0-9.]+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("g1's transfer to %s: %q", to, out)
			}
			// What the receiver took: all of it, or what came within the
			// sender's minute.
			out, _ = w.exec(c, "g2", "for i in $(seq 20); do [ -s /tmp/got ] && break; sleep 1; done; cat /tmp/got")
			got, err := strconv.Atoi(strings.TrimSpace(out))
			if err != nil || got <= 0 {
				t.Fatalf("g2 received %q bytes from g1 over %s", out, to)
			}
			if got < mib<<20 {
				t.Logf("g2 received %d of %d bytes over %s within the sender's minute", got, mib<<20, to)
			}
			a, _ := strconv.ParseFloat(m[1], 64)
			b, _ := strconv.ParseFloat(m[2], 64)
			if b <= a {
				t.Fatalf("g1's transfer to %s took %s to %s", to, m[1], m[2])
			}
			mbit := float64(got) * 8 / (1 << 20)
			return mbit / (b - a), mbit / hostSecs // Mbit/s (of 2^20 bits)
		}
		for round := 1; round <= 3; round++ {
			ov, ovHost := rate(nicIP(g2, 0))
			pl, plHost := rate(nicIP(g2, 1))
			t.Logf("round %d: g1 (host a) → g2 (host b), %d MiB: overlay %.1f Mbit/s, plain bridge %.1f Mbit/s, ratio %.2f (timed by the test: %.1f and %.1f Mbit/s, ratio %.2f)",
				round, mib, ov, pl, ov/pl, ovHost, plHost, ovHost/plHost)
		}
	})
}

// waitFor waits until the VM's console holds text and returns how long
// after start it was first seen (polled every 50 ms).
func waitFor(t *testing.T, c *client.Client, vm, text string, start time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if b, err := c.ConsoleLog(context.Background(), vm, 1<<20); err == nil && strings.Contains(string(b), text) {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s's console: no %q within 5 minutes", vm, text)
	return 0
}

func ms(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
