package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestMigrationFromLibvirt moves a domain of the real libvirtd into the
// server's host through the server: the libvirt provider is connected to
// the project, a TCG domain that boots the test guest from a qcow2 volume
// of a storage pool is defined (shut off); `migration run --from kvm1 --vm UUID=NAME
// --source-disposition delete` has the server read the domain with the
// provider's connection and copy its volume through libvirt's download
// stream; the VM boots on the host (its marker on the console) with the
// domain's vCPUs, memory and MAC, and the source domain is deleted (its
// volume, which Polyvisor did not make, stays).
func TestMigrationFromLibvirt(t *testing.T) {
	requireQEMU(t)
	peer.Binary(t, "virsh", "apt-get install libvirt-clients")
	if c, err := net.DialTimeout("unix", "/var/run/libvirt/libvirt-sock", time.Second); err != nil {
		peer.Missing(t, "no libvirtd answers (start one with scripts/libvirtd.sh start): %v", err)
	} else {
		c.Close()
	}
	virsh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	pool, dom := "e2e-v2v-"+suffix, "lv-web-"+suffix
	poolDir := filepath.Join(dir, "pool")
	os.Mkdir(poolDir, 0o755)
	virsh("pool-create-as", pool, "dir", "--target", poolDir)
	t.Cleanup(func() { exec.Command("virsh", "-c", "qemu:///system", "pool-destroy", pool).Run() })
	vol := filepath.Join(poolDir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", filepath.Join(guestDir, "boot.qcow2"), vol).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	virsh("pool-refresh", pool)
	serial := filepath.Join(dir, "serial.log")
	const mac = "52:54:00:5e:00:42"
	xml := `<domain type='qemu'><name>` + dom + `</name><memory unit='MiB'>192</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='` + pool + `' volume='root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='ethernet'><mac address='` + mac + `'/><model type='virtio'/></interface>
    <serial type='file'><source path='` + serial + `'/><target port='0'/></serial>
  </devices></domain>`
	os.WriteFile(filepath.Join(dir, "dom.xml"), []byte(xml), 0o600)
	virsh("define", filepath.Join(dir, "dom.xml"))
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", dom).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", dom).Run()
	})

	uuid := strings.TrimSpace(virsh("domuuid", dom))

	s := startServer(t, t.TempDir())
	c := s.adminClient(t)
	ctx := context.Background()
	if _, err := c.CreateProvider(ctx, api.ProviderCreate{Name: "kvm1", Type: "libvirt", URL: "qemu:///system"}); err != nil {
		t.Fatalf("adding libvirt: %v", err)
	}
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--server", "unix://" + s.socket}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("polyvisor %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t0 := time.Now()
	out := cli("migration", "run", "--name", "lv1", "--from", "kvm1", "--vm", uuid+"=moved", "--to-host", "local",
		"--network-map", "*=user", "--source-disposition", "delete")
	ran := time.Since(t0)
	if !strings.Contains(out, "succeeded") || !strings.Contains(out, "source deleted") {
		t.Fatalf("run:\n%s", out)
	}
	waitConsole(t, c, "moved", marker, 1)
	t.Logf("migration run took %v; the guest's marker was on its console %v after the run started", ran.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	vm, err := c.GetVM(ctx, "moved")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.VCPUs != 1 || vm.Spec.MemoryMiB != 192 || len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].MAC != mac {
		t.Fatalf("VM spec %+v", vm.Spec)
	}
	if out, err := exec.Command("virsh", "-c", "qemu:///system", "dominfo", dom).CombinedOutput(); err == nil {
		t.Errorf("the source domain is still defined after a migration that deletes it:\n%s", out)
	}
	if _, err := os.Stat(vol); err != nil {
		t.Errorf("the source's volume, which Polyvisor did not make: %v", err)
	}
	recs, err := c.ListAudit(ctx, api.AuditQuery{Action: "migration.source.delete"})
	if err != nil || len(recs) != 1 || recs[0].Actor.Kind != "system" || recs[0].Outcome != api.AuditSuccess {
		t.Errorf("audit of the source's deletion: %+v %v", recs, err)
	}
}
