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
	// Adaptation is how the guest is made to run on virtio devices:
	// "virt-v2v-in-place" when installed, else "none" (the guest must
	// carry virtio drivers, see Warnings).
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
	// Bus is the destination's bus: virtio (virtio-blk), the only one a
	// Polyvisor VM has.
	Bus string `json:"bus"`
}

// NICPlan is one NIC of a VMPlan.
type NICPlan struct {
	From    NIC    `json:"from"`
	Network string `json:"network"`
	MAC     string `json:"mac,omitempty"`
	// Model is virtio-net, the only one a Polyvisor VM has.
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
	case FirmwareEFI:
		block("source boots through EFI: Polyvisor VMs boot through SeaBIOS (BIOS) only, and an EFI guest's disk has no BIOS boot loader")
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
	p.Adaptation = "none"
	if needsVirtio {
		if o.VirtV2V != "" && !isWindows(hw.GuestOS) {
			p.Adaptation = "virt-v2v-in-place"
			p.Conversions = append(p.Conversions, "guest converted with virt-v2v-in-place: virtio drivers in its initramfs, VMware tools removed")
		} else {
			p.Warnings = append(p.Warnings, "virt-v2v-in-place is not installed: the guest is not converted; Polyvisor VMs have virtio-blk disks and virtio-net NICs only, so the guest's kernel or initramfs must carry virtio_blk and virtio_net (Linux guests of the last decade do; install Debian's virt-v2v to convert those that do not)")
		}
	}
	p.EstimatedSeconds = float64(p.CopyBytes) / o.RateBytesPerSecond
	return p
}

// Create is the Polyvisor VM the plan makes, its disks the images the
// run imports.
func (p VMPlan) Create() api.VMCreate {
	c := api.VMCreate{Name: p.Name, VCPUs: p.VCPUs, MemoryMiB: p.MemoryMiB, Host: p.Host,
		Labels: map[string]string{"polyvisor.io/migrated-from": VMName(p.Source.Name)}}
	for _, d := range p.Disks {
		c.Disks = append(c.Disks, api.Disk{Name: d.Name, Image: d.Image})
	}
	for _, n := range p.NICs {
		c.NICs = append(c.NICs, api.NIC{Network: n.Network, MAC: n.MAC})
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
