package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestGuestCannotReachHostLoopback: a server listening only on 127.0.0.1
// runs a tenant's VM with a NIC. The guest tries the API port through its
// gateway address (which QEMU's slirp mapped to the host's loopback) and
// through a route of its own that sends 127.0.0.1 out of its NIC, and
// reaches neither; it does reach an HTTP server on the host's non-loopback
// address. The host's status says how its VMs are confined, and the VM's
// QEMU runs as that unprivileged user.
func TestGuestCannotReachHostLoopback(t *testing.T) {
	requireQEMU(t)
	peer.Root(t, "confining QEMU")
	peer.Binary(t, "passt", "apt-get install passt")
	guest.RequireRun(t, guest.Paths{Dir: guestDir})

	addr := ""
	ifs, _ := net.InterfaceAddrs()
	for _, a := range ifs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && ip.IP.IsGlobalUnicast() {
			addr = ip.IP.String()
			break
		}
	}
	if addr == "" {
		peer.Missing(t, "this host has no non-loopback IPv4 address for the guest to reach")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var outHits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outHits.Add(1)
		fmt.Fprint(w, "outside-ok")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	outPort := ln.Addr().(*net.TCPAddr).Port

	s := startServer(t, t.TempDir())
	c, ctx := s.c, context.Background()
	h, err := c.GetHost(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	conf := h.Status.Confinement
	if conf == nil || conf.User != "polyvisor-qemu" || conf.Sandbox != "seccomp" || conf.Network != "passt, host loopback closed" {
		t.Fatalf("host confinement %+v", conf)
	}
	t.Logf("host confinement: %+v", *conf)
	importGuest(t, c)

	// The API answers plain HTTP on its TLS port with "400 Bad Request":
	// any answer at all means the guest reached it.
	script := fmt.Sprintf(`
echo "probe outside: $(timeout 10 wget -q -O - http://%[1]s:%[2]d/ 2>&1)"
echo "probe gateway: $(timeout 5 wget -q -O - http://10.0.2.2:%[3]d/ 2>&1)"
echo 1 >/proc/sys/net/ipv4/conf/all/route_localnet
echo 1 >/proc/sys/net/ipv4/conf/eth0/route_localnet
ip addr del 127.0.0.1/8 dev lo
ip route add 127.0.0.1/32 via 10.0.2.2 dev eth0 src 10.0.2.15
echo "probe crafted: $(timeout 5 wget -q -O - http://127.0.0.1:%[3]d/ 2>&1)"
`, addr, outPort, s.port)
	req := guestVM("tenant-nat")
	req.NICs = []api.NIC{{}}
	req.Boot.Cmdline = guest.RunCmdline(script)
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	log := waitConsole(t, c, "tenant-nat", guest.RunExitPrefix, 1)
	var probes []string
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "probe ") {
			probes = append(probes, strings.TrimRight(line, "\r"))
		}
	}
	t.Logf("guest probes:\n%s", strings.Join(probes, "\n"))
	if !strings.Contains(log, "probe outside: outside-ok") || outHits.Load() == 0 {
		t.Errorf("the guest did not reach %s:%d: outbound access is broken", addr, outPort)
	}
	// What the API's TLS port answers a plain request with. Not any HTTP
	// answer: where this host is itself a VM on a user-mode network, the
	// guest's 10.0.2.2 is that network's gateway, another machine, which
	// may serve the port asked (seen: a 404).
	for _, leak := range []string{"400 Bad Request", "HTTPS server"} {
		if strings.Contains(log, leak) {
			t.Errorf("the guest reached the API on the host's loopback (its console holds %q)", leak)
		}
	}

	vm, err := c.GetVM(ctx, "tenant-nat")
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(vm.Status.PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	u, err := exec.Command("id", "-u", "polyvisor-qemu").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(status, []byte("\nUid:\t"+strings.TrimSpace(string(u))+"\t")) {
		t.Errorf("the vm's qemu (pid %d) does not run as polyvisor-qemu:\n%s", vm.Status.PID, status)
	}
}
