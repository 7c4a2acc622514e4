package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Accelerators, and the choice between them.
const (
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
	AccelAuto = "auto"
)

// AccelChoice is the accelerator a host runs its guests under, and why.
type AccelChoice struct {
	Accel  string `json:"accel"`  // kvm or tcg
	Reason string `json:"reason"` // what decided it, for the host's status
}

// ProbeTimeout bounds one run of the probe guest. A working KVM runs it in
// well under a tenth of that; a broken one never finishes it.
const ProbeTimeout = 1500 * time.Millisecond

// The probe guest reports through the serial port and ends QEMU through
// isa-debug-exit, whose exit status is (value<<1)|1.
const (
	probeMarker16 = "PVPROBE-16\n"
	probeMarker32 = "PVPROBE-32\n"
	probeExitCode = 0x10<<1 | 1
)

// ProbeConfig says how to decide the accelerator.
type ProbeConfig struct {
	// Want is auto (run the probe), kvm (require KVM: an error when the
	// probe fails) or tcg (no probe).
	Want string
	// QEMUBinary runs the probe guest.
	QEMUBinary string
	// Device is the KVM device, default /dev/kvm.
	Device string
	// CacheFile remembers the answer for this boot of the machine and this
	// QEMU binary ("" to not cache). It belongs on a tmpfs such as /run.
	CacheFile string
	// Timeout bounds the probe guest; default ProbeTimeout.
	Timeout time.Duration
}

// DecideAccel chooses the accelerator for guests on this host. With auto it
// runs a tiny guest under KVM, which must print its markers in real and in
// protected mode and leave QEMU through isa-debug-exit within the timeout;
// a /dev/kvm that opens but cannot run a guest (a nested module that never
// leaves the reset vector, or QEMU's "KVM internal error") means TCG. The
// answer is cached per boot and per QEMU binary.
func DecideAccel(ctx context.Context, cfg ProbeConfig) (AccelChoice, error) {
	if cfg.Device == "" {
		cfg.Device = "/dev/kvm"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = ProbeTimeout
	}
	switch cfg.Want {
	case "", AccelAuto:
	case AccelTCG:
		return AccelChoice{Accel: AccelTCG, Reason: "tcg was asked for (--accel tcg)"}, nil
	case AccelKVM:
		c := probeKVM(ctx, cfg)
		if c.Accel != AccelKVM {
			return c, fmt.Errorf("kvm was asked for (--accel kvm) but does not work on this host: %s", c.Reason)
		}
		return c, nil
	default:
		return AccelChoice{}, fmt.Errorf("--accel: unknown accelerator %q (use auto, kvm or tcg)", cfg.Want)
	}
	return probeKVM(ctx, cfg), nil
}

// probeKVM answers from the cache, or runs the probe guest and caches what
// it found.
func probeKVM(ctx context.Context, cfg ProbeConfig) AccelChoice {
	if _, err := os.Stat(cfg.Device); err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: cfg.Device + " does not exist: no hardware virtualization offered to this host"}
	}
	f, err := os.OpenFile(cfg.Device, os.O_RDWR, 0)
	if err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: fmt.Sprintf("%s cannot be opened: %v", cfg.Device, unwrapPath(err))}
	}
	f.Close()
	key := probeCacheKey(cfg)
	if c, ok := readProbeCache(cfg.CacheFile, key); ok {
		return c
	}
	c, outcome := runProbe(ctx, cfg.QEMUBinary, AccelKVM, cfg.Timeout)
	if outcome == probeSilent {
		// No answer in time may be a broken KVM or a busy machine: ask
		// once more, with more time, before deciding.
		c, outcome = runProbe(ctx, cfg.QEMUBinary, AccelKVM, 3*cfg.Timeout)
	}
	// What QEMU or the guest said, or a second silence, is kept for the
	// boot; an interrupted probe or one that could not be set up is asked
	// again next time.
	if outcome != probeTransient {
		writeProbeCache(cfg.CacheFile, key, c)
	}
	return c
}

// How a probe ended.
type probeOutcome int

const (
	probeAnswered  probeOutcome = iota // the guest ran, or QEMU said why not
	probeSilent                        // no answer before the timeout
	probeTransient                     // interrupted, or not set up
)

// runProbe boots the probe guest under accel and says whether it ran.
// A silent guest may be a broken KVM or a machine too busy to start QEMU
// in time; a transient outcome says nothing about KVM.
func runProbe(ctx context.Context, qemuBinary, accel string, timeout time.Duration) (AccelChoice, probeOutcome) {
	fail := func(format string, args ...any) AccelChoice {
		return AccelChoice{Accel: AccelTCG, Reason: "the probe guest did not run under " + accel + ": " + fmt.Sprintf(format, args...)}
	}
	dir, err := os.MkdirTemp("", "polyvisor-probe-")
	if err != nil {
		return fail("making its directory: %v", err), probeTransient
	}
	defer os.RemoveAll(dir)
	rom := filepath.Join(dir, "probe.rom")
	if err := os.WriteFile(rom, probeROM(), 0o600); err != nil {
		return fail("writing its firmware: %v", err), probeTransient
	}
	args := []string{
		"-accel", accel,
		"-machine", "q35",
		"-m", "16",
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-bios", rom,
		"-serial", "stdio",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
	}
	if accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(pctx, qemuBinary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	out, errText := stdout.String(), firstLines(stderr.String(), 2)
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err == nil {
		code = 0
	}
	switch {
	case code == probeExitCode && strings.Contains(out, probeMarker16) && strings.Contains(out, probeMarker32):
		return AccelChoice{Accel: accel, Reason: fmt.Sprintf("a probe guest ran under %s in real and protected mode (%s)", accel, took)}, probeAnswered
	case strings.Contains(stderr.String(), "KVM internal error"):
		return fail("KVM internal error (%s)", errText), probeAnswered
	case pctx.Err() != nil && ctx.Err() == nil:
		stage := "it never left the reset vector"
		if strings.Contains(out, probeMarker16) {
			stage = "it stopped after real mode"
		}
		if errText != "" {
			stage += "; qemu said: " + errText
		}
		return fail("no answer within %s, %s", timeout, stage), probeSilent
	case ctx.Err() != nil:
		return fail("interrupted: %v", ctx.Err()), probeTransient
	case errText != "":
		return fail("qemu exited with status %d: %s", code, errText), probeAnswered
	default:
		return fail("qemu exited with status %d and printed %q", code, firstLines(out, 2)), probeAnswered
	}
}

// probeROM is a 64 KiB firmware image for QEMU's -bios. From the reset
// vector it writes probeMarker16 to the first serial port in real mode,
// enters 32-bit protected mode through its own GDT, writes probeMarker32,
// and leaves QEMU through isa-debug-exit. It is mapped at 0xFFFF0000.
func probeROM() []byte {
	const (
		size    = 64 << 10
		base    = 0xFFFF0000
		gdtOff  = 0x100
		gdtrOff = 0x120
		pmOff   = 0x200
	)
	rom := make([]byte, size)
	// Real mode, from offset 0 (the reset vector jumps here; CS's hidden
	// base is 0xFFFF0000, DS's is 0).
	c := []byte{0xBA, 0xF8, 0x03} // mov dx, 0x3f8
	for _, ch := range []byte(probeMarker16) {
		c = append(c, 0xB0, ch, 0xEE) // mov al, ch; out dx, al
	}
	c = append(c, 0xFA)                                                   // cli
	c = append(c, 0x2E, 0x66, 0x0F, 0x01, 0x16, gdtrOff&0xFF, gdtrOff>>8) // lgdt dword cs:[gdtr]
	c = append(c, 0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0)         // mov eax, cr0; or al, 1; mov cr0, eax
	c = append(c, 0x66, 0xEA)                                             // jmp dword 0x08:pm
	c = appendLE32(c, base+pmOff)
	c = append(c, 0x08, 0x00)
	copy(rom, c)
	// GDT: null, flat 32-bit code (0x08), flat data (0x10).
	copy(rom[gdtOff:], []byte{
		0, 0, 0, 0, 0, 0, 0, 0,
		0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00,
		0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00,
	})
	copy(rom[gdtrOff:], appendLE32([]byte{23, 0}, base+gdtOff))
	// Protected mode.
	p := []byte{
		0x66, 0xB8, 0x10, 0x00, // mov ax, 0x10
		0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, // mov ds/es/ss, ax
		0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
	}
	for _, ch := range []byte(probeMarker32) {
		p = append(p, 0xB0, ch, 0xEE)
	}
	p = append(p, 0xB0, 0x10, 0xE6, 0xF4) // mov al, 0x10; out 0xf4, al: isa-debug-exit
	p = append(p, 0xF4, 0xEB, 0xFD)       // hlt; jmp hlt (should QEMU not exit)
	copy(rom[pmOff:], p)
	// The reset vector, at 0xFFFFFFF0: jmp near to offset 0.
	copy(rom[0xFFF0:], []byte{0xE9, 0x0D, 0x00})
	return rom
}

func appendLE32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// probeCache is the file that remembers a probe's answer for one boot.
type probeCache struct {
	Key    string      `json:"key"`
	Choice AccelChoice `json:"choice"`
}

// probeCacheKey names what the answer depends on: this boot of the
// machine, the QEMU binary, and the device.
func probeCacheKey(cfg ProbeConfig) string {
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	k := strings.TrimSpace(string(boot)) + "|" + cfg.QEMUBinary + "|" + cfg.Device
	if fi, err := os.Stat(cfg.QEMUBinary); err == nil {
		k += fmt.Sprintf("|%d|%d", fi.Size(), fi.ModTime().UnixNano())
	}
	return k
}

func readProbeCache(path, key string) (AccelChoice, bool) {
	if path == "" {
		return AccelChoice{}, false
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return AccelChoice{}, false
	}
	var pc probeCache
	if json.Unmarshal(raw, &pc) != nil || pc.Key != key || (pc.Choice.Accel != AccelKVM && pc.Choice.Accel != AccelTCG) {
		return AccelChoice{}, false
	}
	pc.Choice.Reason += " (probed earlier in this boot)"
	return pc.Choice, true
}

func writeProbeCache(path, key string, c AccelChoice) {
	if path == "" {
		return
	}
	raw, err := json.Marshal(probeCache{Key: key, Choice: c})
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	tmp := path + ".tmp"
	if os.WriteFile(tmp, raw, 0o600) == nil {
		_ = os.Rename(tmp, path)
	}
}

// firstLines returns up to n non-empty lines of s, joined by "; ".
func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// unwrapPath drops the path from an *os.PathError, which the caller names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
