package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// A revoked host's agent stops at once with a message that says how to
// join again, instead of retrying forever; its VMs keep running, and a new
// join token brings it back with the same VM adopted.
func TestRevokedHostStopsAndRejoins(t *testing.T) {
	requireQEMU(t)
	ns := newNetns(t)
	port := freePort(t)
	srv := startServerOn(t, t.TempDir(), port, "--listen", "0.0.0.0:"+strconv.Itoa(port), "--advertise-address", ns.hostIP, "--heartbeat-timeout", "3s")
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)
	url := fmt.Sprintf("https://%s:%d", ns.hostIP, srv.port)
	agentDir := t.TempDir()
	t.Cleanup(func() { killQEMUs(agentDir) })
	joinArgs := func() []string {
		jt, err := c.CreateJoinToken(ctx, api.JoinTokenCreate{TTLSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		return []string{"--heartbeat-interval", "500ms", "--server", url, "--join-token", jt.Token, "--data-dir", agentDir, "--name", "host2", "--address", ns.nsIP}
	}
	hostReady := func() error {
		h, err := c.GetHost(ctx, "host2")
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady {
			return fmt.Errorf("host2 is %s", h.Status.State)
		}
		return nil
	}
	a := startAgent(t, ns, joinArgs()...)
	eventually(t, 30*time.Second, "host2 joins", hostReady)
	req := guestVM("stays")
	req.Host = "host2"
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	waitConsole(t, c, "stays", marker, 1)
	vm, err := c.GetVM(ctx, "stays")
	if err != nil {
		t.Fatal(err)
	}
	pid := vm.Status.PID

	if _, err := srv.adminClient(t).RevokeHost(ctx, "host2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the revoked host's agent still runs:\n%s", a.log)
	}
	for _, want := range []string{"refuses this host's credentials", "join it again with 'polyvisor agent --server " + url + " --join-token T'"} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("the agent's last words lack %q:\n%s", want, a.log)
		}
	}
	if !alive(pid) {
		t.Fatalf("qemu %d died with the revoked agent", pid)
	}
	if _, err := os.Stat(filepath.Join(agentDir, "credentials.json.revoked")); err != nil {
		t.Errorf("the dead credentials were not set aside: %v", err)
	}

	// A new join token brings the host back, and its VM is adopted.
	startAgent(t, ns, joinArgs()...)
	eventually(t, 30*time.Second, "host2 joins again and adopts its vm", func() error {
		if err := hostReady(); err != nil {
			return err
		}
		vm, err := c.GetVM(ctx, "stays")
		if err != nil {
			return err
		}
		if vm.Status.PID != pid || vm.Status.PowerState != api.PowerRunning {
			return fmt.Errorf("vm pid %d (want %d), %s", vm.Status.PID, pid, vm.Status.PowerState)
		}
		return nil
	})
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, "stays", false)))
}
