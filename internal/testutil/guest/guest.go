// Package guest gives tests Polyvisor's tiny test guest: a Debian cloud
// kernel, a busybox initramfs, a small blank qcow2 disk and the same guest
// on a bootable qcow2 disk, built by scripts/build-guest.sh once per machine
// into a shared cache directory.
//
// Boot the guest directly (Kernel, Initrd and Cmdline), or through the
// firmware from an overlay of Boot: SeaBIOS (QEMU's default on q35 and pc)
// loads SYSLINUX from the disk's MBR and active FAT partition, which boots
// the same kernel and initramfs with Cmdline at once. Boot works from
// virtio-blk, virtio-scsi, SATA (AHCI) and IDE; it has no UEFI loader.
//
// The guest prints POLYVISOR-GUEST-READY on ttyS0 about 2-3 s after boot
// under TCG, then "polyvisor-guest: disk vdX <sectors>" per disk,
// "polyvisor-guest: seed instance-id=<id>" when a NoCloud seed is attached,
// and "polyvisor-tick N" every 0.2 s; the ACPI power button makes it print
// AcpiPoweroffLine and power off. A guest that prints CommandsLine powers
// itself off (printing PoweroffLine) when PoweroffCommand and a newline
// are typed on its serial console.
//
// Booted with RunCmdline(script), the guest also brings its NICs up with
// DHCP (printing DHCPPrefix lines), runs the shell script with busybox in
// the background, its output on the console, and prints RunExitPrefix and
// the script's exit status. Guests built before this feature lack it:
// RequireRun says so.
package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// Lines the guest prints on its serial console.
const (
	ReadyMarker      = "POLYVISOR-GUEST-READY"
	TickPrefix       = "polyvisor-tick "
	SeedPrefix       = "polyvisor-guest: seed instance-id="
	DiskPrefix       = "polyvisor-guest: disk "
	AcpiPoweroffLine = "polyvisor-guest: acpi power button, powering off"
	// CommandsLine follows ReadyMarker in a guest that takes
	// PoweroffCommand; guests built before it do not print it.
	CommandsLine    = "polyvisor-guest: commands polyvisor-poweroff"
	PoweroffCommand = "polyvisor-poweroff"
	PoweroffLine    = "polyvisor-guest: powering off on request"
	// With RunCmdline.
	DHCPPrefix    = "polyvisor-guest: dhcp "     // then "<nic> <address> gateway <gateway>"
	RunExitPrefix = "polyvisor-guest: run exit=" // then the script's exit status
)

// ExecLine is the line to type on the guest's serial console to run
// script while it runs (a guest whose features hold "exec"): its output
// comes back in lines beginning ExecOutputPrefix(tag), and its exit status
// after ExecExitPrefix(tag).
func ExecLine(tag, script string) string {
	return "polyvisor-exec " + tag + " " + base64.StdEncoding.EncodeToString([]byte(script)) + "\n"
}

// ExecOutputPrefix begins each line of output of the script run by
// ExecLine(tag, ...).
func ExecOutputPrefix(tag string) string { return "polyvisor-exec " + tag + ": " }

// ExecExitPrefix is followed by the exit status of the script run by
// ExecLine(tag, ...).
func ExecExitPrefix(tag string) string { return "polyvisor-exec " + tag + " exit=" }

// RequireExec fails the test when the guest in p cannot run commands typed
// on its serial console (it was built by an older scripts/build-guest.sh).
func RequireExec(t testing.TB, p Paths) {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(p.Dir, "features"))
	for _, f := range strings.Fields(string(b)) {
		if f == "exec" {
			return
		}
	}
	t.Fatalf("the test guest in %s cannot run commands typed on its console (no \"exec\" in its features file): rebuild it with scripts/build-guest.sh %s", p.Dir, p.Dir)
}

// RunCmdline is Cmdline that makes the guest run script (a busybox sh
// script) once it is up. The script travels base64-encoded in one kernel
// parameter, polyvisor.run; the kernel command line holds 2 KiB in all.
func RunCmdline(script string) string {
	return Cmdline + " polyvisor.run=" + base64.StdEncoding.EncodeToString([]byte(script))
}

// RequireRun fails the test when the guest in p predates RunCmdline (it was
// built by an older scripts/build-guest.sh into POLYVISOR_GUEST_DIR, which
// is used as it is).
func RequireRun(t testing.TB, p Paths) {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(p.Dir, "features"))
	for _, f := range strings.Fields(string(b)) {
		if f == "run" {
			return
		}
	}
	t.Fatalf("the test guest in %s cannot run commands (no \"run\" in its features file): rebuild it with scripts/build-guest.sh %s", p.Dir, p.Dir)
}

// Cmdline is the kernel command line the guest is meant to boot with.
const Cmdline = "console=ttyS0 quiet no_timer_check"

// Paths are the built guest's files.
type Paths struct {
	Kernel string // vmlinuz
	Initrd string // initrd.img
	Disk   string // disk.qcow2, a blank 64 MiB image to use as a backing file
	// Boot is boot.qcow2, a 64 MiB BIOS-bootable disk of the same guest
	// (MBR, one FAT16 partition with SYSLINUX, the kernel and the
	// initramfs). Use it as a backing file: never boot it in place.
	Boot string
	Dir  string // the directory holding them
}

var (
	mu    sync.Mutex
	built *Paths
)

// Build returns the test guest, building it on first use. The directory is
// $POLYVISOR_GUEST_DIR when set (used as is when it holds a guest, built
// into otherwise), else $TMPDIR/polyvisor-guest-cache. A guest built by the
// current script is reused without running it again; builds from several
// test processes are serialized with a file lock. Build fails the test
// when the guest cannot be built.
func Build(t testing.TB) Paths {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if built != nil {
		return *built
	}
	dir := os.Getenv("POLYVISOR_GUEST_DIR")
	explicit := dir != ""
	if !explicit {
		dir = filepath.Join(os.TempDir(), "polyvisor-guest-cache")
	}
	p := Paths{
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
		Disk:   filepath.Join(dir, "disk.qcow2"),
		Boot:   filepath.Join(dir, "boot.qcow2"),
		Dir:    dir,
	}
	if explicit && complete(p) {
		built = &p
		return p
	}
	script, err := findScript()
	if err != nil {
		t.Fatalf("building test guest: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("building test guest: %v", err)
	}
	unlock, err := lock(filepath.Join(dir, ".lock"))
	if err != nil {
		t.Fatalf("building test guest: %v", err)
	}
	defer unlock()
	if !complete(p) || !builtBy(dir, script) {
		t.Logf("building test guest into %s with %s", dir, script)
		var out bytes.Buffer
		cmd := exec.Command("bash", script, dir)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("building test guest: %s %s: %v\n%s", script, dir, err, out.String())
		}
	}
	if !complete(p) {
		t.Fatalf("building test guest: %s did not produce %s", script, dir)
	}
	built = &p
	return p
}

// RequireQEMU skips the test when QEMU is not installed, or fails it
// where peers are required (package peer).
func RequireQEMU(t testing.TB) {
	t.Helper()
	for _, b := range []string{"qemu-system-x86_64", "qemu-img"} {
		peer.Binary(t, b, "apt-get install qemu-system-x86 qemu-utils")
	}
}

func complete(p Paths) bool {
	for _, f := range []string{p.Kernel, p.Initrd, p.Disk, p.Boot} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// builtBy reports whether dir's stamp ("<kernel package> <script sha256>")
// names the current script, so an unchanged guest needs no apt at all.
func builtBy(dir, script string) bool {
	stamp, err := os.ReadFile(filepath.Join(dir, ".stamp"))
	if err != nil {
		return false
	}
	b, err := os.ReadFile(script)
	if err != nil {
		return false
	}
	sum := sha256.Sum256(b)
	f := strings.Fields(string(stamp))
	return len(f) == 2 && f[1] == hex.EncodeToString(sum[:])
}

// findScript locates scripts/build-guest.sh in the module root, looking up
// from the working directory, then from this source file.
func findScript() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			s := filepath.Join(dir, "scripts", "build-guest.sh")
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if _, err := os.Stat(s); err == nil {
					return s, nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("scripts/build-guest.sh not found above %v", starts)
}

func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("taking build lock: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
