package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

const libvirtSocket = "/var/run/libvirt/libvirt-sock"

// requireLibvirtd makes sure a real libvirtd serves qemu:///system,
// starting one with scripts/libvirtd.sh (as root) when none runs.
func requireLibvirtd(t *testing.T) {
	t.Helper()
	if c, err := net.DialTimeout("unix", libvirtSocket, time.Second); err == nil {
		c.Close()
		return
	}
	peer.Root(t, "starting libvirtd (none answers on "+libvirtSocket+"; scripts/test.sh starts it)")
	libvirtd(t, "start")
	t.Cleanup(func() { libvirtd(t, "stop") })
}

func libvirtd(t *testing.T, verb string) {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(repoRoot, "scripts", "libvirtd.sh"), verb).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/libvirtd.sh %s: %v\n%s", verb, err, out)
	}
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func waitFileContains(t *testing.T, path, text string, d time.Duration) {
	t.Helper()
	eventually(t, d, fmt.Sprintf("%s shows %q", path, text), func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), text) {
			return errNotYet
		}
		return nil
	})
}

// TestLibvirtProvider connects a real libvirtd running TCG domains and
// drives it through the Polyvisor API; virsh changes made behind
// Polyvisor's back show up within 5 s.
func TestLibvirtProvider(t *testing.T) {
	requireQEMU(t)
	requireLibvirtd(t)
	boot := filepath.Join(guestDir, "boot.qcow2")
	if _, err := os.Stat(boot); err != nil {
		t.Fatalf("the bootable guest image: %v (scripts/build-guest.sh makes it)", err)
	}
	srv := startServer(t, t.TempDir(), "--provider-resync", "30s")
	c := srv.c
	ctx := context.Background()
	suffix := fmt.Sprint(os.Getpid())

	// An unreachable URI is refused and nothing is stored.
	_, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "nowhere", Type: "libvirt", URL: "qemu+tcp://127.0.0.1:1/system"})
	if client.HTTPStatus(err) != 400 {
		t.Fatalf("unreachable libvirt: %v, want 400", err)
	}
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "kvm1", Type: "libvirt", URL: "qemu:///system"}); err != nil {
		t.Fatalf("adding libvirt: %v", err)
	}
	eventually(t, 20*time.Second, "libvirt connects", func() error {
		p, err := c.GetProvider(ctx, "kvm1")
		if err != nil {
			return err
		}
		if p.Status.State != api.ProviderConnected || p.Status.Inventory.Hosts != 1 {
			return fmt.Errorf("state %s, %d hosts", p.Status.State, p.Status.Inventory.Hosts)
		}
		return nil
	})
	hosts, _ := c.ListAllHosts(ctx, api.ListOptions{})
	var own, lv int
	for _, h := range hosts {
		if h.Provider == nil {
			own++
		} else if h.Provider.Name == "kvm1" {
			lv++
		}
	}
	if own != 1 || lv != 1 {
		t.Fatalf("host list: %d own hosts, %d libvirt hosts; want one of each side by side", own, lv)
	}

	// Out of band: virsh defines and starts a domain; it shows up running.
	dir := t.TempDir()
	oob := "pv-oob-" + suffix
	disk := filepath.Join(dir, "oob.qcow2")
	serial := filepath.Join(dir, "oob-serial.log")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", boot, "-F", "qcow2", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	xml := filepath.Join(dir, "oob.xml")
	os.WriteFile(xml, []byte(fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features><on_poweroff>destroy</on_poweroff>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
  <serial type='file'><source path='%s'/></serial><graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/></devices></domain>`, oob, disk, serial)), 0o644)
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", oob).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", oob, "--snapshots-metadata").Run()
	})
	virsh(t, "define", xml)
	virsh(t, "start", oob)
	start := time.Now()
	eventually(t, 5*time.Second, "the virsh-made domain shows running", func() error {
		vm, err := c.GetVM(ctx, oob)
		if err != nil {
			return err
		}
		if vm.Status.PowerState != api.PowerRunning || vm.Spec.Provider == nil || vm.Spec.Provider.Name != "kvm1" {
			return fmt.Errorf("state %s", vm.Status.PowerState)
		}
		return nil
	})
	t.Logf("out-of-band start visible after %s", time.Since(start))
	waitFileContains(t, serial, marker, 90*time.Second)

	// Through Polyvisor: stop (ACPI), snapshot, revert, start, pause, resume.
	waitOK(t, c, mustOp(t)(c.StopVM(ctx, oob, &api.VMStop{TimeoutSeconds: 60})))
	if st := virsh(t, "domstate", oob); st != "shut off" {
		t.Fatalf("after stop virsh says %q", st)
	}
	waitFileContains(t, serial, "acpi power button, powering off", 10*time.Second)
	waitOK(t, c, mustOp(t)(c.CreateSnapshot(ctx, oob, api.SnapshotCreate{Name: "clean"})))
	snaps, err := c.ListSnapshots(ctx, oob)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "clean" {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	if !strings.Contains(virsh(t, "snapshot-list", oob), "clean") {
		t.Fatal("virsh does not list the snapshot")
	}
	waitOK(t, c, mustOp(t)(c.RevertSnapshot(ctx, oob, "clean")))
	waitOK(t, c, mustOp(t)(c.DeleteSnapshot(ctx, oob, "clean")))
	waitOK(t, c, mustOp(t)(c.StartVM(ctx, oob)))
	if st := virsh(t, "domstate", oob); st != "running" {
		t.Fatalf("after start virsh says %q", st)
	}
	waitOK(t, c, mustOp(t)(c.PauseVM(ctx, oob)))
	if st := virsh(t, "domstate", oob); st != "paused" {
		t.Fatalf("after pause virsh says %q", st)
	}
	waitOK(t, c, mustOp(t)(c.ResumeVM(ctx, oob)))

	// Out of band again: virsh destroys it; Polyvisor sees it stopped.
	virsh(t, "destroy", oob)
	eventually(t, 5*time.Second, "a virsh destroy shows", func() error {
		vm, err := c.GetVM(ctx, oob)
		if err != nil {
			return err
		}
		if vm.Status.PowerState != api.PowerStopped {
			return fmt.Errorf("state %s", vm.Status.PowerState)
		}
		return nil
	})

	// Create from an image: a volume backed by the bootable guest image;
	// the guest boots to its marker.
	made := "pv-made-" + suffix
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", made).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", made, "--snapshots-metadata").Run()
	})
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, api.VMCreate{Name: made, Provider: "kvm1", Template: boot, VCPUs: 1, MemoryMiB: 256}, client.CreateOptions{})))
	if st := virsh(t, "domstate", made); st != "running" {
		t.Fatalf("created domain: virsh says %q", st)
	}
	waitFileContains(t, filepath.Join("/var/log/libvirt/qemu", made+"-serial.log"), marker, 90*time.Second)
	// Its graphical console, proxied by the server to the domain's VNC.
	vnc, err := c.Console(ctx, made, "vnc")
	if err != nil {
		t.Fatalf("vnc console of a libvirt vm: %v", err)
	}
	_ = vnc.SetReadDeadline(time.Now().Add(10 * time.Second))
	banner := make([]byte, 12)
	if _, err := io.ReadFull(vnc, banner); err != nil || !strings.HasPrefix(string(banner), "RFB 003.") {
		t.Fatalf("vnc banner %q: %v", banner, err)
	}
	vnc.Close()
	if _, err := c.ConsoleLog(ctx, made, 100); client.HTTPStatus(err) != 422 {
		t.Fatalf("serial log of a libvirt vm: %v, want 422", err)
	}
	waitOK(t, c, mustOp(t)(c.DeleteVM(ctx, made, false)))
	if out, _ := exec.Command("virsh", "-c", "qemu:///system", "dominfo", made).CombinedOutput(); !strings.Contains(string(out), "failed to get domain") {
		t.Fatalf("virsh still knows %s: %s", made, out)
	}

	// Connection loss: libvirtd is killed and started again. The provider
	// goes disconnected and stale, keeps its inventory, and comes back
	// without duplicates.
	before, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "kvm1"})
	libvirtd(t, "stop")
	eventually(t, 20*time.Second, "the provider is marked disconnected", func() error {
		p, err := c.GetProvider(ctx, "kvm1")
		if err != nil {
			return err
		}
		if p.Status.State != api.ProviderDisconnected || !p.Status.Stale {
			return fmt.Errorf("state %s", p.Status.State)
		}
		return nil
	})
	if during, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "kvm1"}); len(during) != len(before) {
		t.Fatalf("%d vms while disconnected, had %d", len(during), len(before))
	}
	libvirtd(t, "start")
	eventually(t, 60*time.Second, "the provider reconnects", func() error {
		p, err := c.GetProvider(ctx, "kvm1")
		if err != nil {
			return err
		}
		if p.Status.State != api.ProviderConnected || p.Status.Stale {
			return fmt.Errorf("state %s", p.Status.State)
		}
		return nil
	})
	if after, _ := c.ListAllVMs(ctx, api.ListOptions{Provider: "kvm1"}); len(after) != len(before) {
		t.Fatalf("%d vms after reconnecting, had %d: %v", len(after), len(before), names(after))
	}

	// virsh undefines the domain: it leaves Polyvisor.
	virsh(t, "undefine", oob)
	eventually(t, 5*time.Second, "a virsh undefine shows", func() error {
		if _, err := c.GetVM(ctx, oob); !client.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}
