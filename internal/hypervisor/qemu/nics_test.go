package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// testBridge is a bridge with persistent taps on it and dnsmasq handing
// out addresses, as the agent's dataplane makes for a network.
type testBridge struct {
	name, gw string
	taps     []string
}

func newTestBridge(t *testing.T, taps int) *testBridge {
	t.Helper()
	for _, b := range []string{"ip", "dnsmasq"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed (scripts/test.sh installs iproute2 and dnsmasq-base)", b)
		}
	}
	n := os.Getpid() % 200
	b := &testBridge{name: fmt.Sprintf("pvqtb%d", n), gw: fmt.Sprintf("10.76.%d.1", n)}
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "link", "del", b.name).Run()
	sh("ip", "link", "add", b.name, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", b.name).Run() })
	sh("ip", "addr", "add", b.gw+"/24", "dev", b.name)
	sh("ip", "link", "set", b.name, "up")
	for i := 0; i < taps; i++ {
		tap := fmt.Sprintf("pvqtt%d-%d", n, i)
		exec.Command("ip", "link", "del", tap).Run()
		sh("ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
		t.Cleanup(func() { exec.Command("ip", "link", "del", tap).Run() })
		sh("ip", "link", "set", tap, "master", b.name, "up")
		b.taps = append(b.taps, tap)
	}
	dir := t.TempDir()
	dns := exec.Command("dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--port=0", "--bind-interfaces",
		"--interface="+b.name, "--except-interface=lo", "--dhcp-range="+strings.TrimSuffix(b.gw, "1")+"10,"+strings.TrimSuffix(b.gw, "1")+"50,12h",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file=")
	if err := dns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Process.Kill(); dns.Wait() })
	return b
}

// TestTapNICsAndHotplugRealQEMU: a confined QEMU's NIC on a tap reaches
// the tap's bridge; a second NIC plugged in while the guest runs appears
// in the guest with its MAC, and goes again when unplugged; a tap the
// dataplane did not make is refused.
func TestTapNICsAndHotplugRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	requireConfinable(t)
	g := guest.Build(t)
	guest.RequireRun(t, g)
	br := newTestBridge(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	script := fmt.Sprintf(`
ping -c 2 -W 2 %s >/dev/null 2>&1 && echo "PV-PING ok" || echo "PV-PING failed"
echo PV-WAIT-PLUG
i=0; while [ ! -e /sys/class/net/eth1 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
echo "PV-PLUGGED $(cat /sys/class/net/eth1/address 2>/dev/null)"
i=0; while [ -e /sys/class/net/eth1 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/class/net/eth1 ] || echo PV-UNPLUGGED
`, br.gw)
	d := newTestDriver(t, t.TempDir())
	defer d.Close()
	uid := "7a1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
	cfg := guestConfig(g, "taps", uid)
	first := hypervisor.NICConfig{Network: "p1/a", MAC: "52:54:00:76:00:01", Tap: br.taps[0]}
	cfg.NICs = []hypervisor.NICConfig{first}
	cfg.Cmdline = guest.RunCmdline(script)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)

	// A NIC on a tap nobody made is refused, and no tap is left behind.
	bad := cfg
	bad.NICs = []hypervisor.NICConfig{{Network: "p1/a", MAC: "52:54:00:76:00:09", Tap: "pvqtt-missing"}}
	if err := d.Start(ctx, h, bad); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Start on a missing tap: %v", err)
	}
	if out, _ := exec.Command("ip", "link", "show", "pvqtt-missing").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Fatalf("a tap was left behind: %s", out)
	}

	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// At once, before the guest's firmware has numbered the root ports'
	// buses (the agent does this right after a start): the NIC the VM
	// started with is found, not plugged again.
	if err := d.SetNICs(ctx, h, cfg.NICs); err != nil {
		t.Fatalf("setting the nics a vm just started with: %v", err)
	}
	// NICs and volumes share the hot-plug ports: a volume plugged in now
	// (the buses still unnumbered) takes a port no NIC is in, and the NIC
	// plugged in below a port the volume is not in.
	vol := filepath.Join(t.TempDir(), "shared.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", vol, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if err := d.AttachVolume(ctx, h, hypervisor.VolumeConfig{Name: "shared", Path: vol}); err != nil {
		t.Fatalf("attaching a volume beside a nic: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(`PV-WAIT-PLUG`), 2*time.Minute)
	b, _ := d.ConsoleLog(ctx, h, 0)
	if !strings.Contains(string(b), guest.DHCPPrefix+"eth0 "+strings.TrimSuffix(br.gw, "1")) || !strings.Contains(string(b), "PV-PING ok") {
		t.Fatalf("the guest's tap NIC got no lease or did not reach the bridge:\n%s", tail(b, 2000))
	}
	if st := procStatus(t, h.PID); !strings.HasPrefix(st["Uid"], uidOf(t, DefaultUser)) {
		t.Errorf("qemu runs as uid %q, want %s's", st["Uid"], DefaultUser)
	}

	second := hypervisor.NICConfig{Network: "p1/b", MAC: "52:54:00:76:00:02", Tap: br.taps[1]}
	if err := d.SetNICs(ctx, h, []hypervisor.NICConfig{{Network: "user"}, first, second}); err != nil {
		t.Fatalf("plugging a nic: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(`PV-PLUGGED 52:54:00:76:00:02`), time.Minute)
	v, err := d.attached(ctx, h)
	if err != nil || v == nil {
		t.Fatalf("attached: %v", err)
	}
	inSlots, err := slotted(ctx, v.qmp)
	if err != nil || len(inSlots) != 3 {
		t.Fatalf("devices in hot-plug slots: %v, %v; want two nics and a volume", inSlots, err)
	}
	taken := map[int]string{}
	for dev, k := range inSlots {
		if other, ok := taken[k]; ok {
			t.Fatalf("%s and %s share slot %d", dev, other, k)
		}
		taken[k] = dev
	}
	// Plugging again is a no-op.
	if err := d.SetNICs(ctx, h, []hypervisor.NICConfig{first, second}); err != nil {
		t.Fatalf("setting the same nics: %v", err)
	}
	if err := d.SetNICs(ctx, h, []hypervisor.NICConfig{first}); err != nil {
		t.Fatalf("unplugging a nic: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(`PV-UNPLUGGED`), time.Minute)
	have, err := pluggedNICs(ctx, v.qmp)
	if err != nil || len(have) != 1 || have[nicID(first.MAC)] != 0 {
		t.Fatalf("nics after the unplug: %v, %v", have, err)
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatal(err)
	}
}

func uidOf(t *testing.T, name string) string {
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)) + "\t"
}
