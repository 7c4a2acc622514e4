package v2v

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/ovf"
)

// maxEnvelopeBytes bounds an OVF envelope: real ones are a few KiB.
const maxEnvelopeBytes = 4 << 20

// CIM resource types of an OVF VirtualHardwareSection's items.
const (
	rtProcessor = 3
	rtMemory    = 4
	rtIDE       = 5
	rtSCSI      = 6
	rtEthernet  = 10
	rtDisk      = 17
	rtSATA      = 20
)

// ParseOVF reads an OVF envelope into the hardware of its one virtual
// system. Each disk's source is a member of the package it came in
// (Kind SourceOVA, Member its file's href), to be found beside the
// envelope; an href that is a URL, absolute, or climbs out of the
// package is refused, as is a disk that names a parent disk. Capacities
// are computed without overflow; a capacity over maxDisk is refused.
func ParseOVF(r io.Reader, maxDisk int64) (Hardware, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxEnvelopeBytes+1))
	if err != nil {
		return Hardware{}, fmt.Errorf("reading OVF envelope: %w", err)
	}
	if len(b) > maxEnvelopeBytes {
		return Hardware{}, fmt.Errorf("OVF envelope is over %d bytes: refused", maxEnvelopeBytes)
	}
	env, err := ovf.Unmarshal(strings.NewReader(string(b)))
	if err != nil {
		return Hardware{}, fmt.Errorf("parsing OVF envelope: %w", err)
	}
	vs := env.VirtualSystem
	if vs == nil {
		if env.VirtualSystemCollection != nil {
			return Hardware{}, errors.New("OVF envelope holds a collection of virtual systems: import them one package at a time")
		}
		return Hardware{}, errors.New("OVF envelope has no VirtualSystem")
	}
	if len(vs.VirtualHardware) == 0 {
		return Hardware{}, errors.New("OVF VirtualSystem has no VirtualHardwareSection")
	}
	hw := Hardware{Name: vs.ID, Firmware: FirmwareBIOS}
	if vs.Name != nil && *vs.Name != "" {
		hw.Name = *vs.Name
	}
	if os := vs.OperatingSystem; os != nil {
		switch {
		case os.OSType != nil && *os.OSType != "":
			hw.GuestOS = *os.OSType
		case os.Description != nil:
			hw.GuestOS = *os.Description
		}
	}

	files := map[string]string{} // file id → href
	for _, f := range env.References {
		if err := checkHref(f.Href); err != nil {
			return Hardware{}, fmt.Errorf("OVF file %q: %w", f.ID, err)
		}
		files[f.ID] = f.Href
	}
	type diskDesc struct {
		href     string
		capacity int64
		format   string
	}
	disks := map[string]diskDesc{}
	if env.Disk != nil {
		for _, d := range env.Disk.Disks {
			if d.ParentRef != nil && *d.ParentRef != "" {
				return Hardware{}, fmt.Errorf("OVF disk %q names a parent disk %q: refused", d.DiskID, *d.ParentRef)
			}
			if d.FileRef == nil || files[*d.FileRef] == "" {
				return Hardware{}, fmt.Errorf("OVF disk %q names no file of the package's References", d.DiskID)
			}
			units := "byte"
			if d.CapacityAllocationUnits != nil {
				units = *d.CapacityAllocationUnits
			}
			c, err := capacityBytes(d.Capacity, units, maxDisk)
			if err != nil {
				return Hardware{}, fmt.Errorf("OVF disk %q: %w", d.DiskID, err)
			}
			dd := diskDesc{href: files[*d.FileRef], capacity: c}
			if d.Format != nil && strings.Contains(strings.ToLower(*d.Format), "vmdk") {
				dd.format = "vmdk"
			}
			disks[d.DiskID] = dd
		}
	}

	vh := vs.VirtualHardware[0]
	controllers := map[string]string{} // instance id → bus
	for _, it := range vh.Item {
		if it.ResourceType == nil {
			continue
		}
		switch *it.ResourceType {
		case rtIDE:
			controllers[it.InstanceID] = BusIDE
		case rtSCSI:
			controllers[it.InstanceID] = BusSCSI
		case rtSATA:
			controllers[it.InstanceID] = BusSATA
			if it.ResourceSubType != nil && strings.Contains(strings.ToLower(*it.ResourceSubType), "nvme") {
				controllers[it.InstanceID] = BusNVMe
			}
		}
	}
	for _, it := range vh.Item {
		if it.ResourceType == nil {
			continue
		}
		switch *it.ResourceType {
		case rtProcessor:
			if it.VirtualQuantity != nil {
				hw.VCPUs = int(min(*it.VirtualQuantity, 1<<20))
			}
		case rtMemory:
			if it.VirtualQuantity == nil {
				continue
			}
			units := "byte * 2^20"
			if it.AllocationUnits != nil {
				units = *it.AllocationUnits
			}
			b, err := capacityBytes(strconv.FormatUint(uint64(*it.VirtualQuantity), 10), units, 1<<62)
			if err != nil {
				return Hardware{}, fmt.Errorf("OVF memory: %w", err)
			}
			hw.MemoryMiB = b >> 20
		case rtDisk:
			var id string
			for _, hr := range it.HostResource {
				for _, p := range []string{"ovf:/disk/", "/disk/"} {
					if rest, ok := strings.CutPrefix(hr, p); ok {
						id = rest
					}
				}
			}
			d, ok := disks[id]
			if !ok {
				return Hardware{}, fmt.Errorf("OVF disk item %q names no disk of the DiskSection", it.ElementName)
			}
			bus := ""
			if it.Parent != nil {
				bus = controllers[*it.Parent]
			}
			hw.Disks = append(hw.Disks, Disk{
				Name: it.ElementName, Bus: bus, CapacityBytes: d.capacity,
				Source: DiskSource{Kind: SourceOVA, Member: d.href, Format: d.format},
			})
		case rtEthernet:
			n := NIC{}
			if len(it.Connection) > 0 {
				n.Network = it.Connection[0]
			}
			if it.Address != nil {
				n.MAC = *it.Address
			}
			if it.ResourceSubType != nil {
				n.Model = strings.ToLower(*it.ResourceSubType)
			}
			hw.NICs = append(hw.NICs, n)
		}
	}
	for _, c := range append(vh.Config, vh.ExtraConfig...) {
		if strings.EqualFold(c.Key, "firmware") && strings.EqualFold(c.Value, "efi") {
			hw.Firmware = FirmwareEFI
		}
	}
	return hw, nil
}

// checkHref accepts an href naming a file inside the package: relative,
// with no scheme, no "..", no backslash.
func checkHref(href string) error {
	switch {
	case href == "":
		return errors.New("empty href")
	case strings.Contains(href, "://") || strings.HasPrefix(strings.ToLower(href), "file:"):
		return fmt.Errorf("href %q is a URL: refused; the disks must be files inside the package", href)
	case strings.HasPrefix(href, "/") || strings.Contains(href, `\`):
		return fmt.Errorf("href %q is an absolute path: refused; the disks must be files inside the package", href)
	case path.Clean(href) != href || href == ".." || strings.HasPrefix(href, "../"):
		return fmt.Errorf("href %q points outside the package: refused", href)
	}
	return nil
}

var (
	unitRE  = regexp.MustCompile(`^byte(\*2\^(\d{1,3}))?$`)
	digitRE = regexp.MustCompile(`^\d{1,30}$`)
)

// capacityBytes is an OVF capacity in units ("byte", "byte * 2^30"),
// refused over max or malformed.
func capacityBytes(capacity, units string, max int64) (int64, error) {
	if !digitRE.MatchString(capacity) {
		return 0, fmt.Errorf("capacity %q is not a whole number", capacity)
	}
	m := unitRE.FindStringSubmatch(strings.ToLower(strings.Join(strings.Fields(units), "")))
	if m == nil {
		return 0, fmt.Errorf("capacity units %q: want byte or byte * 2^N", units)
	}
	n, _ := new(big.Int).SetString(capacity, 10)
	if m[2] != "" {
		e, _ := strconv.Atoi(m[2])
		n.Lsh(n, uint(e))
	}
	if n.Cmp(big.NewInt(max)) > 0 {
		return 0, fmt.Errorf("declares a capacity of %s bytes, over the limit of %d: refused", n, max)
	}
	return n.Int64(), nil
}
