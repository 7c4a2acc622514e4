package simagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/server"
)

// testServer is a real Polyvisor server (embedded etcd, TLS API, unix
// socket) that can be stopped and started again on the same data dir and
// port, as an operator restarts it.
type testServer struct {
	t      *testing.T
	dir    string
	listen string
	srv    *server.Server
	local  *client.Client // local root, over the unix socket
	url    string
}

func startTestServer(t *testing.T) *testServer {
	ts := &testServer{t: t, dir: t.TempDir(), listen: "127.0.0.1:0"}
	ts.start()
	ts.listen = ts.srv.Addr().String()
	ts.url = "https://" + ts.listen
	t.Cleanup(func() {
		if ts.srv != nil {
			ts.srv.Close()
		}
	})
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := server.Config{
		DataDir: ts.dir, Listen: ts.listen, Socket: filepath.Join(ts.dir, "pv.sock"),
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		HeartbeatTimeout: 2 * time.Second,
	}
	s, err := server.New(ctx, cfg)
	if err != nil {
		ts.t.Fatalf("starting the server: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		ts.t.Fatalf("starting the server: %v", err)
	}
	ts.srv = s
	if ts.local, err = client.New(client.Config{URL: "unix://" + cfg.Socket}); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testServer) stop() {
	ts.srv.Close()
	ts.srv = nil
}

// joinTokens makes n join tokens as an administrator does.
func (ts *testServer) joinTokens(ctx context.Context, n int) []string {
	ts.t.Helper()
	var out []string
	for range n {
		jt, err := ts.local.CreateJoinToken(ctx, api.JoinTokenCreate{})
		if err != nil {
			ts.t.Fatal(err)
		}
		out = append(out, jt.Token)
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runFleet runs a fleet until the test ends (or stop is called), failing
// the test if Run fails.
func runFleet(t *testing.T, cfg Config) (f *Fleet, stop func()) {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleet run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

func hostsReady(ctx context.Context, c *client.Client, names []string) error {
	for _, n := range names {
		h, err := c.GetHost(ctx, n)
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady {
			return fmt.Errorf("host %s is %s", n, h.Status.State)
		}
	}
	return nil
}

func vmRunning(ctx context.Context, c *client.Client, name string) (*api.VM, error) {
	vm, err := c.GetVM(ctx, name)
	if err != nil {
		return nil, err
	}
	if vm.Status.PowerState != api.PowerRunning || vm.Status.ObservedGeneration != vm.Generation {
		return vm, fmt.Errorf("vm %s is %s at generation %d of %d", name, vm.Status.PowerState, vm.Status.ObservedGeneration, vm.Generation)
	}
	return vm, nil
}

// machineVM finds a VM on the fleet's simulated machines.
func machineVM(f *Fleet, uid string) (host string, v hypervisortest.VM, ok bool) {
	for _, h := range f.hosts {
		if v, ok := h.machine.VM(uid); ok {
			return h.name, v, true
		}
	}
	return "", hypervisortest.VM{}, false
}

// A handful of simulated hosts against a real server: each joins with a
// token of its own from an address of its own, heartbeats (they stay
// ready over several heartbeat timeouts), gets VMs placed and converges
// them through the fake driver's latencies, reports them running, stops
// and deletes them as asked; the server restarts under them and they come
// back by themselves, the VMs left running, never made or started twice;
// a fleet started again from its saved credentials is the same hosts.
func TestFleetAgainstRealServer(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	const n = 4
	tokens := ts.joinTokens(ctx, n)
	_, fp := server.SplitJoinToken(tokens[0])
	joinTLS, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{
		Servers: []string{ts.url}, Hosts: n, Prefix: "sim-", StateFile: filepath.Join(dir, "hosts.json"),
		JoinTokens: tokens, JoinTLS: joinTLS, HeartbeatInterval: 300 * time.Millisecond,
		Timings: hypervisortest.Timings{
			Create: hypervisortest.Millis(5, 10, 20), Start: hypervisortest.Millis(10, 30),
			StopGraceful: hypervisortest.Fixed(20 * time.Millisecond), StopForced: hypervisortest.Fixed(5 * time.Millisecond),
			Destroy: hypervisortest.Fixed(time.Millisecond),
		},
		Usage:     hypervisortest.QEMUUsage(),
		StatsFile: filepath.Join(dir, "stats.json"),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	f, stop := runFleet(t, cfg)
	names := []string{"sim-00001", "sim-00002", "sim-00003", "sim-00004"}
	eventually(t, 20*time.Second, "the simulated hosts join and report ready", func() error {
		return hostsReady(ctx, ts.local, names)
	})
	addrs := map[string]bool{}
	for _, name := range names {
		h, err := ts.local.GetHost(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if h.Status.CPUs != 64 || h.Status.MemoryMiB != 256<<10 || !slices.Equal(h.Status.Drivers, []string{"fake"}) {
			t.Errorf("host %s reports %+v", name, h.Status)
		}
		if ip := net.ParseIP(h.Status.Address); ip == nil || !ip.IsLoopback() || ip.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("host %s reports address %q, want one of its own in 127/8", name, h.Status.Address)
		}
		addrs[h.Status.Address] = true
	}
	if len(addrs) != n {
		t.Errorf("hosts dial from %d distinct addresses, want %d", len(addrs), n)
	}

	// Three heartbeat timeouts: hosts that did not heartbeat would be
	// marked not ready.
	time.Sleep(6 * time.Second)
	if err := hostsReady(ctx, ts.local, names); err != nil {
		t.Fatalf("after three heartbeat timeouts: %v", err)
	}
	if st := f.Stats(); st.Heartbeats < 4*n || st.Registered != n || st.Heartbeating != n || st.Watching != n {
		t.Errorf("stats after the timeouts: %+v", st)
	}

	// VMs placed on the hosts converge and are reported running.
	for _, img := range []struct{ name, kind string }{{"k", api.ImageKernel}, {"i", api.ImageInitrd}} {
		op, err := ts.local.UploadImage(ctx, img.name, img.kind, bytes.NewReader([]byte("not really a "+img.kind)), -1, nil)
		if err != nil {
			t.Fatal(err)
		}
		waitOp(t, ts.local, op)
	}
	var vms []string
	for i := range 8 {
		name := "vm" + strconv.Itoa(i)
		op, err := ts.local.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: 2, MemoryMiB: 1024, Boot: api.Boot{Kernel: "k", Initrd: "i"}}, client.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitOp(t, ts.local, op)
		vms = append(vms, name)
	}
	uids := map[string]string{}
	onHosts := map[string]bool{}
	for _, name := range vms {
		vm, err := vmRunning(ctx, ts.local, name)
		if err != nil {
			t.Fatal(err)
		}
		if vm.Status.Driver != "fake" || vm.Status.PID == 0 {
			t.Errorf("vm %s status %+v", name, vm.Status)
		}
		host, mv, ok := machineVM(f, vm.UID)
		if !ok || host != vm.Spec.Host || mv.State != hypervisor.StateRunning || mv.Starts != 1 || mv.PID != vm.Status.PID {
			t.Errorf("vm %s placed on %s: on the machines %s %+v (found %v)", name, vm.Spec.Host, host, mv, ok)
		}
		uids[name] = vm.UID
		onHosts[vm.Spec.Host] = true
	}
	if len(onHosts) < 2 {
		t.Errorf("8 vms all went to %v: the scheduler spreads them over the hosts", onHosts)
	}
	if st := f.Stats(); st.VMs != 8 || st.Running != 8 || st.Reports < 8 {
		t.Errorf("stats with 8 running vms: %+v", st)
	}
	// Their usage, as the simulated machine reports it through the API.
	stats, err := ts.local.VMStats(ctx, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	if stats.CPUSeconds <= 0 || stats.MemoryBytes < hypervisortest.QEMUUsage().BaseBytes {
		t.Errorf("stats of vm0: %+v", stats)
	}

	waitOp(t, ts.local, mustOp(t)(ts.local.StopVM(ctx, "vm1", nil)))
	waitOp(t, ts.local, mustOp(t)(ts.local.DeleteVM(ctx, "vm2", false)))
	if _, mv, _ := machineVM(f, uids["vm1"]); mv.State != hypervisor.StateStopped {
		t.Errorf("stopped vm1 on its machine: %+v", mv)
	}
	if _, _, ok := machineVM(f, uids["vm2"]); ok {
		t.Error("deleted vm2 is still on its machine")
	}

	// The server restarts; the hosts reconnect by themselves.
	ts.stop()
	time.Sleep(time.Second)
	ts.start()
	eventually(t, 30*time.Second, "the hosts watch the restarted server", func() error {
		if st := f.Stats(); st.Watching != n {
			return fmt.Errorf("%d of %d hosts watch", st.Watching, n)
		}
		return nil
	})
	// The restarted server gives every host one heartbeat timeout before
	// it judges it: past it, hosts still ready have heartbeaten to it.
	time.Sleep(3500 * time.Millisecond)
	if err := hostsReady(ctx, ts.local, names); err != nil {
		t.Fatalf("a heartbeat timeout after the restart: %v", err)
	}
	op, err := ts.local.CreateVM(ctx, api.VMCreate{Name: "after", VCPUs: 1, MemoryMiB: 512, Boot: api.Boot{Kernel: "k"}}, client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOp(t, ts.local, op)
	if _, err := vmRunning(ctx, ts.local, "after"); err != nil {
		t.Fatal(err)
	}
	for _, name := range vms {
		switch name {
		case "vm1", "vm2":
			continue
		}
		if _, err := vmRunning(ctx, ts.local, name); err != nil {
			t.Errorf("after the restart: %v", err)
		}
		if _, mv, _ := machineVM(f, uids[name]); mv.Starts != 1 {
			t.Errorf("vm %s was started %d times", name, mv.Starts)
		}
	}

	// The fleet stops and starts again from its credentials: the same
	// hosts, no join token needed; their new (empty) machines make the VMs
	// again.
	stop()
	raw, err := os.ReadFile(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Hosts) != n || st.CACert == "" {
		t.Fatalf("saved credentials: %d hosts, CA %d bytes, err %v", len(st.Hosts), len(st.CACert), err)
	}
	cfg2 := cfg
	cfg2.JoinTokens, cfg2.JoinTLS = nil, nil
	f2, _ := runFleet(t, cfg2)
	eventually(t, 30*time.Second, "the fleet started again runs the vms", func() error {
		if err := hostsReady(ctx, ts.local, names); err != nil {
			return err
		}
		for _, name := range []string{"vm0", "after"} {
			vm, err := vmRunning(ctx, ts.local, name)
			if err != nil {
				return err
			}
			if _, mv, ok := machineVM(f2, vm.UID); !ok || mv.State != hypervisor.StateRunning {
				return fmt.Errorf("vm %s is not running on the new machines", name)
			}
		}
		return nil
	})
	if s := f2.Stats(); s.Registrations != 0 || s.Registered != n {
		t.Errorf("the fleet started again registered %d hosts, has %d", s.Registrations, s.Registered)
	}
}

func waitOp(t *testing.T, c *client.Client, op *api.Operation) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != api.OpSucceeded {
		t.Fatalf("%s of %s: %s %+v", done.Kind, done.Target.Name, done.Status, done.Error)
	}
}

func mustOp(t *testing.T) func(*api.Operation, error) *api.Operation {
	return func(op *api.Operation, err error) *api.Operation {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
}

// A host whose credentials the server refuses stops, as the real agent
// does, and the others go on.
func TestRevokedHostStops(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	tokens := ts.joinTokens(ctx, 2)
	_, fp := server.SplitJoinToken(tokens[0])
	joinTLS, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := runFleet(t, Config{
		Servers: []string{ts.url}, Hosts: 2, Prefix: "rv-", JoinTokens: tokens, JoinTLS: joinTLS,
		HeartbeatInterval: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	names := []string{"rv-00001", "rv-00002"}
	eventually(t, 20*time.Second, "the hosts join", func() error { return hostsReady(ctx, ts.local, names) })
	if _, err := ts.local.RevokeHost(ctx, "rv-00001"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the revoked host stops", func() error {
		if st := f.Stats(); st.Revoked != 1 || st.Watching != 1 {
			return fmt.Errorf("revoked %d, watching %d", st.Revoked, st.Watching)
		}
		return nil
	})
	beats := f.Stats().Heartbeats
	time.Sleep(time.Second)
	if st := f.Stats(); st.Heartbeats <= beats || st.Heartbeating != 1 {
		t.Errorf("the other host stopped heartbeating too: %+v", st)
	}
}

// New refuses what cannot run, naming what is wrong.
func TestNewChecksConfig(t *testing.T) {
	base := Config{Servers: []string{"https://127.0.0.1:1"}, Hosts: 2, JoinTokens: []string{"a", "b"}, JoinTLS: pinnedForTest(t)}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no hosts", func(c *Config) { c.Hosts = 0 }, "at least 1"},
		{"no server", func(c *Config) { c.Servers = nil }, "no server"},
		{"too few tokens", func(c *Config) { c.JoinTokens = c.JoinTokens[:1] }, "2 hosts have not joined and 1 join tokens"},
		{"bad prefix", func(c *Config) { c.Prefix = "Sim_" }, "not a valid host name"},
		{"no join TLS", func(c *Config) { c.JoinTLS = nil }, "no TLS configuration to join with"},
	} {
		cfg := base
		c.edit(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := New(base); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

func pinnedForTest(t *testing.T) *tls.Config {
	tc, err := pki.PinnedTLSConfig(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// Hosts dial from distinct loopback addresses, never 127.0.0.0/16, and
// only towards loopback servers by default.
func TestSourceAddresses(t *testing.T) {
	seen := map[string]bool{}
	for i := range 70000 {
		ip := sourceAddr(i)
		if !ip.IsLoopback() || ip[15] == 0 || ip[15] == 255 || (ip[13] == 0) {
			t.Fatalf("host %d: address %v", i, ip)
		}
		if seen[ip.String()] {
			t.Fatalf("host %d: address %v taken twice", i, ip)
		}
		seen[ip.String()] = true
	}
	if !loopbackServers([]string{"https://127.0.0.1:7443", "https://[::1]:7443"}) {
		t.Error("loopback servers not seen as such")
	}
	if loopbackServers([]string{"https://127.0.0.1:7443", "https://pv.example.com:7443"}) || loopbackServers(nil) {
		t.Error("a server by name seen as loopback")
	}
}

// The heartbeat timer spreads hosts over the interval and keeps each to
// its rate; a beat that cannot be sent in time is sent late, and its
// lateness is what the sender sees.
func TestBeatsKeepEachHostsRate(t *testing.T) {
	var mu sync.Mutex
	got := map[*simHost][]time.Time{}
	var late []time.Duration
	b := newBeats(100*time.Millisecond, func(_ context.Context, h *simHost, due time.Time) {
		mu.Lock()
		got[h] = append(got[h], time.Now())
		late = append(late, time.Since(due))
		mu.Unlock()
	})
	hosts := []*simHost{{name: "a"}, {name: "b"}, {name: "c"}, {name: "stopped"}}
	hosts[3].done.Store(true) // a stopped host is dropped from the timer
	now := time.Now()
	for i, h := range hosts {
		b.add(h, now.Add(time.Duration(i)*30*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b.run(ctx, 4)
	mu.Lock()
	defer mu.Unlock()
	for _, h := range hosts[:3] {
		// 10 beats due in the second; a slow machine may send the last
		// late or drop a missed one, never more.
		if n := len(got[h]); n < 8 || n > 11 {
			t.Errorf("host %s beat %d times in 1s at 100ms: %v", h.name, n, got[h])
		}
	}
	if n := len(got[hosts[3]]); n != 0 {
		t.Errorf("a stopped host beat %d times", n)
	}
	_ = late
}

// With shared request connections each host still joins, heartbeats and
// watches under its own name and token; its VMs converge and are reported
// through the pool.
func TestFleetSharedConnections(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	tokens := ts.joinTokens(ctx, 3)
	_, fp := server.SplitJoinToken(tokens[0])
	joinTLS, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := runFleet(t, Config{
		Servers: []string{ts.url}, Hosts: 3, Prefix: "sh-", JoinTokens: tokens, JoinTLS: joinTLS, SharedConns: 2,
		HeartbeatInterval: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	names := []string{"sh-00001", "sh-00002", "sh-00003"}
	eventually(t, 20*time.Second, "the hosts join", func() error { return hostsReady(ctx, ts.local, names) })
	time.Sleep(3 * time.Second) // past the heartbeat timeout
	if err := hostsReady(ctx, ts.local, names); err != nil {
		t.Fatalf("after a heartbeat timeout: %v", err)
	}
	op, err := ts.local.UploadImage(ctx, "k", api.ImageKernel, strings.NewReader("a kernel"), -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitOp(t, ts.local, op)
	for i := range 6 {
		op, err := ts.local.CreateVM(ctx, api.VMCreate{Name: "v" + strconv.Itoa(i), VCPUs: 1, MemoryMiB: 256, Boot: api.Boot{Kernel: "k"}}, client.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitOp(t, ts.local, op)
		vm, err := vmRunning(ctx, ts.local, "v"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		if host, _, ok := machineVM(f, vm.UID); !ok || host != vm.Spec.Host {
			t.Errorf("vm %s placed on %s runs on machine %q", vm.Name, vm.Spec.Host, host)
		}
	}
	if st := f.Stats(); st.Watching != 3 || st.Running != 6 {
		t.Errorf("stats: %+v", st)
	}
}

// A host has one heartbeat in flight at most, as the agent's loop: beats
// that fall due while one is answered slowly make one more, sent right
// after it, never a second request at the same time.
func TestHeartbeatsOfAHostNeverOverlap(t *testing.T) {
	var mu sync.Mutex
	inFlight, most, total := 0, 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		total++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"name":"h"}`)
	}))
	defer srv.Close()
	c, err := client.New(client.Config{URL: srv.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &Fleet{cfg: Config{HostCPUs: 1, HostMemoryMiB: 1}, c: newCounters(), warn: newWarner(log, time.Second), log: log}
	h := &simHost{f: f, name: "h", clients: []*client.Client{c}}
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.heartbeat(context.Background(), h, time.Now())
		}()
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most != 1 || total != 2 {
		t.Errorf("5 beats due within 50ms of a 200ms heartbeat: %d requests, at most %d at once; want 2, one at a time", total, most)
	}
	if n := f.c.heartbeats.Load(); n != 2 {
		t.Errorf("%d heartbeats counted, want 2", n)
	}
}
