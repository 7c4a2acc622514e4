package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// A VM with EFI firmware boots OVMF (Debian's ovmf package): the firmware
// code, read-only and shared by all VMs, on the first flash chip, and a
// copy of OVMF's variable store template, the VM's own writable NVRAM, on
// the second. The copy is made by Create in the VM's directory (efivars.fd),
// like its disks: QEMU opens both on its command line before it chroots
// and drops its privileges, so nothing is opened by name inside the jail.
// The NVRAM lives as long as the VM's directory: kept across restarts,
// removed by Destroy. A live migration carries it: QEMU migrates the flash
// contents with the guest's memory and writes them into the destination's
// copy when the VM resumes there.

// Default OVMF files (Debian's ovmf, 4 MiB variant).
const (
	DefaultOVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultOVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// efiVarsFile is a VM's NVRAM in its directory.
const efiVarsFile = "efivars.fd"

// Keys of Handle.Extra for an EFI VM: the firmware code it was made for
// (its NVRAM's layout matches that build) and its NVRAM.
const (
	extraEFICode = "efiCode"
	extraEFIVars = "efiVars"
)

// maxVarsBytes bounds the variable store template copied per VM.
const maxVarsBytes = 64 << 20

// ovmf returns the firmware code and variable store template the driver
// uses.
func (d *Driver) ovmf() (code, vars string) {
	code, vars = d.cfg.OVMFCode, d.cfg.OVMFVars
	if code == "" {
		code = DefaultOVMFCode
	}
	if vars == "" {
		vars = DefaultOVMFVars
	}
	return code, vars
}

// isEFI tells whether a VM's config asks for EFI firmware.
func isEFI(cfg hypervisor.VMConfig) bool { return cfg.Firmware == hypervisor.FirmwareEFI }

// validateFirmware checks a VMConfig's firmware.
func validateFirmware(cfg hypervisor.VMConfig) error {
	switch cfg.Firmware {
	case "", hypervisor.FirmwareBIOS, hypervisor.FirmwareEFI:
		return nil
	}
	return fmt.Errorf("validating vm config: firmware %q is neither %s nor %s", cfg.Firmware, hypervisor.FirmwareBIOS, hypervisor.FirmwareEFI)
}

// createEFIVars gives an EFI VM its NVRAM: a copy of OVMF's variable store
// template in its directory, recorded in the handle with the code it goes
// with.
func (d *Driver) createEFIVars(dir string, h *hypervisor.Handle) error {
	code, tmpl := d.ovmf()
	for _, f := range []string{code, tmpl} {
		fi, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("making efi nvram: OVMF is not usable on this host (apt-get install ovmf): %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("making efi nvram: %s is not a regular file", f)
		}
	}
	path := filepath.Join(dir, efiVarsFile)
	if err := copyVars(tmpl, path); err != nil {
		return err
	}
	if h.Extra == nil {
		h.Extra = map[string]string{}
	}
	h.Extra[extraEFICode] = code
	h.Extra[extraEFIVars] = path
	return nil
}

// copyVars copies the variable store template to a new file, durably.
func copyVars(tmpl, path string) (err error) {
	in, err := os.Open(tmpl)
	if err != nil {
		return fmt.Errorf("making efi nvram: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("making efi nvram: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("making efi nvram: %w", cerr)
		}
	}()
	n, err := io.Copy(out, io.LimitReader(in, maxVarsBytes+1))
	if err != nil {
		return fmt.Errorf("making efi nvram: copying %s: %w", tmpl, err)
	}
	if n > maxVarsBytes {
		return fmt.Errorf("making efi nvram: %s is over %d bytes", tmpl, maxVarsBytes)
	}
	if n == 0 {
		return fmt.Errorf("making efi nvram: %s is empty", tmpl)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("making efi nvram: %w", err)
	}
	return nil
}

// checkEFI makes sure an EFI VM about to start has its firmware and
// NVRAM: a VM's firmware is decided when it is made.
func checkEFI(h *hypervisor.Handle, cfg hypervisor.VMConfig) error {
	code, vars := h.Extra[extraEFICode], h.Extra[extraEFIVars]
	if !isEFI(cfg) {
		if vars != "" {
			return fmt.Errorf("starting vm %s: it was made with efi firmware, not %s", h.UID, orBIOS(cfg.Firmware))
		}
		return nil
	}
	if vars == "" || code == "" {
		return fmt.Errorf("starting vm %s: it was made without efi firmware (no nvram): %w", h.UID, errors.ErrUnsupported)
	}
	for _, f := range []string{code, vars} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("starting vm %s with efi firmware: %w", h.UID, err)
		}
	}
	return nil
}

func orBIOS(fw string) string {
	if fw == "" {
		return hypervisor.FirmwareBIOS
	}
	return fw
}

// efiArgs are the flash chips of an EFI VM: the firmware code read-only,
// its NVRAM writable; machineOpts names them to the q35 machine.
func efiArgs(p Paths) (blockdevs []string, machineOpts string) {
	if p.EFICode == "" || p.EFIVars == "" {
		return nil, ""
	}
	return []string{
		"-blockdev", "driver=raw,node-name=efi-code,read-only=on,file.driver=file,file.read-only=on,file.filename=" + esc(p.EFICode),
		"-blockdev", "driver=raw,node-name=efi-vars,file.driver=file,file.filename=" + esc(p.EFIVars),
	}, ",pflash0=efi-code,pflash1=efi-vars"
}
