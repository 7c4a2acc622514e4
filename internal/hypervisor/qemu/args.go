package qemu

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Paths are the files of one VM that appear on QEMU's command line.
type Paths struct {
	Dir        string // the VM's directory
	QMP        string // QMP unix socket
	Serial     string // serial console unix socket
	VNC        string // VNC unix socket
	ConsoleLog string // serial output, recorded even when nobody is attached
	PIDFile    string
	// Disks are the disk files, in the order of the VM's disks.
	Disks []hypervisor.DiskFile
	// Seed is the NoCloud seed ISO, empty when the VM has none.
	Seed string
	// EFICode and EFIVars are the OVMF code and the VM's NVRAM of a VM
	// with EFI firmware; empty for SeaBIOS.
	EFICode, EFIVars string
	// NetFDs are the descriptors QEMU inherits for the VM's NICs, in their
	// order: for a user-mode NIC a connected stream socket to its network
	// (passt), for a NIC with a Tap the tap. A NIC without one has no
	// network at all.
	NetFDs []int
	// Jail is how QEMU confines itself.
	Jail Jail
	// Incoming starts QEMU waiting for a migration stream (-incoming
	// defer), which migrate-incoming later names.
	Incoming bool
	// BootVolume is the VM's root volume, nil when its root disk is its own.
	BootVolume *BootVolume
}

// Jail is how QEMU confines itself. It opens everything on its command
// line (disks, kernel, sockets, logs) as the agent's user, then, before
// the guest runs a single instruction, chroots into Chroot and drops to
// User; the seccomp sandbox holds from its start.
type Jail struct {
	// Sandbox turns on QEMU's seccomp filter: no obsolete system calls,
	// no new processes, no changes of scheduling or resources, and, when
	// QEMU keeps the agent's user, no set*id calls.
	Sandbox bool
	// User is the unprivileged user QEMU drops to; "" keeps the agent's.
	User string
	// Chroot is an empty directory QEMU chroots into; "" for none.
	Chroot string
	// RunWithUser and RunWithChroot spell the drop as -run-with user= (QEMU
	// 9.1 and later) and -run-with chroot= (8.1 and later) rather than
	// -runas and -chroot.
	RunWithUser, RunWithChroot bool
}

// sandbox is the value of QEMU's -sandbox option. A QEMU that drops to
// another user itself (-runas) needs setuid and setgid to do so, and the
// filter is in force before that: it keeps elevateprivileges allowed. Once
// dropped, all its user and group ids are the unprivileged user's and it
// holds no capabilities, so set*id calls cannot raise it again, and
// spawn=deny keeps it from executing a set-user-id program.
func (j Jail) sandbox() string {
	v := "on,obsolete=deny"
	if j.User == "" {
		v += ",elevateprivileges=deny"
	}
	return v + ",spawn=deny,resourcecontrol=deny"
}

// args are the options that confine QEMU.
func (j Jail) args() []string {
	var a []string
	if j.Sandbox {
		a = append(a, "-sandbox", j.sandbox())
	}
	var runWith []string
	if j.Chroot != "" {
		if j.RunWithChroot {
			runWith = append(runWith, "chroot="+esc(j.Chroot))
		} else {
			a = append(a, "-chroot", j.Chroot)
		}
	}
	if j.User != "" {
		if j.RunWithUser {
			runWith = append(runWith, "user="+esc(j.User))
		} else {
			a = append(a, "-runas", j.User)
		}
	}
	if len(runWith) > 0 {
		a = append(a, "-run-with", strings.Join(runWith, ","))
	}
	return a
}

// Defaults for a VMConfig that leaves sizes at zero.
const (
	defaultVCPUs     = 1
	defaultMemoryMiB = 256
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// BuildArgs returns QEMU's command line (without the binary) for a VM. It
// is a pure function of its inputs. accel is "kvm" or "tcg".
func BuildArgs(cfg hypervisor.VMConfig, p Paths, accel string) []string {
	efi, machineOpts := efiArgs(p)
	a := []string{
		"-name", esc(cfg.Name),
		"-accel", accel,
		"-machine", "q35" + machineOpts,
	}
	if accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	// Under TCG QEMU's default CPU model (qemu64) is the fast one: "max"
	// emulates far more features and boots noticeably slower.
	vcpus, mem := cfg.VCPUs, cfg.MemoryMiB
	if vcpus <= 0 {
		vcpus = defaultVCPUs
	}
	if mem <= 0 {
		mem = defaultMemoryMiB
	}
	a = append(a,
		"-m", strconv.FormatInt(mem, 10),
		"-smp", strconv.Itoa(vcpus),
		"-nodefaults",
		"-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
	)
	a = append(a, p.Jail.args()...)
	if uuidRE.MatchString(cfg.UID) {
		a = append(a, "-uuid", cfg.UID)
	}
	a = append(a,
		"-pidfile", p.PIDFile,
		"-chardev", "socket,id=qmp,path="+esc(p.QMP)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path="+esc(p.Serial)+",server=on,wait=off,logfile="+esc(p.ConsoleLog)+",logappend=on",
		"-serial", "chardev:serial0",
		"-device", "VGA,id=video0",
		"-vnc", "unix:"+esc(p.VNC),
	)
	a = append(a, efi...)
	firmwareBoot := cfg.Kernel == ""
	sata := 0
	for i, d := range p.Disks {
		node := fmt.Sprintf("disk%d", i)
		format := d.Format
		if format == "" {
			format = "qcow2"
		}
		a = append(a, "-blockdev",
			"driver="+format+",node-name="+node+",discard=unmap,file.driver=file,file.filename="+esc(d.Path))
		dev := "virtio-blk-pci,drive=" + node + ",id=virtio-" + node
		if i < len(cfg.Disks) && cfg.Disks[i].Bus == busSATA {
			dev = sataDevice(node, &sata)
		}
		if d.Name != "" {
			dev += ",serial=" + esc(hypervisor.DiskSerial(d.Name))
		}
		if firmwareBoot && i == 0 && p.BootVolume == nil {
			dev += ",bootindex=1"
		}
		a = append(a, "-device", dev)
	}
	if p.BootVolume != nil {
		a = append(a, p.BootVolume.args()...)
	}
	if p.Seed != "" {
		a = append(a,
			"-blockdev", "driver=raw,node-name=seed,read-only=on,file.driver=file,file.filename="+esc(p.Seed),
			"-device", "virtio-blk-pci,drive=seed,id=virtio-seed,serial=cidata",
		)
	}
	a = append(a, slotArgs()...)
	slot := 0
	for i, n := range cfg.NICs {
		id := fmt.Sprintf("net%d", i)
		mac := n.MAC
		if mac == "" {
			mac = MACFor(cfg.UID, i)
		}
		if n.Tap != "" {
			// A NIC on a network: its tap, in a slot of its own (see nics.go).
			model := nicDevice(n)
			dev := model + ",id=" + nicID(mac) + ",mac=" + mac + ",bus=" + slotID(slot)
			if i < len(p.NetFDs) {
				a = append(a, "-netdev", "tap,id="+netdevID(mac)+",fd="+strconv.Itoa(p.NetFDs[i])+",vhost=off")
				dev = model + ",netdev=" + netdevID(mac) + ",id=" + nicID(mac) + ",mac=" + mac + ",bus=" + slotID(slot)
			}
			a = append(a, "-device", dev)
			slot++
			continue
		}
		dev := nicDevice(n) + ",id=nic" + strconv.Itoa(i) + ",mac=" + mac
		if i < len(p.NetFDs) {
			// Never QEMU's own user-mode network (slirp): it maps the
			// gateway address to the host's loopback.
			a = append(a, "-netdev", "stream,id="+id+",server=off,addr.type=fd,addr.str="+strconv.Itoa(p.NetFDs[i]))
			dev = nicDevice(n) + ",netdev=" + id + ",id=nic" + strconv.Itoa(i) + ",mac=" + mac
		}
		a = append(a, "-device", dev)
	}
	if !firmwareBoot {
		a = append(a, "-kernel", cfg.Kernel) // taken verbatim, no option parsing
		if cfg.Initrd != "" {
			a = append(a, "-initrd", cfg.Initrd)
		}
		if cfg.Cmdline != "" {
			a = append(a, "-append", cfg.Cmdline)
		}
	}
	if cfg.StartPaused {
		a = append(a, "-S")
	}
	if p.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// esc escapes a value inside a QEMU option string, where ',' separates
// options and is written ",,".
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// MACFor derives a stable, locally administered MAC (52:54:00 prefix) for a
// VM's NIC from its UID and the NIC's index.
func MACFor(uid string, index int) string {
	sum := sha256.Sum256([]byte(uid + "/" + strconv.Itoa(index)))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2])
}
