package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// A control plane of three servers, each in its own network namespace on
// one bridge, with an embedded etcd member each; kept lean for machines
// with two cores: short election and lease timeouts, no built-in agents,
// simulated hosts. Each cluster has its own bridge, namespaces and
// addresses, and boots no guest: the cluster tests run in parallel with
// each other (after the package's other tests, two at a time on two
// cores).

// Timeouts of the servers under test (the benchmark sets the defaults).
var (
	clusterLeaderTTL    = "2s"
	clusterEtcdElection = "500ms"
	clusterHeartbeatTO  = "5s"
)

const (
	clusterSimHeartbeat    = "1s"
	clusterAPIPort         = 7443
	clusterPeerPort        = 7444
	clusterMetricsPortBase = 9100
)

// syncBuffer is a bytes.Buffer a process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clusterNet is a bridge in the root namespace and one namespace per
// server, each linked to the bridge by a veth.
type clusterNet struct {
	id     string
	bridge string
	hostIP string
	ns     []string // namespace of server i
	ip     []string // its address
	link   []string // its end of the veth, inside its namespace
}

func newClusterNet(t *testing.T, n int) *clusterNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the cluster tests make network namespaces and need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed (scripts/test.sh installs it)")
	}
	id := claimClusterBridge(t)
	cn := &clusterNet{id: id, bridge: "pvcb" + id, hostIP: "10.214." + id + ".1"}
	t.Cleanup(func() { exec.Command("ip", "link", "del", cn.bridge).Run() })
	sh(t, "ip", "addr", "add", cn.hostIP+"/24", "dev", cn.bridge)
	sh(t, "ip", "link", "set", cn.bridge, "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("pv-c%s-%d", id, i)
		ip := fmt.Sprintf("10.214.%s.%d", id, 10+i)
		outer, inner := fmt.Sprintf("pvc%s_%da", id, i), fmt.Sprintf("pvc%s_%db", id, i)
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", outer).Run()
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			exec.Command("ip", "netns", "del", ns).Run()
			exec.Command("ip", "link", "del", outer).Run()
		})
		sh(t, "ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
		sh(t, "ip", "link", "set", inner, "netns", ns)
		sh(t, "ip", "link", "set", outer, "master", cn.bridge)
		sh(t, "ip", "link", "set", outer, "up")
		sh(t, "ip", "netns", "exec", ns, "ip", "addr", "add", ip+"/24", "dev", inner)
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		cn.ns, cn.ip, cn.link = append(cn.ns, ns), append(cn.ip, ip), append(cn.link, inner)
	}
	return cn
}

// clusterNetSeq numbers the networks this process asks for.
var clusterNetSeq atomic.Int32

// claimClusterBridge makes the bridge of a new cluster network and returns
// the network's id (20 to 219: its bridge, namespaces, veths and /24 are
// named for it). Cluster tests run in parallel, and other test processes
// beside this one: an id is claimed by creating its bridge, which fails
// when another test holds the id; the search starts at one this process
// likely has to itself.
func claimClusterBridge(t *testing.T) string {
	t.Helper()
	for range 200 {
		id := strconv.Itoa((os.Getpid()+int(clusterNetSeq.Add(1)))%200 + 20)
		out, err := exec.Command("ip", "link", "add", "pvcb"+id, "type", "bridge").CombinedOutput()
		if err == nil {
			return id
		}
		if !strings.Contains(string(out), "exists") {
			t.Fatalf("ip link add pvcb%s type bridge: %v: %s", id, err, out)
		}
	}
	t.Fatal("every cluster network id is taken (bridges pvcb20 to pvcb219)")
	return ""
}

// partition cuts server i (from 0) off the network; heal brings it back.
func (cn *clusterNet) partition(t *testing.T, i int) {
	sh(t, "ip", "netns", "exec", cn.ns[i], "ip", "link", "set", cn.link[i], "down")
}

func (cn *clusterNet) heal(t *testing.T, i int) {
	sh(t, "ip", "netns", "exec", cn.ns[i], "ip", "link", "set", cn.link[i], "up")
}

// clusterServer is one `polyvisor server` in its namespace.
type clusterServer struct {
	t       *testing.T
	name    string
	ns, ip  string
	dataDir string
	args    []string // beyond the common ones: --join on its first start
	etcd    string   // the external etcd's URL; empty: an embedded member
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	logs    []string // the logs of its earlier runs
}

// url is its API's URL.
func (s *clusterServer) url() string { return fmt.Sprintf("https://%s:%d", s.ip, clusterAPIPort) }

// socket is its unix socket: reachable from the test's namespace even
// while the server's network is cut.
func (s *clusterServer) socket() string { return filepath.Join(s.dataDir, "pv.sock") }

func (s *clusterServer) start() {
	t := s.t
	t.Helper()
	args := append([]string{"netns", "exec", s.ns, binary, "server",
		"--data-dir", s.dataDir, "--name", s.name, "--socket", s.socket(),
		"--listen", fmt.Sprintf("0.0.0.0:%d", clusterAPIPort), "--advertise-address", s.ip, "--no-agent",
		"--leader-ttl", clusterLeaderTTL, "--heartbeat-timeout", clusterHeartbeatTO,
		"--rate-limit", "0", "--address-rate-limit", "0", "--log-level", "debug", "--log-format", "json"}, s.args...)
	if s.etcd != "" {
		args = append(args, "--etcd-endpoints", s.etcd)
	} else {
		args = append(args, "--peer-listen", fmt.Sprintf(":%d", clusterPeerPort), "--etcd-election-timeout", clusterEtcdElection)
	}
	s.cmd = exec.Command("ip", args...)
	s.log = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting server %s: %v", s.name, err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	c := s.local()
	eventually(t, 60*time.Second, "server "+s.name+" answers", func() error {
		select {
		case <-s.done:
			t.Fatalf("server %s exited early:\n%s", s.name, s.log)
		default:
		}
		_, err := c.ClusterStatus(context.Background())
		return err
	})
	s.args = nil // --join is for the first start only
}

// local is a client of its unix socket, as local root.
func (s *clusterServer) local() *client.Client {
	c, err := client.New(client.Config{URL: "unix://" + s.socket()})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// tls is a client of its API over TLS, with token (the admin token when
// empty), trusting the CA of its data dir.
func (s *clusterServer) tls(token string) *client.Client {
	if token == "" {
		token = readToken(s.t, filepath.Join(s.dataDir, "admin.token"))
	}
	c, err := client.New(client.Config{URL: s.url(), Token: token, CAFile: filepath.Join(s.dataDir, "pki", "ca.crt"), DialTimeout: 2 * time.Second})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stop ends the server with SIGTERM; kill9 with SIGKILL.
func (s *clusterServer) stop()  { s.signal(syscall.SIGTERM, 20*time.Second) }
func (s *clusterServer) kill9() { s.signal(syscall.SIGKILL, 10*time.Second) }

func (s *clusterServer) signal(sig syscall.Signal, wait time.Duration) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(wait):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.logs = append(s.logs, s.log.String())
	s.cmd = nil
}

func (s *clusterServer) running() bool { return s.cmd != nil }

// allLogs is the logs of every run of the server.
func (s *clusterServer) allLogs() string {
	out := strings.Join(s.logs, "\n")
	if s.cmd != nil {
		out += "\n" + s.log.String()
	}
	return out
}

// logLine is one line of a server's JSON log.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	Term int64     `json:"term"`
	Srv  string    `json:"server"`
}

// logged returns the lines of the server's logs whose message is msg.
func (s *clusterServer) logged(msg string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(s.allLogs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// testCluster is the servers of one control plane.
type testCluster struct {
	t   *testing.T
	net *clusterNet
	s   []*clusterServer
}

// newTestCluster starts server s1, and the others joining it one by one
// with server join tokens.
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	cn := newClusterNet(t, n)
	tc := &testCluster{t: t, net: cn}
	for i := 0; i < n; i++ {
		s := &clusterServer{t: t, name: fmt.Sprintf("s%d", i+1), ns: cn.ns[i], ip: cn.ip[i], dataDir: t.TempDir()}
		tc.s = append(tc.s, s)
		t.Cleanup(func() {
			s.stop()
			if t.Failed() {
				t.Logf("server %s log (last 200 lines):\n%s", s.name, lastLines(s.allLogs(), 200))
			}
		})
		if i > 0 {
			tok, err := tc.s[0].local().CreateServerJoinToken(context.Background(), api.JoinTokenCreate{})
			if err != nil {
				t.Fatal(err)
			}
			s.args = []string{"--join", tc.s[0].url(), "--join-token", tok.Token}
		}
		s.start()
	}
	eventually(t, 30*time.Second, "every server is listed, up, with a voting member", func() error {
		list, err := tc.s[0].local().ListServers(context.Background())
		if err != nil {
			return err
		}
		if len(list) != n {
			return fmt.Errorf("%d servers listed", len(list))
		}
		for _, sv := range list {
			if !sv.Healthy || sv.Learner || sv.MemberID == "" {
				return fmt.Errorf("server %+v", sv)
			}
		}
		return nil
	})
	return tc
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// leader returns the index of the server that leads the controllers, as
// server from sees it (-1 while none does).
func (tc *testCluster) leader(from int) (int, *api.ClusterServer, error) {
	st, err := tc.s[from].local().ClusterStatus(context.Background())
	if err != nil {
		return -1, nil, err
	}
	// A term shows its start once the leader proclaimed it, a moment after
	// it won: until then it is not counted.
	if st.Leader == nil || st.Leader.LeaderSince.IsZero() {
		return -1, nil, nil
	}
	for i, s := range tc.s {
		if s.name == st.Leader.Name {
			return i, st.Leader, nil
		}
	}
	return -1, nil, fmt.Errorf("leader %q is none of the servers", st.Leader.Name)
}

// urls are the servers' API URLs.
func (tc *testCluster) urls() []string {
	var out []string
	for _, s := range tc.s {
		out = append(out, s.url())
	}
	return out
}

// simFleet is `polyvisor agent --simulate N` against the cluster's
// servers.
type simFleet struct {
	cmd   *exec.Cmd
	log   *syncBuffer
	done  chan struct{}
	stats string
}

// startFleet joins n simulated hosts (instant hypervisor) to the servers.
func (tc *testCluster) startFleet(n int) *simFleet {
	t := tc.t
	t.Helper()
	dir := t.TempDir()
	var toks []string
	for range n {
		jt, err := tc.s[0].local().CreateJoinToken(context.Background(), api.JoinTokenCreate{TTLSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, jt.Token)
	}
	tokFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokFile, []byte(strings.Join(toks, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &simFleet{log: &syncBuffer{}, done: make(chan struct{}), stats: filepath.Join(dir, "stats.json")}
	f.cmd = exec.Command(binary, "agent", "--simulate", strconv.Itoa(n), "--server", strings.Join(tc.urls(), ","),
		"--join-token-file", tokFile, "--data-dir", dir, "--simulate-profile", "instant",
		"--simulate-stats-file", f.stats, "--simulate-cpus", "256", "--heartbeat-interval", clusterSimHeartbeat, "--log-level", "info")
	f.cmd.Stdout, f.cmd.Stderr = f.log, f.log
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			_ = f.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("simulated hosts' log (last 100 lines):\n%s", lastLines(f.log.String(), 100))
		}
	})
	eventually(t, 60*time.Second, "the simulated hosts are ready", func() error {
		hosts, err := tc.s[0].local().ListHosts(context.Background(), api.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, h := range hosts.Items {
			if h.Status.State == api.HostReady {
				ready++
			}
		}
		if ready < n {
			return fmt.Errorf("%d of %d ready", ready, n)
		}
		return nil
	})
	return f
}

// fleetStats reads the fleet's counters.
type fleetStats struct {
	VMs     int   `json:"vms"`
	Running int   `json:"running"`
	Starts  int64 `json:"starts"`
}

func (f *simFleet) readStats(t *testing.T) fleetStats {
	t.Helper()
	var st fleetStats
	b, err := os.ReadFile(f.stats)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// uploadKernel uploads the tiny image the simulated VMs boot from.
func uploadKernel(t *testing.T, c *client.Client) *api.Image {
	t.Helper()
	ctx := context.Background()
	op, err := c.UploadImage(ctx, "k", api.ImageKernel, strings.NewReader("a simulated kernel"), -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if done, err := c.WaitOperation(ctx, op.ID, nil); err != nil || done.Status != api.OpSucceeded {
		t.Fatalf("uploading the kernel: %v %+v", err, done)
	}
	img, err := c.GetImage(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// simVM is a create request a simulated host can run.
func simVM(name string) api.VMCreate {
	return api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 256, Boot: api.Boot{Kernel: "k"}}
}
