package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// netns is a network namespace with a veth link to the root namespace.
type netns struct {
	name, hostIP, nsIP string
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	peer.Root(t, "the second-host test's network namespace")
	peer.Binary(t, "ip", "apt-get install iproute2")
	id := strconv.Itoa(os.Getpid() % 200)
	n := &netns{name: "pv-e2e-" + id, hostIP: "10.213." + id + ".1", nsIP: "10.213." + id + ".2"}
	veth, peer := "pve"+id+"a", "pve"+id+"b"
	exec.Command("ip", "netns", "del", n.name).Run()
	exec.Command("ip", "link", "del", veth).Run()
	sh(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", n.name).Run()
		exec.Command("ip", "link", "del", veth).Run()
	})
	sh(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
	sh(t, "ip", "link", "set", peer, "netns", n.name)
	sh(t, "ip", "addr", "add", n.hostIP+"/24", "dev", veth)
	sh(t, "ip", "link", "set", veth, "up")
	sh(t, "ip", "netns", "exec", n.name, "ip", "addr", "add", n.nsIP+"/24", "dev", peer)
	sh(t, "ip", "netns", "exec", n.name, "ip", "link", "set", peer, "up")
	sh(t, "ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up")
	return n
}

// agentProc is a `polyvisor agent` in a network namespace.
type agentProc struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

func startAgent(t *testing.T, ns *netns, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{log: &bytes.Buffer{}, done: make(chan struct{})}
	a.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name, binary, "agent", "--log-level", "debug"}, args...)...)
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
			t.Logf("agent log:\n%s", a.log)
		}
	})
	return a
}

// twoHosts is a server with its built-in agent (host "local") and a
// second agent (host "host2") in a network namespace, joined over TLS with
// a join token; the test guest's images are imported.
type twoHosts struct {
	srv       *serverProc
	c         *client.Client // the server's admin client
	ns        *netns
	agent     *agentProc // host2's agent
	agentDir  string     // its data dir
	joinToken string     // the token it joined with
}

// startTwoHosts starts the server, whose hosts are judged not ready after
// heartbeatTimeout without a heartbeat and whose built-in agent takes
// live migrations from host2, imports the guest and starts host2's agent,
// without waiting for it to be ready (waitHost2 does).
func startTwoHosts(t *testing.T, heartbeatTimeout string) *twoHosts {
	t.Helper()
	ns := newNetns(t)
	port := freePort(t)
	srv := startServerOn(t, t.TempDir(), port, "--listen", "0.0.0.0:"+strconv.Itoa(port),
		"--advertise-address", ns.hostIP, "--agent-address", ns.hostIP, "--heartbeat-timeout", heartbeatTimeout)
	h := &twoHosts{srv: srv, c: srv.c, ns: ns, agentDir: t.TempDir()}
	importGuest(t, h.c)
	jt, err := h.c.CreateJoinToken(context.Background(), api.JoinTokenCreate{TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	h.joinToken = jt.Token
	t.Cleanup(func() { killQEMUs(h.agentDir) })
	url := fmt.Sprintf("https://%s:%d", ns.hostIP, srv.port)
	h.agent = startAgent(t, ns, "--heartbeat-interval", "500ms", "--server", url, "--join-token", jt.Token,
		"--data-dir", h.agentDir, "--name", "host2", "--address", ns.nsIP)
	return h
}

// waitHost2 waits until host2 has joined and is ready.
func (h *twoHosts) waitHost2(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "host2 joins and is ready", func() error {
		hs, err := h.c.GetHost(context.Background(), "host2")
		if err != nil {
			return err
		}
		if hs.Status.State != api.HostReady {
			return fmt.Errorf("host2 is %s", hs.Status.State)
		}
		return nil
	})
}

// hostCredentialsClient is a client with the host token an agent saved.
func hostCredentialsClient(t *testing.T, agentDir string, srv *serverProc) *client.Client {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(agentDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var creds struct {
		Token  string `json:"token"`
		CACert string `json:"caCert"`
	}
	if err := json.Unmarshal(raw, &creds); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(agentDir, "credentials.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials.json mode %v, want 0600", fi.Mode().Perm())
	}
	c, err := client.New(client.Config{URL: fmt.Sprintf("https://127.0.0.1:%d", srv.port), Token: creds.Token, CACert: []byte(creds.CACert)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestSecondHost: an agent in its own network namespace joins over TLS
// with a join token; a VM pinned to it runs there and its console reaches
// the API through the agent. Killing that agent with SIGKILL leaves the VM
// running, and the restarted agent adopts it.
func TestSecondHost(t *testing.T) {
	requireQEMU(t)
	hosts := startTwoHosts(t, "3s")
	srv, c, ns, a, agentDir := hosts.srv, hosts.c, hosts.ns, hosts.agent, hosts.agentDir
	ctx := context.Background()
	hosts.waitHost2(t)

	// The join token was single use.
	if _, err := c.Register(ctx, api.AgentRegister{JoinToken: hosts.joinToken, Host: "host3"}); client.HTTPStatus(err) != 401 {
		t.Fatalf("reusing a join token: %v, want 401", err)
	}

	// A host sees only what is its own.
	hostClient := hostCredentialsClient(t, agentDir, srv)
	local := guestVM("on-local")
	local.Host, local.PowerState = "local", api.PowerStopped
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, local, client.CreateOptions{})))
	if _, err := hostClient.ListVMs(ctx, api.ListOptions{}); client.HTTPStatus(err) != 403 {
		t.Errorf("host2 listing vms: %v, want 403", err)
	}
	if _, err := hostClient.PutVMStatus(ctx, "default/on-local", api.VMStatus{PowerState: api.PowerRunning}); client.HTTPStatus(err) != 404 {
		t.Errorf("host2 reporting another host's vm: %v, want 404", err)
	}
	if _, err := hostClient.PutHostStatus(ctx, "local", api.HostStatus{CPUs: 1, MemoryMiB: 1}); client.HTTPStatus(err) != 403 {
		t.Errorf("host2 reporting for host local: %v, want 403", err)
	}
	if _, err := hostClient.CreateJoinToken(ctx, api.JoinTokenCreate{}); client.HTTPStatus(err) != 403 {
		t.Errorf("host2 minting a join token: %v, want 403", err)
	}
	if _, err := hostClient.AgentImage(ctx, "default/"+imgDisk); !client.IsNotFound(err) {
		t.Errorf("host2 reading an image none of its vms uses: %v, want 404", err)
	}

	req := guestVM("remote")
	req.Host = "host2"
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	vm, err := c.GetVM(ctx, "remote")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.Host != "host2" || vm.Status.PID == 0 {
		t.Fatalf("remote vm: host %s pid %d", vm.Spec.Host, vm.Status.PID)
	}
	if got, want := netnsInode(t, fmt.Sprintf("/proc/%d/ns/net", vm.Status.PID)), netnsInode(t, filepath.Join("/run/netns", ns.name)); got != want {
		t.Fatalf("qemu %d runs in netns inode %d, want host2's %d", vm.Status.PID, got, want)
	}
	if !strings.HasPrefix(vm.Status.Console.Serial, agentDir) {
		t.Fatalf("console %q is not under host2's data dir %s", vm.Status.Console.Serial, agentDir)
	}
	waitConsole(t, c, "remote", marker, 1)
	if _, err := hostClient.AgentImage(ctx, "default/"+imgDisk); err != nil {
		t.Errorf("host2 reading an image its vm uses: %v", err)
	}

	// kill -9 the agent: the VM keeps running; the restarted agent adopts it.
	pid := vm.Status.PID
	_ = a.cmd.Process.Kill()
	<-a.done
	time.Sleep(300 * time.Millisecond)
	if !alive(pid) {
		t.Fatalf("qemu %d died with the agent", pid)
	}
	// The dead host is noticed: not ready, its VM's state unknown.
	eventually(t, 15*time.Second, "host2 is marked not ready", func() error {
		h, err := c.GetHost(ctx, "host2")
		if err != nil {
			return err
		}
		vm, err := c.GetVM(ctx, "remote")
		if err != nil {
			return err
		}
		if h.Status.State != api.HostNotReady || vm.Status.PowerState != api.PowerUnknown {
			return fmt.Errorf("host %s, vm %s", h.Status.State, vm.Status.PowerState)
		}
		return nil
	})
	startAgent(t, ns, "--heartbeat-interval", "500ms", "--data-dir", agentDir)
	eventually(t, 30*time.Second, "the restarted agent reports the vm", func() error {
		vm, err := c.GetVM(ctx, "remote")
		if err != nil {
			return err
		}
		if vm.Status.PID != pid || vm.Status.PowerState != api.PowerRunning {
			return fmt.Errorf("pid %d state %s", vm.Status.PID, vm.Status.PowerState)
		}
		if h, err := c.GetHost(ctx, "host2"); err != nil || h.Status.State != api.HostReady {
			return fmt.Errorf("host2 not ready again: %v", err)
		}
		return nil
	})
	if pids := qemuPIDs(vm.UID); len(pids) != 1 {
		t.Fatalf("qemu processes for the vm: %v, want one", pids)
	}
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, "remote", false)))
	if alive(pid) {
		t.Fatalf("qemu %d runs after delete", pid)
	}
}
