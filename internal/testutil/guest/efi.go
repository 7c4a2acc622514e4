package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// EFIStub is systemd-boot's Linux EFI stub (Debian's systemd-boot-efi).
const EFIStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// EFIBoot builds an EFI-bootable qcow2 disk of the guest in dir and
// returns its path: a GPT disk whose one partition is an EFI system
// partition (FAT32) holding \EFI\BOOT\BOOTX64.EFI, a unified kernel image
// made of systemd-boot's stub with the guest's kernel, initramfs and
// cmdline in its sections. UEFI firmware (OVMF) loads it from the
// removable-media path with no boot entry and no boot loader menu. It
// takes well under a second; like Boot, use it as a backing file.
//
// It needs objcopy (binutils), the stub (systemd-boot-efi), mkfs.vfat
// (dosfstools), mtools and sfdisk (util-linux).
func EFIBoot(t testing.TB, g Paths, dir, cmdline string) string {
	t.Helper()
	objcopy := peer.Binary(t, "objcopy", "apt-get install binutils")
	mkfs := peer.Binary(t, "mkfs.vfat", "apt-get install dosfstools")
	mmd := peer.Binary(t, "mmd", "apt-get install mtools")
	mcopy := peer.Binary(t, "mcopy", "apt-get install mtools")
	sfdisk := peer.Binary(t, "sfdisk", "apt-get install util-linux")
	if _, err := os.Stat(EFIStub); err != nil {
		peer.Missing(t, "systemd-boot's EFI stub is not installed (apt-get install systemd-boot-efi): %v", err)
	}
	run := func(name string, stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building efi guest disk: %s %v: %v\n%s", name, args, err, out)
		}
	}
	osrel := filepath.Join(dir, "os-release")
	cl := filepath.Join(dir, "cmdline")
	for f, s := range map[string]string{osrel: "ID=polyvisor-guest\nNAME=\"Polyvisor test guest\"\n", cl: cmdline} {
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The sections go above the stub's own (which end below 0x20000);
	// the kernel (~14 MiB) gets 32 MiB of address space before the
	// initramfs.
	uki := filepath.Join(dir, "BOOTX64.EFI")
	run(objcopy, "",
		"--add-section", ".osrel="+osrel, "--change-section-vma", ".osrel=0x20000",
		"--add-section", ".cmdline="+cl, "--change-section-vma", ".cmdline=0x30000",
		"--add-section", ".linux="+g.Kernel, "--change-section-vma", ".linux=0x2000000",
		"--add-section", ".initrd="+g.Initrd, "--change-section-vma", ".initrd=0x4000000",
		EFIStub, uki)
	fi, err := os.Stat(uki)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB for the GPT, then the ESP: FAT32 needs at least ~33 MiB.
	espMiB := max(48, fi.Size()>>20+16)
	raw := filepath.Join(dir, "efi.raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, (espMiB+2)<<20); err != nil {
		t.Fatal(err)
	}
	run(sfdisk, "label: gpt\nstart=2048, size="+fmt.Sprint(espMiB*2048)+", type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n", "-q", raw)
	run(mkfs, "", "-F", "32", "--offset", "2048", raw, fmt.Sprint(espMiB*1024))
	img := raw + "@@1M"
	run(mmd, "", "-i", img, "::/EFI", "::/EFI/BOOT")
	run(mcopy, "", "-i", img, uki, "::/EFI/BOOT/BOOTX64.EFI")
	out := filepath.Join(dir, "efi.qcow2")
	run("qemu-img", "", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out)
	for _, f := range []string{raw, uki, osrel, cl} {
		os.Remove(f)
	}
	return out
}
