package server

import (
	"errors"
	"fmt"
	"net"
	"regexp"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/labels"
)

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Limits a VM create is checked against.
const (
	minMemoryMiB       = 16
	maxDisks           = 16
	maxNICs            = 8
	maxSATADisks       = 6        // the ports of q35's AHCI controller
	maxDiskMiB         = 16 << 20 // 16 TiB
	maxCloudInitBytes  = 64 << 10
	maxCmdlineBytes    = 4096
	defaultStopTimeout = 30
	maxStopTimeout     = 3600
)

// validateName checks a DNS-label object name.
func validateName(field, name string) error {
	if name == "" {
		return api.Invalid(field, "is required")
	}
	if !dnsLabelRE.MatchString(name) {
		return api.Invalid(field, "%q is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// imageLookup finds a ready image by name.
type imageLookup func(name string) (*api.Image, bool)

// hostLimits are the largest VM any known host could ever run; zero when no
// host is known.
type hostLimits struct {
	maxVCPUs     int
	maxMemoryMiB int64
	hostExists   func(name string) bool
}

// limits are the largest VM any of the hosts filter passes could run.
func (s *Server) limits(filter placement.Filter) hostLimits {
	return hostLimitsOf(s.ctl.Placer.Limits(filter))
}

// ownLimits are the largest VM any of Polyvisor's own hosts could run.
func (s *Server) ownLimits() hostLimits {
	return hostLimitsOf(s.ctl.Placer.OwnLimits())
}

func hostLimitsOf(l placement.Limits) hostLimits {
	return hostLimits{maxVCPUs: l.MaxVCPUs, maxMemoryMiB: l.MaxMemoryMiB, hostExists: l.HostExists}
}

// validateVMCreate checks a create request and fills its defaults. Every
// error names the field at fault.
func validateVMCreate(req *api.VMCreate, images imageLookup, limits hostLimits) error {
	if err := validateName("name", req.Name); err != nil {
		return err
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		return api.Invalid("labels."+key, "%v", err)
	}
	if req.VCPUs < 1 {
		return api.Invalid("vcpus", "must be at least 1, not %d", req.VCPUs)
	}
	if limits.maxVCPUs > 0 && req.VCPUs > limits.maxVCPUs {
		return api.Invalid("vcpus", "%d vcpus is more than any host has (the largest has %d)", req.VCPUs, limits.maxVCPUs)
	}
	if req.MemoryMiB < minMemoryMiB {
		return api.Invalid("memoryMiB", "must be at least %d MiB, not %d", minMemoryMiB, req.MemoryMiB)
	}
	if limits.maxMemoryMiB > 0 && req.MemoryMiB > limits.maxMemoryMiB {
		return api.Invalid("memoryMiB", "%d MiB is more memory than any host has (the largest offers %d MiB)", req.MemoryMiB, limits.maxMemoryMiB)
	}
	if err := validateDisks(req.Disks, images); err != nil {
		return err
	}
	if err := validateNICs(req.NICs); err != nil {
		return err
	}
	rootDisks := len(req.Disks)
	if req.RootVolume != "" {
		rootDisks++ // the volume boots it
	}
	if err := validateBoot(&req.Boot, rootDisks, images); err != nil {
		return err
	}
	if ci := req.CloudInit; ci != nil {
		for field, set := range map[string]bool{"userDataRedacted": ci.UserDataRedacted, "metaDataRedacted": ci.MetaDataRedacted,
			"networkConfigRedacted": ci.NetworkConfigRedacted} {
			if set {
				return api.Invalid("cloudInit."+field, "is set by the server in what it shows, never in a request")
			}
		}
		for field, v := range map[string]string{"userData": ci.UserData, "metaData": ci.MetaData, "networkConfig": ci.NetworkConfig} {
			if len(v) > maxCloudInitBytes {
				return api.Invalid("cloudInit."+field, "is %d bytes, more than the %d allowed", len(v), maxCloudInitBytes)
			}
		}
	}
	switch req.PowerState {
	case "":
		req.PowerState = api.PowerRunning
	case api.PowerRunning, api.PowerStopped, api.PowerPaused:
	default:
		return api.Invalid("powerState", "must be running, stopped or paused, not %q", req.PowerState)
	}
	switch {
	case req.StopTimeoutSeconds == 0:
		req.StopTimeoutSeconds = defaultStopTimeout
	case req.StopTimeoutSeconds < 0 || req.StopTimeoutSeconds > maxStopTimeout:
		return api.Invalid("stopTimeoutSeconds", "must be from 1 to %d, not %d", maxStopTimeout, req.StopTimeoutSeconds)
	}
	switch req.OnCrash {
	case "":
		req.OnCrash = api.OnCrashRestart
	case api.OnCrashRestart, api.OnCrashStop:
	default:
		return api.Invalid("onCrash", "must be restart or stop, not %q", req.OnCrash)
	}
	if req.Host != "" && (limits.hostExists == nil || !limits.hostExists(req.Host)) {
		return api.Invalid("host", "host %q not found", req.Host)
	}
	return nil
}

func validateDisks(disks []api.Disk, images imageLookup) error {
	if len(disks) > maxDisks {
		return api.Invalid("disks", "at most %d disks are allowed, not %d", maxDisks, len(disks))
	}
	seen := map[string]bool{}
	sata := 0
	for i := range disks {
		d := &disks[i]
		field := fmt.Sprintf("disks[%d]", i)
		if d.Name == "" {
			d.Name = fmt.Sprintf("disk%d", i)
		}
		if err := validateName(field+".name", d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return api.Invalid(field+".name", "disk name %q is used twice", d.Name)
		}
		seen[d.Name] = true
		switch d.Bus {
		case "", api.DiskBusVirtio:
		case api.DiskBusSATA:
			if sata++; sata > maxSATADisks {
				return api.Invalid(field+".bus", "at most %d disks on %s", maxSATADisks, api.DiskBusSATA)
			}
		default:
			return api.Invalid(field+".bus", "must be %s or %s, not %q", api.DiskBusVirtio, api.DiskBusSATA, d.Bus)
		}
		if d.SizeMiB < 0 || d.SizeMiB > maxDiskMiB {
			return api.Invalid(field+".sizeMiB", "must be from 1 to %d MiB, not %d", int64(maxDiskMiB), d.SizeMiB)
		}
		if d.Image == "" {
			if d.SizeMiB == 0 {
				return api.Invalid(field+".sizeMiB", "a blank disk needs a size")
			}
			continue
		}
		img, err := imageOfKind(images, field+".image", d.Image, api.ImageDisk)
		if err != nil {
			return err
		}
		if d.SizeMiB != 0 && d.SizeMiB<<20 < img.VirtualSizeBytes {
			return api.Invalid(field+".sizeMiB", "%d MiB is smaller than image %q (%d MiB); disks can only grow", d.SizeMiB, d.Image, (img.VirtualSizeBytes+(1<<20)-1)>>20)
		}
	}
	// The drivers' own rule: reserved names and names the guest could not
	// tell apart.
	names := make([]string, len(disks))
	for i := range disks {
		names[i] = disks[i].Name
	}
	var nameErr *hypervisor.DiskNameError
	if err := hypervisor.CheckDiskNames(names); errors.As(err, &nameErr) {
		return api.Invalid(fmt.Sprintf("disks[%d].name", nameErr.Index), "%q %s", nameErr.Name, nameErr.Reason)
	}
	return nil
}

func validateNICs(nics []api.NIC) error {
	if len(nics) > maxNICs {
		return api.Invalid("nics", "at most %d NICs are allowed, not %d", maxNICs, len(nics))
	}
	for i := range nics {
		n := &nics[i]
		field := fmt.Sprintf("nics[%d]", i)
		if n.Network == "" && n.Port == "" {
			n.Network = api.NetworkUser
		}
		switch n.Model {
		case "", api.NICModelVirtio, api.NICModelE1000:
		default:
			return api.Invalid(field+".model", "must be %s or %s, not %q", api.NICModelVirtio, api.NICModelE1000, n.Model)
		}
		// A NIC on a network of the project (or on a port) is checked when
		// its port is planned; a user-mode NIC has no address of its own.
		if n.Network == api.NetworkUser {
			switch {
			case n.IP != "":
				return api.Invalid(field+".ip", "a NIC on %q has no fixed address; give a network of the project", api.NetworkUser)
			case len(n.SecurityGroups) > 0:
				return api.Invalid(field+".securityGroups", "a NIC on %q has no security groups; give a network of the project", api.NetworkUser)
			case n.Port != "":
				return api.Invalid(field+".port", "a NIC on a port takes the port's network, not %q", api.NetworkUser)
			}
		}
		if n.MAC != "" {
			hw, err := net.ParseMAC(n.MAC)
			if err != nil || len(hw) != 6 {
				return api.Invalid(field+".mac", "%q is not a MAC address", n.MAC)
			}
			if hw[0]&1 == 1 {
				return api.Invalid(field+".mac", "%q is a multicast address", n.MAC)
			}
			n.MAC = hw.String()
		}
	}
	return nil
}

func validateBoot(b *api.Boot, disks int, images imageLookup) error {
	switch b.Firmware {
	case "", api.FirmwareBIOS, api.FirmwareEFI:
	default:
		return api.Invalid("boot.firmware", "must be %s or %s, not %q", api.FirmwareBIOS, api.FirmwareEFI, b.Firmware)
	}
	if b.Kernel == "" {
		if b.Initrd != "" || b.Cmdline != "" {
			return api.Invalid("boot.kernel", "initrd and cmdline need a kernel")
		}
		if disks == 0 {
			return api.Invalid("disks", "a VM that boots through firmware needs a disk (or give boot.kernel)")
		}
		return nil
	}
	if _, err := imageOfKind(images, "boot.kernel", b.Kernel, api.ImageKernel); err != nil {
		return err
	}
	if b.Initrd != "" {
		if _, err := imageOfKind(images, "boot.initrd", b.Initrd, api.ImageInitrd); err != nil {
			return err
		}
	}
	if len(b.Cmdline) > maxCmdlineBytes {
		return api.Invalid("boot.cmdline", "is %d bytes, more than the %d allowed", len(b.Cmdline), maxCmdlineBytes)
	}
	return nil
}

func imageOfKind(images imageLookup, field, name, kind string) (*api.Image, error) {
	img, ok := images(name)
	if !ok {
		return nil, api.Invalid(field, "image %q not found", name)
	}
	if img.Kind != kind {
		return nil, api.Invalid(field, "image %q is a %s image, not a %s image", name, img.Kind, kind)
	}
	if img.State != api.ImageReady {
		return nil, api.Invalid(field, "image %q is not ready (%s)", name, img.State)
	}
	return img, nil
}
