package v2v

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// PlanVersion is the version of the plan document; Run refuses others.
const PlanVersion = 1

// Plan is what a migration will do, per source VM: written by `migration
// plan`, read back by `migration run`.
type Plan struct {
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	// Source names where the VMs come from ("file", "ova", a provider).
	Source string `json:"source"`
	// Host is the Polyvisor host the VMs move to.
	Host string   `json:"host"`
	VMs  []VMPlan `json:"vms"`
}

// VMPlan is what happens to one source VM.
type VMPlan struct {
	// Name is the Polyvisor VM made from the source.
	Name      string     `json:"name"`
	Source    Hardware   `json:"source"`
	Host      string     `json:"host"`
	VCPUs     int        `json:"vcpus"`
	MemoryMiB int64      `json:"memoryMiB"`
	Disks     []DiskPlan `json:"disks"`
	NICs      []NICPlan  `json:"nics,omitempty"`
	// Firmware is the VM's: bios (SeaBIOS) or efi (OVMF), as the
	// source's.
	Firmware string `json:"firmware,omitempty"`
	// Adaptation is how the guest is made to run on Polyvisor's devices
	// (Adapt* values): none (the source already gives it virtio
	// devices), virt-v2v-in-place (when installed), or
	// compatible-devices (SATA disks and e1000 NICs, when it is not, or
	// when the conversion failed).
	Adaptation string `json:"adaptation"`
	// Conversions say what changes between source and destination.
	Conversions []string `json:"conversions,omitempty"`
	// Warnings say what may go wrong and is not checked here.
	Warnings []string `json:"warnings,omitempty"`
	// Blockers say why the VM cannot move; a VM with blockers is skipped
	// by Run.
	Blockers []string `json:"blockers,omitempty"`
	// CopyBytes is the most that will be copied (the disks' capacities);
	// EstimatedSeconds is the copy's time at the rate the plan assumed.
	CopyBytes        int64   `json:"copyBytes"`
	EstimatedSeconds float64 `json:"estimatedSeconds"`
}

// DiskPlan is one disk of a VMPlan.
type DiskPlan struct {
	From Disk `json:"from"`
	// Name is the Polyvisor VM's disk; Image the image it becomes.
	Name  string `json:"name"`
	Image string `json:"image"`
	// Bus is the destination's bus: virtio (virtio-blk), or sata for a
	// guest that is not converted (compatible-devices).
	Bus string `json:"bus"`
}

// NICPlan is one NIC of a VMPlan.
type NICPlan struct {
	From    NIC    `json:"from"`
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
	// Model is virtio-net, or e1000 for a guest that is not converted
	// (compatible-devices).
	Model string `json:"model"`
}

// Options are what Plan maps a source VM with.
type Options struct {
	// Host is the destination Polyvisor host; "" lets the scheduler
	// place the VM.
	Host string
	// NetworkMap maps a source network to a Polyvisor network ("user" or
	// a network of the project); the key "*" maps every other network.
	NetworkMap map[string]string
	// MaxDiskBytes bounds a disk's capacity (default DefaultMaxDiskBytes).
	MaxDiskBytes int64
	// RateBytesPerSecond is the copy rate estimates assume (default
	// DefaultRate).
	RateBytesPerSecond float64
	// VirtV2V is virt-v2v-in-place's path, "" when it is not installed.
	VirtV2V string
}

// DefaultMaxDiskBytes bounds a migrated disk's capacity: 16 TiB.
const DefaultMaxDiskBytes = 16 << 40

// DefaultRate is the copy rate an estimate assumes when none was
// measured: a conservative 100 MB/s.
const DefaultRate = 100e6

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// VMName turns a source VM's name into a Polyvisor VM name (a DNS
// label): lower case, other characters as dashes, at most 63.
func VMName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	for strings.Contains(n, "--") {
		n = strings.ReplaceAll(n, "--", "-")
	}
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	return n
}

// PlanVM maps one source VM onto a Polyvisor VM. It never fails: what
// cannot move is said in the result's Blockers.
func PlanVM(hw Hardware, o Options) VMPlan {
	if o.MaxDiskBytes <= 0 {
		o.MaxDiskBytes = DefaultMaxDiskBytes
	}
	if o.RateBytesPerSecond <= 0 {
		o.RateBytesPerSecond = DefaultRate
	}
	p := VMPlan{Name: VMName(hw.Name), Source: hw, Host: o.Host, VCPUs: hw.VCPUs, MemoryMiB: hw.MemoryMiB}
	block := func(format string, args ...any) { p.Blockers = append(p.Blockers, fmt.Sprintf(format, args...)) }
	if !nameRE.MatchString(p.Name) {
		block("source name %q gives no valid VM name (a DNS label)", hw.Name)
	}
	if hw.VCPUs < 1 || hw.VCPUs > 512 {
		block("source declares %d vCPUs: want 1 to 512", hw.VCPUs)
	}
	if hw.MemoryMiB < 16 || hw.MemoryMiB > 16<<20 {
		block("source declares %d MiB of memory: want 16 MiB to 16 TiB", hw.MemoryMiB)
	}
	switch hw.Firmware {
	case FirmwareBIOS, "":
		p.Firmware = FirmwareBIOS
	case FirmwareEFI:
		p.Firmware = FirmwareEFI
		p.Conversions = append(p.Conversions, "firmware EFI → OVMF (UEFI), with a new NVRAM of the VM's own")
		p.Warnings = append(p.Warnings, "the source's EFI boot entries and variables are not carried: OVMF boots the first disk's EFI system partition through its removable-media path (\\EFI\\BOOT\\BOOTX64.EFI), which most distributions install; a guest whose boot loader is only at its own path (e.g. Debian without grub's --force-extra-removable) stops at the firmware; Secure Boot is off")
	default:
		block("source firmware %q is neither bios nor efi", hw.Firmware)
	}
	if isWindows(hw.GuestOS) {
		block("guest %q is Windows: refused; a Windows guest needs the virtio-win drivers (viostor, netkvm) installed before it moves, or it stops with INACCESSIBLE_BOOT_DEVICE; Polyvisor does not install them and has not tested Windows guests", hw.GuestOS)
	}
	if len(hw.Disks) == 0 {
		block("source has no disks")
	}

	needsVirtio := false
	for i, d := range hw.Disks {
		dp := DiskPlan{From: d, Name: fmt.Sprintf("disk%d", i), Bus: BusVirtio}
		if i == 0 {
			dp.Name = "root"
		}
		dp.Image = p.Name + "-" + dp.Name
		if d.CapacityBytes < 0 || d.CapacityBytes > o.MaxDiskBytes {
			block("disk %q declares %d bytes: over the limit of %d", d.Name, d.CapacityBytes, o.MaxDiskBytes)
		}
		p.CopyBytes += max(d.CapacityBytes, 0)
		if d.Bus != BusVirtio {
			needsVirtio = true
			p.Conversions = append(p.Conversions, fmt.Sprintf("disk %q: %s bus → virtio-blk", d.Name, busName(d.Bus)))
		}
		if d.Source.Format != "" && d.Source.Format != "qcow2" {
			p.Conversions = append(p.Conversions, fmt.Sprintf("disk %q: %s → qcow2", d.Name, d.Source.Format))
		}
		p.Disks = append(p.Disks, dp)
	}
	for i, n := range hw.NICs {
		np := NICPlan{From: n, Model: "virtio-net"}
		net, ok := o.NetworkMap[n.Network]
		if !ok {
			net, ok = o.NetworkMap["*"]
		}
		if !ok || net == "" {
			block("NIC %d: source network %q has no mapping: map it in the network map (%s=NETWORK, or *=NETWORK)", i, n.Network, n.Network)
		}
		np.Network = net
		if n.MAC != "" {
			mac, err := checkMAC(n.MAC)
			if err != nil {
				block("NIC %d: %v", i, err)
			}
			np.MAC = mac
		}
		if n.Model != "virtio" && n.Model != "virtio-net" {
			needsVirtio = true
			p.Conversions = append(p.Conversions, fmt.Sprintf("NIC %d: %s → virtio-net, MAC %s kept", i, orUnknown(n.Model), orUnknown(n.MAC)))
		}
		p.NICs = append(p.NICs, np)
	}
	// A guest the source already runs on virtio disks and NICs has their
	// drivers. Any other may lack them in its initramfs: virt-v2v-in-place
	// inspects it and adds them; without it the VM gets devices such a
	// guest has drivers for.
	p.Adaptation = AdaptNone
	if needsVirtio {
		if o.VirtV2V != "" && !isWindows(hw.GuestOS) {
			p.Adaptation = AdaptVirtV2V
			p.Conversions = append(p.Conversions, "guest converted with virt-v2v-in-place: virtio drivers in its initramfs, VMware tools removed (if the conversion fails, the VM gets SATA disks and e1000 NICs instead)")
		} else {
			p = p.Compatible("virt-v2v-in-place is not installed (Debian's virt-v2v)")
		}
	}
	p.EstimatedSeconds = float64(p.CopyBytes) / o.RateBytesPerSecond
	return p
}

// Compatible is the plan with the guest not converted: SATA disks (on
// AHCI, which Linux initramfs images carry far more often than
// virtio_blk) and e1000 NICs in place of virtio devices, for the reason
// given, said in its conversions and warnings.
func (p VMPlan) Compatible(reason string) VMPlan {
	p.Adaptation = AdaptCompatible
	p.Disks = append([]DiskPlan(nil), p.Disks...)
	p.NICs = append([]NICPlan(nil), p.NICs...)
	// The devices the conversions name become the compatible ones.
	conv := make([]string, 0, len(p.Conversions)+1)
	for _, c := range p.Conversions {
		c = strings.Replace(c, " bus → virtio-blk", " bus → SATA (AHCI)", 1)
		c = strings.Replace(c, " → virtio-net, MAC", " → e1000, MAC", 1)
		conv = append(conv, c)
	}
	p.Conversions = append(conv,
		fmt.Sprintf("guest not converted: %s; the VM gets SATA disks and e1000 NICs, which a Linux guest of another hypervisor has drivers for, instead of virtio ones", reason))
	for i := range p.Disks {
		if i >= 6 { // the AHCI controller's ports
			p.Warnings = append(p.Warnings, fmt.Sprintf("disk %q stays on virtio: a VM has 6 SATA ports", p.Disks[i].Name))
			continue
		}
		p.Disks[i].Bus = CompatibleDiskBus
	}
	for i := range p.NICs {
		p.NICs[i].Model = CompatibleNICModel
	}
	p.Warnings = append(append([]string(nil), p.Warnings...),
		"the guest is not converted: SATA and e1000 are slower than virtio, and a guest without ahci or e1000 drivers does not boot or has no network; VMware tools stay installed")
	return p
}

// Create is the Polyvisor VM the plan makes, its disks the images the
// run imports.
func (p VMPlan) Create() api.VMCreate {
	c := api.VMCreate{Name: p.Name, VCPUs: p.VCPUs, MemoryMiB: p.MemoryMiB, Host: p.Host,
		Labels: map[string]string{"polyvisor.io/migrated-from": VMName(p.Source.Name)}}
	if p.Firmware == FirmwareEFI {
		c.Boot.Firmware = api.FirmwareEFI
	}
	for _, d := range p.Disks {
		disk := api.Disk{Name: d.Name, Image: d.Image}
		if d.Bus == CompatibleDiskBus {
			disk.Bus = api.DiskBusSATA
		}
		c.Disks = append(c.Disks, disk)
	}
	for _, n := range p.NICs {
		nic := api.NIC{Network: n.Network, MAC: n.MAC}
		if n.Model == CompatibleNICModel {
			nic.Model = api.NICModelE1000
		}
		c.NICs = append(c.NICs, nic)
	}
	return c
}

func isWindows(guestOS string) bool {
	return strings.Contains(strings.ToLower(guestOS), "win")
}

func busName(b string) string { return orUnknown(b) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// checkMAC accepts a unicast Ethernet MAC and returns it in lower case.
func checkMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("MAC %q is not an Ethernet address", s)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("MAC %q is a multicast address", s)
	}
	return hw.String(), nil
}
