package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// requireOVMF skips (or fails, where peers are required) without OVMF.
func requireOVMF(t *testing.T) {
	t.Helper()
	for _, f := range []string{DefaultOVMFCode, DefaultOVMFVars} {
		if _, err := os.Stat(f); err != nil {
			peer.Missing(t, "OVMF is not installed (apt-get install ovmf): %v", err)
		}
	}
}

// TestEFIBootRealQEMU boots the test guest under OVMF from an EFI system
// partition holding a unified kernel image, with no boot entry: OVMF finds
// \EFI\BOOT\BOOTX64.EFI on the disk and the guest's marker reaches the
// console. The VM's NVRAM is its own copy of OVMF's variable store made
// at Create, passed on QEMU's command line like its disks (QEMU chroots
// and drops to its user after opening it), written by the firmware (its
// boot entries), kept by a stop, and removed with the VM.
func TestEFIBootRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	requireOVMF(t)
	g := guest.Build(t)
	efiDisk := guest.EFIBoot(t, g, t.TempDir(), guest.Cmdline)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := hypervisor.VMConfig{
		Name: "efi", UID: "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", VCPUs: 1, MemoryMiB: 256, Firmware: hypervisor.FirmwareEFI,
		Disks: []hypervisor.DiskConfig{{Name: "boot", BackingFile: efiDisk}},
	}
	d, h := createFirmwareVM(t, ctx, cfg)
	vars := filepath.Join(h.Dir, efiVarsFile)
	if h.Extra[extraEFIVars] != vars || h.Extra[extraEFICode] != DefaultOVMFCode {
		t.Fatalf("handle extra = %v, want the nvram %s and the code %s", h.Extra, vars, DefaultOVMFCode)
	}
	template, err := os.ReadFile(DefaultOVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(vars); err != nil || !bytes.Equal(got, template) {
		t.Fatalf("nvram after Create is not a copy of the template (%v)", err)
	}
	if fi, err := os.Stat(vars); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("nvram mode = %v, %v; want 0600", fi.Mode(), err)
	}

	t0 := time.Now()
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	cmdline := qemuCmdline(t, h.PID)
	for _, want := range []string{"pflash0=efi-code,pflash1=efi-vars", "file.filename=" + vars, "read-only=on,file.filename=" + DefaultOVMFCode} {
		if !bytes.Contains(cmdline, []byte(want)) {
			t.Fatalf("qemu command line lacks %q: %q", want, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), 120*time.Second)
	t.Logf("EFI guest's marker in the console log %v after Start (OVMF under %s)", time.Since(t0).Round(10*time.Millisecond), d.accel.Accel)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-tick 1\b`), 10*time.Second)

	t0 = time.Now()
	if err := d.Stop(ctx, h, hypervisor.StopOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("graceful Stop took %v", time.Since(t0).Round(10*time.Millisecond))
	waitLog(t, d, h, regexp.MustCompile(regexp.QuoteMeta(guest.AcpiPoweroffLine)), time.Second)
	// OVMF records the boot options it found in the NVRAM: the confined
	// QEMU wrote the VM's own copy, which outlives the process.
	got, err := os.ReadFile(vars)
	if err != nil {
		t.Fatalf("nvram after Stop: %v", err)
	}
	if len(got) != len(template) || bytes.Equal(got, template) {
		t.Fatalf("nvram after a boot: %d bytes, unchanged=%v; want the firmware's writes in a file of %d bytes", len(got), bytes.Equal(got, template), len(template))
	}
	if !bytes.Contains(got, utf16("Boot0")) {
		t.Errorf("nvram after a boot holds no Boot#### variable")
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(vars); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("nvram after Destroy: %v, want it gone", err)
	}
}

// utf16 is s in UTF-16LE, as EFI variable names are stored.
func utf16(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), 0)
	}
	return b
}

// TestEFIConfig checks what Create and Start refuse about firmware, with
// no guest: an unknown firmware, OVMF missing on the host (nothing left
// behind), and a start whose firmware is not the one the VM was made with.
func TestEFIConfig(t *testing.T) {
	guest.RequireQEMU(t)
	d := newTestDriver(t, t.TempDir())
	defer d.Close()
	d.cfg.OVMFCode = filepath.Join(t.TempDir(), "missing_CODE.fd")
	ctx := context.Background()
	base := hypervisor.VMConfig{Name: "x", UID: "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"}

	bad := base
	bad.Firmware = "uefi"
	if _, err := d.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), `firmware "uefi"`) {
		t.Fatalf("Create with firmware uefi: %v", err)
	}
	efi := base
	efi.Firmware = hypervisor.FirmwareEFI
	_, err := d.Create(ctx, efi)
	if err == nil || !strings.Contains(err.Error(), "apt-get install ovmf") {
		t.Fatalf("Create without OVMF: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, base.UID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed create left its dir: %v", err)
	}

	// A VM made with BIOS cannot start with EFI, nor the reverse.
	h := &hypervisor.Handle{UID: base.UID, Dir: t.TempDir(), Extra: map[string]string{}}
	if err := checkEFI(h, efi); err == nil || !strings.Contains(err.Error(), "without efi") {
		t.Fatalf("efi start of a bios vm: %v", err)
	}
	h.Extra[extraEFIVars], h.Extra[extraEFICode] = filepath.Join(h.Dir, efiVarsFile), DefaultOVMFCode
	if err := checkEFI(h, base); err == nil || !strings.Contains(err.Error(), "made with efi firmware, not bios") {
		t.Fatalf("bios start of an efi vm: %v", err)
	}
	if err := checkEFI(h, efi); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("efi start with its nvram gone: %v", err)
	}
}

// TestCompatibleDevicesRealQEMU starts (paused) a VM whose disk is on
// SATA and whose NIC is an e1000: QEMU accepts the devices, and they are
// what the guest is given.
func TestCompatibleDevicesRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := newTestDriver(t, t.TempDir())
	defer d.Close()
	cfg := hypervisor.VMConfig{
		Name: "compat", UID: "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e", VCPUs: 1, MemoryMiB: 128, StartPaused: true,
		Disks: []hypervisor.DiskConfig{{Name: "root", BackingFile: g.Boot, Bus: "sata"}, {Name: "data", SizeMiB: 8}},
		NICs:  []hypervisor.NICConfig{{Network: "user", Model: "e1000"}},
	}
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	v, err := d.attached(ctx, h)
	if err != nil || v == nil {
		t.Fatalf("attached: %v", err)
	}
	for path, want := range map[string]string{"/machine/peripheral/sata-disk0": "ide-hd", "/machine/peripheral/virtio-disk1": "virtio-blk-pci", "/machine/peripheral/nic0": "e1000"} {
		var typ string
		if err := v.qmp.Execute(ctx, "qom-get", map[string]any{"path": path, "property": "type"}, &typ); err != nil || typ != want {
			t.Errorf("%s is %q (%v), want %s", path, typ, err, want)
		}
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
}
