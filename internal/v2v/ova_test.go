package v2v

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestOVABoots makes an OVA of the test guest (its disk as a
// streamOptimized VMDK, an envelope as VMware writes it), plans and copies
// it: the hardware is the envelope's, the copy matches the guest's disk,
// and the result boots under QEMU as a Polyvisor VM's disk does. The
// VMDK is read in place: at no point of the copy does the job directory
// hold anything but the qcow2 being written and the checkpoint.
func TestOVABoots(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	dir := t.TempDir()
	vmdk := filepath.Join(dir, "guest-disk1.vmdk")
	convertGuest(t, g, "vmdk", "subformat=streamOptimized", vmdk)
	size := virtualSize(t, "qcow2", g.Boot)
	ova := filepath.Join(dir, "guest.ova")
	writeOVA(t, ova,
		tarMember{name: "guest.ovf", body: []byte(envelope("Web Server 01", "guest-disk1.vmdk", itoa(size>>20), "byte * 2^20", "", "00:50:56:aa:bb:cc"))},
		tarMember{name: "guest-disk1.vmdk", file: vmdk})

	hw, err := ReadOVA(ova, DefaultMaxDiskBytes)
	if err != nil {
		t.Fatal(err)
	}
	if hw.VCPUs != 2 || hw.MemoryMiB != 256 || hw.Firmware != FirmwareBIOS || len(hw.Disks) != 1 || len(hw.NICs) != 1 {
		t.Fatalf("hardware read from the envelope: %+v", hw)
	}
	if d := hw.Disks[0]; d.Bus != BusSCSI || d.CapacityBytes != size || d.Source.Member != "guest-disk1.vmdk" {
		t.Fatalf("disk read from the envelope: %+v", d)
	}
	p := PlanVM(hw, Options{Host: "h1", NetworkMap: map[string]string{"VM Network": "user"}})
	if len(p.Blockers) > 0 {
		t.Fatalf("blockers: %v", p.Blockers)
	}
	if p.Name != "web-server-01" || p.NICs[0].MAC != "00:50:56:aa:bb:cc" || p.NICs[0].Network != "user" || p.Disks[0].Bus != CompatibleDiskBus {
		t.Fatalf("plan: %+v", p)
	}

	job := filepath.Join(dir, "job")
	var phases []string
	staged := map[string]bool{}
	c := &Copier{Dir: job, Progress: func(pr Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != pr.Phase {
			phases = append(phases, pr.Phase)
		}
		for _, f := range listFiles(t, job) {
			if f != "web-server-01/root.checkpoint.json" && f != "web-server-01/root.qcow2" && !strings.HasPrefix(f, "web-server-01/.root.qcow2.tmp-") {
				staged[f] = true
			}
		}
	}}
	res, err := c.CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].SourceFormat != "vmdk" || !res[0].Verified || res[0].VirtualSize != size {
		t.Fatalf("result: %+v", res)
	}
	if got := strings.Join(phases, ","); got != "convert,verify,done" {
		t.Errorf("phases %s", got)
	}
	if len(staged) > 0 {
		t.Errorf("the copy wrote into the job directory %v: the OVA's disk was not read in place", staged)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", g.Boot, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs from the guest's disk: %v: %s", err, out)
	}
	// Only the qcow2 and the checkpoint stay.
	if got := strings.Join(listFiles(t, job), ","); got != "web-server-01/root.checkpoint.json,web-server-01/root.qcow2" {
		t.Errorf("job directory holds %s", got)
	}
	bootDisk(t, res[0].Path, p.VCPUs, p.MemoryMiB)

	// Run again: the checkpoint says done and the qcow2 still matches.
	phases = nil
	if _, err := c.CopyVM(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(phases, ","); got != "done" {
		t.Errorf("second run went through %s, want only done", got)
	}
}

// TestHyperVDisksBoot copies the test guest's disk as Hyper-V exports
// it, VHD and VHDX, with its hardware given as a disk file source has it,
// and boots each result.
func TestHyperVDisksBoot(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	for _, tc := range []struct{ format, opts string }{{"vpc", "subformat=dynamic"}, {"vhdx", ""}} {
		t.Run(tc.format, func(t *testing.T) {
			dir := t.TempDir()
			disk := filepath.Join(dir, "guest."+tc.format)
			convertGuest(t, g, tc.format, tc.opts, disk)
			hw := Hardware{Name: "hv-" + tc.format, VCPUs: 1, MemoryMiB: 256, Firmware: FirmwareBIOS,
				Disks: []Disk{{Name: "disk", Bus: BusIDE, Source: DiskSource{Kind: SourceFile, Path: disk}}}}
			p := PlanVM(hw, Options{Host: "h1"})
			if len(p.Blockers) > 0 {
				t.Fatal(p.Blockers)
			}
			res, err := (&Copier{Dir: filepath.Join(dir, "job")}).CopyVM(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if res[0].SourceFormat != tc.format {
				t.Errorf("source format %s, want %s", res[0].SourceFormat, tc.format)
			}
			bootDisk(t, res[0].Path, 1, 256)
		})
	}
}

func itoa(n int64) string { return strconvItoa(n) }
