package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// Tests in this file run the tiny test guest under QEMU (TCG here) on the
// real libvirtd, qemu:///system.

const systemURI = "qemu:///system"

// virtType is the domain type Polyvisor's provider chooses on the test
// host: from libvirt's domain capabilities and a probe domain, never from
// the mere presence of /dev/kvm (which may open and run no guest).
func virtType(t *testing.T) string {
	t.Helper()
	systemVirt.once.Do(func() {
		facts, err := loadHostFacts(rawConn(t, systemURI), endpoint{uri: systemURI})
		systemVirt.typ, systemVirt.err = facts.virtType, err
		t.Logf("the provider runs %s domains here: %s", facts.virtType, facts.virtReason)
	})
	if systemVirt.err != nil {
		t.Fatalf("deciding the domain type: %v", systemVirt.err)
	}
	return systemVirt.typ
}

var systemVirt struct {
	once sync.Once
	typ  string
	err  error
}

// guestDomainXML is a domain that boots the test guest's kernel and
// initrd directly, with a qcow2 disk and its serial console in a file.
func guestDomainXML(t *testing.T, name string, g guest.Paths, disk, serial string) string {
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>%s</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='%s'/></serial>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>`, virtType(t), name, g.Kernel, g.Initrd, guest.Cmdline, disk, serial)
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// removeDomain destroys and undefines a domain a test made, if it is
// still there, and removes the logs libvirt keeps of it.
func removeDomain(raw *golibvirt.Libvirt, name string) {
	if dom, err := raw.DomainLookupByName(name); err == nil {
		raw.DomainDestroy(dom)
		raw.DomainUndefineFlags(dom, golibvirt.DomainUndefineSnapshotsMetadata)
	}
	os.Remove(filepath.Join(serialLogDir, name+".log"))
	os.Remove(filepath.Join(serialLogDir, name+"-serial.log"))
}

// TestSystemGuest defines and starts the test guest out of band, then
// drives it through the provider: inventory, watch, serial console,
// console, suspend/resume, reboot, ACPI shutdown, reconfigure, snapshots
// and delete.
func TestSystemGuest(t *testing.T) {
	requireDaemon(t)
	guest.RequireQEMU(t)
	g := guest.Build(t)
	raw := rawConn(t, systemURI)
	p := connect(t, systemURI)
	rec := watch(t, p)
	rec.sync(t, raw, virtType(t))
	ctx := context.Background()

	dir := t.TempDir()
	name := uniqueName("pv-guest")
	disk := filepath.Join(dir, "disk.qcow2")
	serial := filepath.Join(dir, "serial.log")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", g.Disk, "-F", "qcow2", disk)
	t.Cleanup(func() { removeDomain(raw, name) })

	// Out of band: define and start with go-libvirt; the watch sees it.
	mark := rec.mark()
	dom, err := raw.DomainDefineXML(guestDomainXML(t, name, g, disk, serial))
	if err != nil {
		t.Fatal(err)
	}
	id := uuidString(dom.UUID)
	if err := raw.DomainCreate(dom); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	rec.wait(t, mark, 5*time.Second, "started out of band", vmIs(id, provider.PowerRunning))
	t.Logf("watch reported the out-of-band start after %s", time.Since(started))

	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vm := findVM(inv, id)
	if vm == nil {
		t.Fatalf("inventory misses vm %s", name)
	}
	if vm.Name != name || vm.PowerState != provider.PowerRunning || vm.VCPUs != 1 || vm.MemoryMiB != 256 ||
		vm.Path != systemURI+"/"+name || vm.Host != inv.Hosts[0].ID || len(vm.Disks) != 1 {
		t.Fatalf("vm %+v", vm)
	}
	if d := vm.Disks[0]; d.Name != "vda" || d.Format != "qcow2" || d.Path != disk || d.SizeBytes != 64<<20 {
		t.Errorf("disk %+v", d)
	}
	h := inv.Hosts[0]
	if h.CPUs == 0 || h.MemoryMiB == 0 || !strings.HasPrefix(h.Version, "QEMU ") || h.State != provider.HostConnected {
		t.Errorf("host %+v", h)
	}
	t.Logf("host %+v", h)

	waitFile(t, serial, guest.ReadyMarker, 1, 30*time.Second)
	waitFile(t, serial, guest.DiskPrefix+"vda", 1, 5*time.Second)
	t.Logf("guest booted %s after start", time.Since(started))

	c, err := p.Console(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != "vnc" || c.Host != "127.0.0.1" || c.Port < 5900 {
		t.Errorf("console %+v", c)
	}
	if greet := vncGreeting(t, c); !strings.HasPrefix(greet, "RFB 003.") {
		t.Errorf("vnc greets %q", greet)
	}

	for _, s := range []struct {
		name  string
		do    func() error
		power string
	}{
		{"suspend", func() error { return p.Suspend(ctx, id) }, provider.PowerPaused},
		{"resume", func() error { return p.Resume(ctx, id) }, provider.PowerRunning},
	} {
		mark := rec.mark()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		rec.wait(t, mark, 5*time.Second, s.name, vmIs(id, s.power))
	}
	if err := p.Delete(ctx, id); !errors.Is(err, provider.ErrBadState) {
		t.Errorf("delete a running vm: %v, want ErrBadState", err)
	}
	if err := p.Reconfigure(ctx, id, 2, 512); !errors.Is(err, provider.ErrBadState) {
		t.Errorf("reconfigure a running vm: %v, want ErrBadState", err)
	}

	// Reboot: ACPI to the guest, whose acpid powers off; libvirt then
	// restarts it, and it boots a second time.
	if err := p.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFile(t, serial, guest.ReadyMarker, 2, 30*time.Second)
	b, _ := os.ReadFile(serial)
	ticks := countLines(b, guest.TickPrefix+"3", true) // of the first boot

	// Shutdown: ACPI power button, the guest powers itself off. Its acpid
	// is surely listening once it ticks.
	waitLines(t, serial, guest.TickPrefix+"3", true, ticks+1, 30*time.Second)
	// Whether the guest powered off by itself, or was powered off when the
	// timeout (generous: the guest needs a second) ran out, libvirt says in
	// the domain's shutoff reason: no bound on the time taken.
	mark = rec.mark()
	start := time.Now()
	if err := p.Shutdown(ctx, id, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %s", time.Since(start))
	if st, reason, err := raw.DomainGetState(dom, 0); err != nil || golibvirt.DomainState(st) != golibvirt.DomainShutoff ||
		golibvirt.DomainShutoffReason(reason) != golibvirt.DomainShutoffShutdown {
		t.Errorf("after the shutdown the domain is in state %d, reason %d (%v); want shut off (%d) by the guest (%d), not destroyed (%d)",
			st, reason, err, golibvirt.DomainShutoff, golibvirt.DomainShutoffShutdown, golibvirt.DomainShutoffDestroyed)
	}
	waitFile(t, serial, guest.AcpiPoweroffLine, 2, time.Second)
	rec.wait(t, mark, 5*time.Second, "shut down", vmIs(id, provider.PowerStopped))

	t.Run("reconfigure", func(t *testing.T) {
		for _, want := range []struct {
			vcpus int
			mem   int64
		}{{2, 384}, {1, 256}} {
			if err := p.Reconfigure(ctx, id, want.vcpus, want.mem); err != nil {
				t.Fatal(err)
			}
			inv, err := p.Inventory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if vm := findVM(inv, id); vm.VCPUs != want.vcpus || vm.MemoryMiB != want.mem {
				t.Fatalf("after reconfigure to %d/%d: %d vcpus, %d MiB", want.vcpus, want.mem, vm.VCPUs, vm.MemoryMiB)
			}
		}
	})

	t.Run("snapshots", func(t *testing.T) { testSnapshots(t, p, id, disk) })

	// Delete: the domain goes; its disk was not made by Polyvisor, so it
	// stays.
	mark = rec.mark()
	if err := p.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, mark, 5*time.Second, "deleted", func(c provider.Change) bool { return c.DeletedVM == id })
	if _, err := raw.DomainLookupByName(name); !isCode(err, golibvirt.ErrNoDomain) {
		t.Errorf("domain still defined: %v", err)
	}
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("the out-of-band disk is gone: %v", err)
	}
}

// testSnapshots takes, lists, reverts and deletes internal snapshots of a
// stopped domain whose disk is a qcow2 overlay, checking the disk's data
// with qemu-io.
func testSnapshots(t *testing.T, p *Provider, id, disk string) {
	ctx := context.Background()
	if err := p.CreateSnapshot(ctx, id, "clean", "before the write"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSnapshot(ctx, id, "clean", "again"); !errors.Is(err, provider.ErrExists) {
		t.Errorf("snapshot name clash: %v, want ErrExists", err)
	}
	// Write a pattern into the stopped domain's disk, then snapshot again.
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io write: %v\n%s", err, out)
	}
	time.Sleep(1100 * time.Millisecond) // creation times have a 1 s resolution
	if err := p.CreateSnapshot(ctx, id, "written", ""); err != nil {
		t.Fatal(err)
	}
	snaps, err := p.Snapshots(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 || snaps[0].Name != "clean" || snaps[0].Description != "before the write" ||
		snaps[0].Current || snaps[1].Name != "written" || !snaps[1].Current || snaps[0].CreatedAt.IsZero() {
		t.Fatalf("snapshots %+v", snaps)
	}
	if info := qemuImg(t, "snapshot", "-l", "-U", disk); !strings.Contains(info, "clean") || !strings.Contains(info, "written") {
		t.Errorf("the qcow2 file lacks the internal snapshots:\n%s", info)
	}

	if err := p.RevertSnapshot(ctx, id, "clean"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "read -P 0 0 64k", disk).CombinedOutput(); err != nil ||
		strings.Contains(string(out), "Pattern verification failed") {
		t.Errorf("after reverting to clean the write is still there: %v\n%s", err, out)
	}
	snaps, err = p.Snapshots(ctx, id)
	if err != nil || len(snaps) != 2 || !snaps[0].Current {
		t.Errorf("after revert: %+v %v", snaps, err)
	}
	if err := p.RevertSnapshot(ctx, id, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("revert to a missing snapshot: %v, want ErrNotFound", err)
	}
	for _, s := range []string{"written", "clean"} {
		if err := p.DeleteSnapshot(ctx, id, s); err != nil {
			t.Fatal(err)
		}
	}
	if snaps, err := p.Snapshots(ctx, id); err != nil || len(snaps) != 0 {
		t.Errorf("after delete: %+v %v", snaps, err)
	}
	if info := qemuImg(t, "snapshot", "-l", "-U", disk); strings.Contains(info, "clean") {
		t.Errorf("the qcow2 file still holds snapshots:\n%s", info)
	}
}

// TestSystemOutOfBandVirsh changes a domain with virsh alone and expects
// the watch to report each change within 5 s.
func TestSystemOutOfBandVirsh(t *testing.T) {
	requireDaemon(t)
	guest.RequireQEMU(t)
	peer.Binary(t, "virsh", "apt-get install libvirt-clients")
	g := guest.Build(t)
	raw := rawConn(t, systemURI)
	p := connect(t, systemURI)
	rec := watch(t, p)
	rec.sync(t, raw, virtType(t))

	dir := t.TempDir()
	name := uniqueName("pv-virsh")
	disk := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", g.Disk, "-F", "qcow2", disk)
	xmlFile := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlFile, []byte(guestDomainXML(t, name, g, disk, filepath.Join(dir, "serial.log"))), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeDomain(raw, name) })

	mark := rec.mark()
	virsh(t, "define", xmlFile)
	c := rec.wait(t, mark, 5*time.Second, "virsh define", func(c provider.Change) bool { return c.VM != nil && c.VM.Name == name })
	id := c.VM.ID
	if c.VM.PowerState != provider.PowerStopped {
		t.Errorf("defined vm is %s", c.VM.PowerState)
	}
	for _, s := range []struct {
		args  []string
		power string
	}{
		{[]string{"start", name}, provider.PowerRunning},
		{[]string{"suspend", name}, provider.PowerPaused},
		{[]string{"resume", name}, provider.PowerRunning},
		{[]string{"destroy", name}, provider.PowerStopped},
		{[]string{"start", name}, provider.PowerRunning},
		{[]string{"destroy", name}, provider.PowerStopped},
	} {
		mark := rec.mark()
		virsh(t, s.args...)
		rec.wait(t, mark, 5*time.Second, "virsh "+strings.Join(s.args, " "), vmIs(id, s.power))
	}
	mark = rec.mark()
	virsh(t, "undefine", name)
	rec.wait(t, mark, 5*time.Second, "virsh undefine", func(c provider.Change) bool { return c.DeletedVM == id })
}
