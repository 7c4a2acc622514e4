package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// requireConfinable skips a test that needs the agent's privileges (a user
// switch, cgroups, a firewall rule) when the tests do not run as root, or
// one whose host lacks passt; where peers are required it fails them
// (package peer).
func requireConfinable(t *testing.T) {
	t.Helper()
	peer.Root(t, "confining QEMU")
	peer.Binary(t, "passt", "apt-get install passt")
}

// countingServer serves body over HTTP on ln and counts its requests.
func countingServer(t *testing.T, ln net.Listener, body string) *atomic.Int64 {
	t.Helper()
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &hits
}

// hostAddress is an IPv4 address of this host that is not a loopback one.
func hostAddress(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && ip.IP.IsGlobalUnicast() {
				return ip.IP.String()
			}
		}
	}
	peer.Missing(t, "this host has no non-loopback IPv4 address for the guest to reach")
	return ""
}

func randomWord(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestUserNICCannotReachHostLoopback runs a guest with a user-mode NIC on
// a host with an HTTP service bound to 127.0.0.1 only and another on a
// non-loopback address. The guest asks for the loopback service through
// its gateway address (QEMU's slirp maps 10.0.2.2 to the host's 127.0.0.1)
// and through a route of its own that sends 127.0.0.1 out of its NIC; the
// loopback service must never see a request, while the other service is
// reached: outbound access works.
func TestUserNICCannotReachHostLoopback(t *testing.T) {
	guest.RequireQEMU(t)
	requireConfinable(t)
	g := guest.Build(t)
	guest.RequireRun(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	loLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	secret := "loopback-secret-" + randomWord(t)
	loHits := countingServer(t, loLn, secret)
	loPort := loLn.Addr().(*net.TCPAddr).Port

	addr := hostAddress(t)
	outLn, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	open := "outside-ok-" + randomWord(t)
	outHits := countingServer(t, outLn, open)
	outPort := outLn.Addr().(*net.TCPAddr).Port

	script := fmt.Sprintf(`
echo "probe outside: $(timeout 10 wget -q -O - http://%[1]s:%[2]d/ 2>&1)"
echo "probe gateway: $(timeout 5 wget -q -O - http://10.0.2.2:%[3]d/ 2>&1)"
echo 1 >/proc/sys/net/ipv4/conf/all/route_localnet
echo 1 >/proc/sys/net/ipv4/conf/eth0/route_localnet
ip addr del 127.0.0.1/8 dev lo
ip route add 127.0.0.1/32 via 10.0.2.2 dev eth0 src 10.0.2.15
echo "probe crafted: $(ip route get 127.0.0.1) $(timeout 5 wget -q -O - http://127.0.0.1:%[3]d/ 2>&1)"
`, addr, outPort, loPort)

	d := newTestDriver(t, t.TempDir())
	defer d.Close()
	uid := "5e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
	cfg := guestConfig(g, "nat", uid)
	cfg.Cmdline = guest.RunCmdline(script)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	m := waitLog(t, d, h, regexp.MustCompile(regexp.QuoteMeta(guest.RunExitPrefix)+`(\S+)`), 2*time.Minute)
	b, _ := d.ConsoleLog(ctx, h, 0)
	out := string(b)
	t.Logf("guest script exited %s; console:\n%s", m[1], grepLines(out, "polyvisor-guest: dhcp", "probe "))
	if !strings.Contains(out, guest.DHCPPrefix+"eth0 "+userNetAddr+" gateway "+userNetGateway) {
		t.Errorf("the guest got no DHCP lease of %s with gateway %s", userNetAddr, userNetGateway)
	}
	if !strings.Contains(out, "probe outside: "+open) || outHits.Load() == 0 {
		t.Errorf("the guest did not reach %s:%d (outbound access is broken): %d requests", addr, outPort, outHits.Load())
	}
	if !strings.Contains(out, "probe crafted: 127.0.0.1 via 10.0.2.2 dev eth0") {
		t.Errorf("the guest did not route 127.0.0.1 out of its NIC: the crafted probe proves nothing")
	}
	if n := loHits.Load(); n != 0 || strings.Contains(out, secret) {
		t.Errorf("the guest reached the host's loopback-only service: %d requests, secret on the console: %v", n, strings.Contains(out, secret))
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatal(err)
	}
}

// grepLines keeps the lines of s that contain one of subs.
func grepLines(s string, subs ...string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				keep = append(keep, strings.TrimRight(line, "\r"))
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}

// procStatus reads fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestQEMUConfinedRealQEMU starts a VM with a NIC and checks what confines
// its processes: QEMU runs as the unprivileged user under its seccomp
// filter, chrooted into an empty directory, unreadable to other processes
// of that user; QEMU and passt share the VM's cgroup with limits from the
// VM's size; the host's status says so. The VM then outlives its driver,
// is re-attached by a new one, and its cgroup goes away with it.
func TestQEMUConfinedRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	requireConfinable(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stateDir := t.TempDir()
	d := newTestDriver(t, stateDir)
	uid := "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
	cfg := guestConfig(g, "jailed", uid)
	cfg.VCPUs, cfg.MemoryMiB = 1, 200
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), time.Minute)

	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("confinement: %+v", info.Confinement)
	c := info.Confinement
	if c.User != DefaultUser || c.Sandbox != "seccomp" || c.Network != "passt, host loopback closed" {
		t.Errorf("Info().Confinement = %+v", c)
	}
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Fatal(err)
	}

	st := procStatus(t, h.PID)
	if f := strings.Fields(st["Uid"]); len(f) != 4 || f[0] != u.Uid || f[1] != u.Uid || f[2] != u.Uid || f[3] != u.Uid {
		t.Errorf("qemu runs with uids %q, want all %s (%s)", st["Uid"], u.Uid, DefaultUser)
	}
	if st["CapEff"] != "0000000000000000" || st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" {
		t.Errorf("qemu: CapEff %s, Seccomp %s, NoNewPrivs %s; want no capabilities under a seccomp filter", st["CapEff"], st["Seccomp"], st["NoNewPrivs"])
	}
	if root, err := os.Readlink("/proc/" + strconv.Itoa(h.PID) + "/root"); err != nil || root != filepath.Join(stateDir, emptyDirName) {
		t.Errorf("qemu's root is %q (%v), want the empty %s", root, err, filepath.Join(stateDir, emptyDirName))
	}
	// Another process of the same user cannot read QEMU's memory.
	peek := exec.Command("head", "-c", "1", "/proc/"+strconv.Itoa(h.PID)+"/environ")
	peek.SysProcAttr = credentialOf(t, u)
	if out, err := peek.CombinedOutput(); err == nil {
		t.Errorf("a process of %s read qemu's environment: %q", DefaultUser, out)
	}

	cgPaths := strings.Split(h.Extra[extraCgroup], "\n")
	if h.Extra[extraCgroup] == "" {
		t.Fatalf("the vm has no cgroup (confinement notes: %q)", c.Notes)
	}
	want := limitsFor(cfg, d.Accel())
	checked := map[string]bool{}
	for _, dir := range cgPaths {
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		pids := strings.Fields(string(procs))
		if len(pids) != 2 || !slices.Contains(pids, strconv.Itoa(h.PID)) {
			t.Errorf("cgroup %s holds %q, want qemu (%d) and its passt", dir, pids, h.PID)
		}
		for _, p := range pids {
			pid, _ := strconv.Atoi(p)
			if s := procStatus(t, pid); strings.Fields(s["Uid"])[0] != u.Uid {
				t.Errorf("process %d (%s) in the vm's cgroup runs as uid %s", pid, s["Name"], s["Uid"])
			}
		}
		for _, l := range []struct {
			kind, file, want string
		}{
			{"memory", "memory.max", strconv.FormatInt(want.MemoryBytes, 10)},
			{"memory", "memory.limit_in_bytes", strconv.FormatInt(want.MemoryBytes, 10)},
			{"tasks", "pids.max", strconv.FormatInt(want.Tasks, 10)},
			{"cpu", "cpu.max", fmt.Sprintf("%d %d", want.CPUQuotaUs, want.CPUPeriodUs)},
			{"cpu", "cpu.cfs_quota_us", strconv.FormatInt(want.CPUQuotaUs, 10)},
		} {
			b, err := os.ReadFile(filepath.Join(dir, l.file))
			if err != nil {
				continue // another cgroup version's or controller's file
			}
			checked[l.kind] = true
			if got := strings.TrimSpace(string(b)); got != l.want {
				t.Errorf("%s/%s = %s, want %s", dir, l.file, got, l.want)
			}
		}
	}
	for _, dir := range cgPaths {
		for _, f := range []string{"memory.current", "memory.peak", "memory.usage_in_bytes", "memory.max_usage_in_bytes", "pids.current", "cpu.stat"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				t.Logf("%s: %s", f, strings.TrimSpace(string(b)))
			}
		}
	}
	for _, kind := range []string{"memory", "tasks", "cpu"} {
		if !checked[kind] {
			t.Errorf("the vm's cgroup %q has no %s limit", cgPaths, kind)
		}
	}

	// The agent goes away; the VM stays confined and is re-attached.
	d.Close()
	d2 := newTestDriver(t, stateDir)
	defer d2.Close()
	h2, err := LoadHandle(h.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d2.Recover(ctx, h2); err != nil || s.State != hypervisor.StateRunning || s.PID != h.PID {
		t.Fatalf("Recover = %+v, %v; want running pid %d", s, err, h.PID)
	}
	if err := d2.Stop(ctx, h2, hypervisor.StopOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, dir := range cgPaths {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s is still there after Stop: %v", dir, err)
		}
	}
	if err := d2.Destroy(ctx, h2, false); err != nil {
		t.Fatal(err)
	}
}

// credentialOf runs a command as u.
func credentialOf(t *testing.T, u *user.User) *syscall.SysProcAttr {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %s: uid %s gid %s", u.Username, u.Uid, u.Gid)
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}
