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
	a := []string{
		"-name", esc(cfg.Name),
		"-accel", accel,
		"-machine", "q35",
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
	firmwareBoot := cfg.Kernel == ""
	for i, d := range p.Disks {
		node := fmt.Sprintf("disk%d", i)
		format := d.Format
		if format == "" {
			format = "qcow2"
		}
		a = append(a, "-blockdev",
			"driver="+format+",node-name="+node+",discard=unmap,file.driver=file,file.filename="+esc(d.Path))
		dev := "virtio-blk-pci,drive=" + node + ",id=virtio-" + node
		if d.Name != "" {
			dev += ",serial=" + esc(hypervisor.DiskSerial(d.Name))
		}
		if firmwareBoot && i == 0 {
			dev += ",bootindex=1"
		}
		a = append(a, "-device", dev)
	}
	if p.Seed != "" {
		a = append(a,
			"-blockdev", "driver=raw,node-name=seed,read-only=on,file.driver=file,file.filename="+esc(p.Seed),
			"-device", "virtio-blk-pci,drive=seed,id=virtio-seed,serial=cidata",
		)
	}
	for i, n := range cfg.NICs {
		id := fmt.Sprintf("net%d", i)
		mac := n.MAC
		if mac == "" {
			mac = MACFor(cfg.UID, i)
		}
		a = append(a,
			"-netdev", "user,id="+id,
			"-device", "virtio-net-pci,netdev="+id+",id=nic"+strconv.Itoa(i)+",mac="+mac,
		)
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
