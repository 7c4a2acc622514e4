package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// poolVolumes lists the volume names of a pool.
func poolVolumes(t *testing.T, raw *golibvirt.Libvirt, pool string) map[string]bool {
	t.Helper()
	pl, err := raw.StoragePoolLookupByName(pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.StoragePoolRefresh(pl, 0); err != nil {
		t.Fatal(err)
	}
	vols, _, err := raw.StoragePoolListAllVolumes(pl, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, v := range vols {
		names[v.Name] = true
	}
	return names
}

// TestSystemCreateVM creates a VM from the test guest's disk image: a qcow2
// volume backed by it in the polyvisor pool and a q35 domain that starts
// (the image has no boot loader, so the guest itself does not boot: QEMU
// runs its firmware). Then a name clash, a rolled back create, and delete.
func TestSystemCreateVM(t *testing.T) {
	requireDaemon(t)
	guest.RequireQEMU(t)
	g := guest.Build(t)
	raw := rawConn(t, systemURI)
	p := connect(t, systemURI)
	ctx := context.Background()
	name := uniqueName("pv-create")
	_, err := raw.StoragePoolLookupByName(DefaultPool)
	poolExisted := err == nil
	t.Cleanup(func() {
		removeDomain(raw, name)
		removeDomain(raw, name+"-rb")
		pool, err := raw.StoragePoolLookupByName(DefaultPool)
		if err != nil {
			return
		}
		for _, n := range []string{name, name + "-rb"} {
			if vol, err := raw.StorageVolLookupByName(pool, n+".qcow2"); err == nil {
				raw.StorageVolDelete(vol, 0)
			}
		}
		if !poolExisted {
			// The provider made its pool for this test: remove it (and
			// its directory, which fails unless it is empty).
			raw.StoragePoolDestroy(pool)
			raw.StoragePoolDelete(pool, 0)
			raw.StoragePoolUndefine(pool)
		}
	})

	spec := provider.CreateSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Template: g.Disk, PowerOn: true}
	vm, err := p.CreateVM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != name || vm.PowerState != provider.PowerRunning || vm.VCPUs != 1 || vm.MemoryMiB != 256 || len(vm.Disks) != 1 {
		t.Fatalf("created vm %+v", vm)
	}
	volPath := DefaultPoolDir + "/" + name + ".qcow2"
	if d := vm.Disks[0]; d.Path != volPath || d.Format != "qcow2" || d.SizeBytes != 64<<20 {
		t.Errorf("disk %+v", d)
	}

	// The volume: a qcow2 overlay backed by the image, with its format.
	out := qemuImg(t, "info", "-U", "--output=json", volPath)
	var info struct {
		Format        string `json:"format"`
		VirtualSize   int64  `json:"virtual-size"`
		BackingFile   string `json:"backing-filename"`
		BackingFormat string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.BackingFile != g.Disk || info.BackingFormat != "qcow2" || info.VirtualSize != 64<<20 {
		t.Errorf("overlay %+v", info)
	}

	// The domain as defined.
	dom, err := raw.DomainLookupByName(name)
	if err != nil {
		t.Fatal(err)
	}
	x, err := raw.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<domain type='" + virtType(t) + "'>", "machine='pc-q35", "<source file='" + volPath + "'",
		"<target dev='vda' bus='virtio'/>", "<graphics type='vnc'", "listen='127.0.0.1'",
		"<serial type='pty'>", "<log file='/var/log/libvirt/qemu/" + name + "-serial.log'",
		`<vm xmlns="https://polyvisor.dev/xmlns/libvirt/1" owner="polyvisor">`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("domain xml lacks %s:\n%s", want, x)
		}
	}

	// QEMU runs, under TCG when there is no KVM.
	pid, err := os.ReadFile("/run/libvirt/qemu/" + name + ".pid")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/cmdline")
	if err != nil {
		t.Fatalf("qemu process %s: %v", pid, err)
	}
	args := strings.ReplaceAll(string(cmdline), "\x00", " ")
	if !strings.Contains(args, "qemu-system-x86_64") || !strings.Contains(args, "guest="+name) {
		t.Errorf("qemu runs as %s", args)
	}
	if virtType(t) == "qemu" && !strings.Contains(args, "-accel tcg") {
		t.Errorf("qemu does not run under tcg: %s", args)
	}
	if c, err := p.Console(ctx, vm.ID); err != nil {
		t.Error(err)
	} else if greet := vncGreeting(t, c); !strings.HasPrefix(greet, "RFB 003.") {
		t.Errorf("vnc greets %q", greet)
	}

	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ds := range inv.Datastores {
		found = found || ds.Name == DefaultPool && ds.CapacityBytes > 0
	}
	if !found {
		t.Errorf("datastores %+v lack the %s pool", inv.Datastores, DefaultPool)
	}

	// A name clash changes nothing.
	before := poolVolumes(t, raw, DefaultPool)
	if _, err := p.CreateVM(ctx, spec); !errors.Is(err, provider.ErrExists) {
		t.Errorf("create with a name in use: %v, want ErrExists", err)
	}
	if after := poolVolumes(t, raw, DefaultPool); len(after) != len(before) {
		t.Errorf("volumes after the clash: %v, before: %v", after, before)
	}

	// A create that fails after its volume was made leaves nothing: the
	// network exists but is not active, so the domain cannot start.
	netName := uniqueName("pv-inactive")
	network, err := raw.NetworkDefineXML("<network><name>" + netName + "</name><bridge name='pvt" +
		strconv.Itoa(os.Getpid()%10000) + "'/></network>")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.NetworkUndefine(network) })
	rb := provider.CreateSpec{Name: name + "-rb", Template: g.Disk, Network: netName, PowerOn: true}
	if _, err := p.CreateVM(ctx, rb); err == nil {
		t.Fatal("create on an inactive network succeeded")
	} else {
		t.Logf("create on an inactive network: %v", err)
	}
	if _, err := raw.DomainLookupByName(rb.Name); !isCode(err, golibvirt.ErrNoDomain) {
		t.Errorf("the failed create left its domain: %v", err)
	}
	if vols := poolVolumes(t, raw, DefaultPool); vols[rb.Name+".qcow2"] {
		t.Errorf("the failed create left its volume")
	}
	if _, err := p.CreateVM(ctx, provider.CreateSpec{Name: name + "-rb", Template: g.Disk, Network: "no-such-net"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("create on a missing network: %v, want ErrNotFound", err)
	}
	if _, err := p.CreateVM(ctx, provider.CreateSpec{Name: name + "-rb", Template: g.Dir + "/no-such.qcow2"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("create from a missing image: %v, want ErrNotFound", err)
	}

	// Delete: must be off; then the domain and its volume go.
	if err := p.Delete(ctx, vm.ID); !errors.Is(err, provider.ErrBadState) {
		t.Errorf("delete a running vm: %v, want ErrBadState", err)
	}
	if err := p.PowerOff(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.DomainLookupByName(name); !isCode(err, golibvirt.ErrNoDomain) {
		t.Errorf("domain still defined: %v", err)
	}
	if _, err := os.Stat(volPath); !os.IsNotExist(err) {
		t.Errorf("volume %s still there: %v", volPath, err)
	}
	if _, err := os.Stat(g.Disk); err != nil {
		t.Errorf("the template image is gone: %v", err)
	}
}
