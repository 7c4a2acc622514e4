package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/hypervisor/qemu"
)

// exactBoot is a diagnostic third boot: QEMU started directly, like the
// bare one, but with the very command line Polyvisor's qemu driver builds
// (qemu.BuildArgs: VGA, VNC and QMP sockets, the serial on a socket with a
// logfile, -msg timestamp=on...). Against the bare boot it prices the
// machine Polyvisor asks for; against the Polyvisor boot, the control
// plane alone.
func (r *lifecycleRun) exactBoot(ctx context.Context, i int) (BareBoot, error) {
	var b BareBoot
	dir := filepath.Join(r.tmp, "exact", fmt.Sprint(i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return b, fmt.Errorf("making exact-args qemu dir: %w", err)
	}
	overlay := filepath.Join(dir, "root.qcow2")
	backing := filepath.Join(r.guestDir, guestDisk)
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
		return b, fmt.Errorf("creating overlay: %w: %s", err, strings.TrimSpace(string(out)))
	}
	cfg := hypervisor.VMConfig{
		Name: fmt.Sprintf("bench-exact-%d", i), UID: "00000000-0000-4000-8000-0000000000" + fmt.Sprintf("%02d", i%100),
		VCPUs: 1, MemoryMiB: 256,
		Disks:  []hypervisor.DiskConfig{{Name: "root"}},
		Kernel: filepath.Join(r.guestDir, guestKernel), Initrd: filepath.Join(r.guestDir, guestInitrd),
		Cmdline: "console=ttyS0 quiet",
	}
	p := qemu.Paths{
		Dir: dir, QMP: filepath.Join(dir, "qmp.sock"), Serial: filepath.Join(dir, "serial.sock"), VNC: filepath.Join(dir, "vnc.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"), PIDFile: filepath.Join(dir, "qemu.pid"),
		Disks: []hypervisor.DiskFile{{Name: "root", Path: overlay, Format: "qcow2"}},
	}
	args := qemu.BuildArgs(cfg, p, "tcg")
	if i == 1 {
		r.exactArgs = append([]string{"qemu-system-x86_64"}, args...)
	}
	cpu0 := r.meter.sample()
	t0 := time.Now()
	proc, err := startProc("exact-args qemu", filepath.Join(dir, "qemu.log"), "qemu-system-x86_64", args...)
	if err != nil {
		return b, err
	}
	defer proc.kill()
	mt, err := watchMarker(ctx, p.ConsoleLog, guestMarker, r.opts.pollEvery, r.opts.bootTimeout)
	if err != nil {
		return b, proc.failure(fmt.Errorf("exact-args qemu: %w", err))
	}
	b.TotalMs = msOf(mt.MarkerAt.Sub(t0))
	b.QEMUUpMs = msOf(mt.FileAt.Sub(t0))
	b.GuestMs = msOf(mt.MarkerAt.Sub(mt.FileAt))
	proc.kill()
	b.CPU = r.meter.since(cpu0)
	return b, nil
}
