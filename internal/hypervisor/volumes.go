package hypervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// GuestDenier is a driver that can keep its guests' own network traffic
// away from endpoints of the host's network that carry no authentication
// of their own (an nbd pool's exports), replacing the set it denied before.
type GuestDenier interface {
	DenyGuests(ctx context.Context, endpoints []netip.AddrPort) error
}

// VolumeAttacher is a driver that plugs volumes into running VMs and out
// again (hot-plug), grows them and bounds their I/O while they run.
type VolumeAttacher interface {
	// AttachVolume plugs the volume into the running VM. Its file is
	// opened by the caller's process and handed over, so a confined
	// hypervisor needs no access to the pool's path.
	AttachVolume(ctx context.Context, h *Handle, v VolumeConfig) error
	// DetachVolume unplugs the volume whose device id is id, and returns
	// once the guest has let it go and the hypervisor has closed its file.
	DetachVolume(ctx context.Context, h *Handle, id string) error
	// ResizeVolume grows a plugged volume; the guest sees the new size.
	ResizeVolume(ctx context.Context, h *Handle, id string, sizeMiB int64) error
	// SetVolumeLimits changes a plugged volume's I/O limits.
	SetVolumeLimits(ctx context.Context, h *Handle, id string, iops, bps int64) error
	// Volumes lists the volumes plugged into the running VM.
	Volumes(ctx context.Context, h *Handle) ([]VolumeState, error)
}

// VolumeConfig is a volume to plug in.
type VolumeConfig struct {
	Name string // the volume's name: the guest sees it as the disk's serial
	Path string // its qcow2 file
	IOPS int64  // operations per second, 0 for no limit
	BPS  int64  // bytes per second, 0 for no limit
	// Export, when set, is a network block export to open instead of
	// Path: "nbd://IP:port/name" (an nbd pool's volume).
	Export string
	// Port is the hot-plug port to plug it into, as VolumeState.Port
	// said on another host: a migration's target plugs each volume where
	// the source has it, so the guest's state fits. Empty: a free one.
	Port string
}

// ParseNBDExport splits "nbd://IP:port/name" into the server's address
// and the export's name.
func ParseNBDExport(uri string) (addr netip.AddrPort, name string, err error) {
	rest, ok := strings.CutPrefix(uri, "nbd://")
	if !ok {
		return addr, "", fmt.Errorf("export %q is not an nbd:// address", uri)
	}
	host, name, ok := strings.Cut(rest, "/")
	if addr, err = netip.ParseAddrPort(host); err != nil || !ok || name == "" || strings.ContainsAny(name, "/\x00") {
		return addr, "", fmt.Errorf("export %q is not nbd://IP:port/name", uri)
	}
	return addr, name, nil
}

// ID is the device id the volume is plugged in under.
func (vc VolumeConfig) ID() string { return VolumeID(vc.Name) }

// VolumeState is a volume as the hypervisor has it plugged in.
type VolumeState struct {
	ID      string // VolumeID of its name
	SizeMiB int64
	IOPS    int64
	BPS     int64
	Port    string // the hot-plug port it is in
}

// MaxVolumes is how many volumes one VM can have plugged in at once: the
// QEMU driver has hot-plug slots for that many beside its NICs.
const MaxVolumes = 8

// VolumeID is the device id a volume is plugged in under: short and made
// of safe characters whatever the volume's name.
func VolumeID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "vol-" + hex.EncodeToString(sum[:6])
}
