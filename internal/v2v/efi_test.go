package v2v

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// OVMF as Debian's ovmf installs it.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// TestOVAEFIBoots moves an EFI VM packaged as an OVA (VMware's
// firmware=efi in the envelope; the test guest on an EFI system
// partition as a streamOptimized VMDK): the plan maps it to EFI firmware
// and, with no virt-v2v-in-place, to a SATA disk; the copy boots under
// OVMF on the devices the plan gives it, to the guest's marker.
func TestOVAEFIBoots(t *testing.T) {
	guest.RequireQEMU(t)
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			peer.Missing(t, "OVMF is not installed (apt-get install ovmf): %v", err)
		}
	}
	g := guest.Build(t)
	dir := t.TempDir()
	efiDisk := guest.EFIBoot(t, g, t.TempDir(), guest.Cmdline)
	vmdk := filepath.Join(dir, "efi-disk1.vmdk")
	run(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", efiDisk, vmdk)
	size := virtualSize(t, "qcow2", efiDisk)
	ova := filepath.Join(dir, "efi.ova")
	writeOVA(t, ova,
		tarMember{name: "efi.ovf", body: []byte(envelope("EFI Web", "efi-disk1.vmdk", itoa(size>>20), "byte * 2^20", "efi", "00:50:56:aa:bb:cd"))},
		tarMember{name: "efi-disk1.vmdk", file: vmdk})

	hw, err := ReadOVA(ova, DefaultMaxDiskBytes)
	if err != nil {
		t.Fatal(err)
	}
	if hw.Firmware != FirmwareEFI {
		t.Fatalf("firmware read from the envelope: %q", hw.Firmware)
	}
	p := PlanVM(hw, Options{Host: "h1", NetworkMap: map[string]string{"*": "user"}})
	if len(p.Blockers) > 0 {
		t.Fatalf("blockers: %v", p.Blockers)
	}
	c := p.Create()
	if p.Firmware != FirmwareEFI || c.Boot.Firmware != api.FirmwareEFI || c.Disks[0].Bus != api.DiskBusSATA {
		t.Fatalf("plan %+v makes %+v", p, c)
	}
	res, err := (&Copier{Dir: filepath.Join(dir, "job")}).CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "efivars.fd")
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o600); err != nil {
		t.Fatal(err)
	}
	took := guest.BootToMarker(t, "-machine", "q35,pflash0=code,pflash1=vars", "-m", fmt.Sprint(p.MemoryMiB), "-smp", fmt.Sprint(p.VCPUs),
		"-blockdev", "driver=raw,node-name=code,read-only=on,file.driver=file,file.read-only=on,file.filename="+ovmfCode,
		"-blockdev", "driver=raw,node-name=vars,file.driver=file,file.filename="+vars,
		"-blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename="+res[0].Path,
		"-device", "ide-hd,drive=d0,bus=ide.0,bootindex=1")
	t.Logf("migrated EFI guest's marker %v after starting qemu (OVMF, SATA)", took.Round(10*time.Millisecond))
}
