// Package hypervisor defines the contract between the host agent and the
// hypervisor drivers that run VMs: a small core interface every driver
// implements, optional capability interfaces, and a Capabilities value so a
// driver says honestly what it can do.
package hypervisor

import (
	"context"
	"errors"
	"io"
	"time"
)

// Driver is the core every hypervisor driver implements.
//
// A driver keeps no state of its own that matters across restarts: what it
// needs to find a VM again lives in the Handle, which the agent persists.
type Driver interface {
	// Name is the driver's registered name ("qemu").
	Name() string
	// Capabilities says what the driver can do on this host.
	Capabilities() Capabilities
	// Info describes the host as the driver sees it (accelerator, version).
	Info(ctx context.Context) (Info, error)

	// Create prepares a VM (directory, disks, seed ISO) without starting it,
	// and returns its handle. It rolls back what it made if it fails.
	Create(ctx context.Context, cfg VMConfig) (*Handle, error)
	// Start boots a created, stopped VM. The VM's process must not be tied
	// to ctx: ctx bounds only the start itself.
	Start(ctx context.Context, h *Handle, cfg VMConfig) error
	// Stop shuts the VM down: gracefully (ACPI) within opts.Timeout, then
	// forced. Force skips the graceful step.
	Stop(ctx context.Context, h *Handle, opts StopOptions) error
	// State reports the VM's current power state.
	State(ctx context.Context, h *Handle) (Status, error)
	// Recover re-attaches to a VM after an agent restart. It must never
	// start a second process for a VM that still runs.
	Recover(ctx context.Context, h *Handle) (Status, error)
	// Destroy stops the VM if needed and removes what Create made; disks
	// are kept when keepDisks is true.
	Destroy(ctx context.Context, h *Handle, keepDisks bool) error
	// Events delivers the VM's state changes until ctx ends, across stops
	// and starts: its subscription lives as long as the caller wants to
	// follow the VM, never only as long as one request. The first event
	// replays the state at subscription (Replay set), with the cause of the
	// VM's last stop when the driver knows it, so that a change between a
	// start (or Recover) and the subscription is never lost. The channel is
	// closed when ctx ends or the VM is destroyed.
	Events(ctx context.Context, h *Handle) (<-chan StateEvent, error)
}

// Pauser is implemented by drivers that can pause and resume a running VM.
type Pauser interface {
	Pause(ctx context.Context, h *Handle) error
	Resume(ctx context.Context, h *Handle) error
}

// Statser is implemented by drivers that can tell what a running VM uses.
type Statser interface {
	Stats(ctx context.Context, h *Handle) (Stats, error)
}

// Stats is a sample of a running VM's use of its host: cumulative CPU
// time (to be differenced between samples) and resident memory.
type Stats struct {
	CPUSeconds  float64
	MemoryBytes int64
}

// NICPlugger is implemented by drivers that add and remove network NICs
// (those with a Tap) on a running VM.
type NICPlugger interface {
	// SetNICs makes a running VM's network NICs those of nics, matched by
	// MAC: it plugs in those it lacks and unplugs those it has no more.
	// User-mode NICs are left as they are. A VM that does not run is left
	// alone: its next start has the NICs of its config.
	SetNICs(ctx context.Context, h *Handle, nics []NICConfig) error
}

// Consoler is implemented by drivers that offer consoles.
type Consoler interface {
	// OpenConsole connects to a console ("serial" or "vnc") as a byte stream.
	OpenConsole(ctx context.Context, h *Handle, kind string) (io.ReadWriteCloser, error)
	// ConsoleLog returns the serial output recorded so far (up to max bytes
	// from the end).
	ConsoleLog(ctx context.Context, h *Handle, max int64) ([]byte, error)
}

// Capabilities lists what a driver can do. Actions a driver cannot do are
// refused by the API with 422 naming the capability.
type Capabilities struct {
	Pause         bool `json:"pause"`
	SerialConsole bool `json:"serialConsole"`
	VNCConsole    bool `json:"vncConsole"`
	KernelBoot    bool `json:"kernelBoot"`
	CloudInit     bool `json:"cloudInit"`
	LiveMigration bool `json:"liveMigration"`
	Snapshots     bool `json:"snapshots"`
	// NICHotplug: network NICs are added to and removed from running VMs.
	NICHotplug bool `json:"nicHotplug"`
}

// Info describes what a driver found on its host.
type Info struct {
	Accel       string // kvm or tcg
	AccelReason string // why: what the accelerator probe saw, or what was asked
	Version     string // hypervisor version ("QEMU 7.2.0")
	Confinement Confinement
}

// Confinement says how a driver confines its VMs' processes on a host, and
// what it could not do there.
type Confinement struct {
	User    string   // the unprivileged user VM processes run as; "" when they keep the agent's
	Sandbox string   // the hypervisor's own sandbox ("seccomp"), "" for none
	Cgroups string   // "v2" or "v1" when each VM has a cgroup with limits, "" when not
	Network string   // how user-mode NICs reach the network, and whether the host's loopback is closed to them
	Notes   []string // what is not confined on this host, and why
}

// Power states a driver reports.
const (
	StateRunning = "running"
	StatePaused  = "paused"
	StateStopped = "stopped"
	// StateCrashed is a VM whose process still runs but whose guest no
	// longer can: the hypervisor halted it on an internal error (KVM's
	// "emulation failure") or after a guest panic. Status.Cause says which.
	StateCrashed = "crashed"
)

// Cause says why a VM stopped or crashed. Its values are those of the
// API's VMStatus.StopCause.
type Cause string

// Causes of a stop or a crash.
const (
	// CauseRequested is a stop the driver was asked for (Stop, Destroy).
	CauseRequested Cause = "requested"
	// CauseGuestPoweroff is a guest that powered itself off.
	CauseGuestPoweroff Cause = "guest-poweroff"
	// CauseProcessExited is a hypervisor process that ended unasked: it
	// was killed or crashed, or ended while nobody watched it.
	CauseProcessExited Cause = "crash"
	// CauseInternalError is a VM the hypervisor halted on an internal
	// error, such as KVM's emulation failure.
	CauseInternalError Cause = "internal-error"
	// CauseGuestPanic is a guest whose kernel panicked.
	CauseGuestPanic Cause = "guest-panic"
)

// Crash tells whether the cause is a crash: the VM stopped, or can no
// longer run, without anybody asking, and not by its guest's own choice.
func (c Cause) Crash() bool {
	switch c {
	case CauseProcessExited, CauseInternalError, CauseGuestPanic:
		return true
	}
	return false
}

// Status is a VM's state as a driver sees it.
type Status struct {
	State     string
	PID       int
	StartedAt time.Time
	Serial    string // serial console endpoint (unix socket path)
	VNC       string // VNC endpoint (unix socket path)
	// Cause and Reason say why a crashed VM crashed.
	Cause  Cause
	Reason string
}

// StateEvent is a change of a VM's state seen by its driver.
type StateEvent struct {
	State string
	// Cause is set for a stop or a crash: why it happened.
	Cause Cause
	// Reason says it for people: "the guest powered itself off", "qemu
	// was killed by signal 9", "paused".
	Reason string
	// PID is the hypervisor process the event is about, 0 when none: an
	// event about an earlier process than the handle's is stale.
	PID int
	// Replay marks the first event of a subscription, which tells the
	// state at subscription rather than a change seen then.
	Replay bool
}

// StopOptions controls Stop.
type StopOptions struct {
	Timeout time.Duration
	Force   bool
}

// VMConfig is a VM's desired configuration as resolved on its host: images
// are local file paths.
type VMConfig struct {
	Name      string
	UID       string
	VCPUs     int
	MemoryMiB int64
	Disks     []DiskConfig
	NICs      []NICConfig
	Kernel    string // path, empty for firmware boot
	Initrd    string // path
	Cmdline   string
	// Firmware is FirmwareBIOS ("" too) or FirmwareEFI.
	Firmware  string
	CloudInit *CloudInitConfig
	// BootVolume, when set, is the VM's root disk: a volume present from
	// the start, first in the boot order, plugged in as a hot-plugged
	// volume is (VolumeAttacher) so that it is listed, grown and limited
	// the same way.
	BootVolume *VolumeConfig
	// StartPaused starts the VM with its CPUs stopped.
	StartPaused bool
}

// Firmware a VM boots with (VMConfig.Firmware).
const (
	FirmwareBIOS = "bios"
	FirmwareEFI  = "efi"
)

// DiskConfig is a disk to make: an overlay of BackingFile, or blank.
type DiskConfig struct {
	Name        string
	BackingFile string // local qcow2 path of the image, empty for blank
	SizeMiB     int64
	// SharedPath, when set, is an existing qcow2 file on storage every
	// host of its pool sees (a shared pool's volume): the VM uses it as
	// it is; it is never made, copied, mirrored, kept or removed with the
	// VM, and a migration moves only the memory for it.
	SharedPath string
	// Bus is "virtio" ("" too) or "sata".
	Bus string
}

// NICConfig is a network interface.
type NICConfig struct {
	// Network is "user" (user-mode NAT, served by the driver) or, for a
	// NIC with a Tap, the key of the Polyvisor network its port is on.
	Network string
	MAC     string
	// Tap is the host's tap device of the NIC's port, made by the agent's
	// dataplane; empty for a user-mode NIC.
	Tap string
	// Model is "virtio" ("" too) or "e1000".
	Model string
}

// CloudInitConfig is NoCloud seed data.
type CloudInitConfig struct {
	UserData      string
	MetaData      string
	NetworkConfig string
}

// HandleVersion is the current version of the persisted handle format.
const HandleVersion = 1

// Handle is what a driver needs to find a VM again. The agent persists it
// (JSON, in the VM's directory) and hands it back after a restart.
type Handle struct {
	Version int    `json:"version"`
	Driver  string `json:"driver"`
	Name    string `json:"name"`
	UID     string `json:"uid"`
	Dir     string `json:"dir"`
	// PID and PIDStart (the process start time in clock ticks since boot)
	// identify the hypervisor process, guarding against PID reuse.
	PID      int               `json:"pid,omitempty"`
	PIDStart uint64            `json:"pidStart,omitempty"`
	Disks    []DiskFile        `json:"disks,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// DiskFile is a disk file made by Create.
type DiskFile struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Format  string `json:"format"`
	SizeMiB int64  `json:"sizeMiB"`
	// Shared is a disk on shared storage (DiskConfig.SharedPath): not the
	// VM's to copy or remove.
	Shared bool `json:"shared,omitempty"`
}

// ErrNotRunning is returned (wrapped) for what needs a running VM.
var ErrNotRunning = errors.New("not running")

// ErrNotSupported is returned (wrapped) for an action a driver cannot do.
var ErrNotSupported = errors.New("not supported by this driver")
