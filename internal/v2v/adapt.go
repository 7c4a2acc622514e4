package v2v

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// How a guest is made to run on Polyvisor's devices (VMPlan.Adaptation).
const (
	// AdaptNone: the source already runs the guest on virtio devices, so
	// its kernel or initramfs carries their drivers.
	AdaptNone = "none"
	// AdaptVirtV2V: virt-v2v-in-place converts the copied root disk
	// (virtio drivers into the initramfs, VMware tools out); the VM gets
	// virtio devices.
	AdaptVirtV2V = "virt-v2v-in-place"
	// AdaptCompatible: the guest is not converted; the VM gets devices a
	// Linux guest of another hypervisor has drivers for in its initramfs
	// (SATA disks on AHCI, e1000 NICs) instead of virtio ones.
	AdaptCompatible = "compatible-devices"
)

// Compatible devices of a VM whose guest is not converted.
const (
	CompatibleDiskBus  = "sata"
	CompatibleNICModel = "e1000"
)

// AdaptOptions bound a run of virt-v2v-in-place.
type AdaptOptions struct {
	// Timeout bounds the run (default DefaultAdaptTimeout); the tool and
	// everything it started (libguestfs's appliance) are killed past it.
	Timeout time.Duration
	// MaxOutput bounds the output kept (its end) for the error
	// (default 64 KiB).
	MaxOutput int
}

// DefaultAdaptTimeout bounds one conversion: virt-v2v boots an appliance,
// inspects the guest and rebuilds its initramfs, minutes under TCG.
const DefaultAdaptTimeout = 30 * time.Minute

// ErrDiskInUse is returned for a disk a running QEMU holds open.
var ErrDiskInUse = errors.New("the disk is in use by a running QEMU")

// Adapt runs virt-v2v-in-place on a copied root disk (qcow2) in the job
// directory dir: in a private scratch directory under dir (its HOME,
// TMPDIR and libguestfs cache) with a bare environment, in a process
// group of its own that is killed when the run ends or times out, its
// output bounded. libguestfs reads the guest's filesystems inside its own
// appliance VM, never with the host's kernel. It refuses a disk outside
// dir, a link, or one that a QEMU holds open (QEMU's image locks, asked
// through qemu-img): it never converts a disk in use.
func Adapt(ctx context.Context, tool, qemuImg, dir, disk string, o AdaptOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = DefaultAdaptTimeout
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = 64 << 10
	}
	if err := checkAdaptDisk(ctx, qemuImg, dir, disk); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(dir, "adapt-")
	if err != nil {
		return fmt.Errorf("converting the guest: making its scratch dir: %w", err)
	}
	defer os.RemoveAll(scratch)

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.Command(tool, "-i", "disk", "-if", "qcow2", disk)
	cmd.Dir = scratch
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=" + scratch, "TMPDIR=" + scratch,
		"LIBGUESTFS_BACKEND=direct", "LIBGUESTFS_CACHEDIR=" + scratch,
	}
	out := &tailBuffer{max: o.MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("converting the guest: starting %s: %w", tool, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("converting the guest with virt-v2v-in-place: stopped after %v: %w", o.Timeout, ctx.Err())
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what it left behind
	if err != nil {
		return fmt.Errorf("converting the guest with virt-v2v-in-place: %w: %s", err, adaptReason(out.String()))
	}
	return nil
}

// checkAdaptDisk refuses a disk the conversion must not touch.
func checkAdaptDisk(ctx context.Context, qemuImg, dir, disk string) error {
	absDir, err1 := filepath.Abs(dir)
	abs, err2 := filepath.Abs(disk)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("converting the guest: %w", err)
	}
	if rel, err := filepath.Rel(absDir, abs); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("converting the guest: disk %s is not in the job directory %s: refused", disk, dir)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return fmt.Errorf("converting the guest: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("converting the guest: disk %s is not a regular file: refused", disk)
	}
	// qemu-img takes the same locks as QEMU: it cannot open an image a
	// running QEMU writes.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, qemuImg, "info", "-f", "qcow2", abs).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("lock")) {
			return fmt.Errorf("converting the guest: disk %s: %w: %s", disk, ErrDiskInUse, lastLine(out))
		}
		return fmt.Errorf("converting the guest: reading disk %s: %w: %s", disk, err, lastLine(out))
	}
	return nil
}

// adaptReason is what a failed conversion said: its error lines.
func adaptReason(out string) string {
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "error:") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		return lastLine([]byte(out))
	}
	return strings.Join(errs, "; ")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
