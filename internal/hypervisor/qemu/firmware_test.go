package qemu

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// createFirmwareVM creates the VM cfg describes, which its firmware boots
// from its disk, on a driver of its own; both go when the test ends.
func createFirmwareVM(t *testing.T, ctx context.Context, cfg hypervisor.VMConfig) (*Driver, *hypervisor.Handle) {
	t.Helper()
	d := newTestDriver(t, t.TempDir())
	t.Cleanup(func() { d.Close() })
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)
	return d, h
}

// qemuCmdline is the command line of QEMU process pid, its arguments
// separated by NULs.
func qemuCmdline(t *testing.T, pid int) []byte {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFirmwareBootRealQEMU runs a VM with no kernel whose only disk is an
// overlay of the test guest's bootable disk: SeaBIOS boots it from the
// virtio-blk disk the driver marks bootindex=1, SYSLINUX on the disk loads
// the guest, and the guest's marker reaches the console log. The VM then
// stops gracefully through the ACPI power button.
func TestFirmwareBootRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := hypervisor.VMConfig{
		Name: "firmware", UID: "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f", VCPUs: 1, MemoryMiB: 256,
		Disks: []hypervisor.DiskConfig{{Name: "boot", BackingFile: g.Boot}},
	}
	d, h := createFirmwareVM(t, ctx, cfg)
	if len(h.Disks) != 1 || h.Disks[0].SizeMiB < 64 {
		t.Fatalf("disks after Create = %+v, want one overlay of at least 64 MiB", h.Disks)
	}

	evctx, evcancel := context.WithCancel(ctx)
	defer evcancel()
	evch, err := d.Events(evctx, h)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(evch)

	t0 := time.Now()
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// The firmware, not QEMU, loads the kernel: no -kernel on the command
	// line, and the disk is the boot device.
	cmdline := qemuCmdline(t, h.PID)
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	for _, a := range args {
		if s := string(a); s == "-kernel" || s == "-initrd" || s == "-append" {
			t.Fatalf("firmware-booted vm has %s on its command line: %q", s, cmdline)
		}
	}
	if !bytes.Contains(cmdline, []byte("bootindex=1")) {
		t.Fatalf("no boot disk on the command line: %q", cmdline)
	}

	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), 60*time.Second)
	t.Logf("marker in the console log %v after Start", time.Since(t0).Round(10*time.Millisecond))
	// The guest sees its boot disk, in 512-byte sectors, and runs.
	sectors := strconv.FormatInt(h.Disks[0].SizeMiB*2048, 10)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-guest: disk vda `+sectors+`\r?\n`), 5*time.Second)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-tick 2\b`), 10*time.Second)
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("State = %+v, %v", st, err)
	}

	pid := h.PID
	t0 = time.Now()
	if err := d.Stop(ctx, h, hypervisor.StopOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("graceful Stop took %v", time.Since(t0).Round(10*time.Millisecond))
	waitLog(t, d, h, regexp.MustCompile(regexp.QuoteMeta(guest.AcpiPoweroffLine)), time.Second)
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseRequested}, 5*time.Second)
	if processAlive(pid, 0) {
		t.Fatalf("qemu pid %d still alive after Stop", pid)
	}
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateStopped {
		t.Fatalf("State after Stop = %+v, %v", st, err)
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
}
