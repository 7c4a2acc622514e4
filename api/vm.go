package api

import "time"

// Power states. Desired states are running, stopped and paused; observed
// states add the transient and failure states.
const (
	PowerRunning  = "running"
	PowerStopped  = "stopped"
	PowerPaused   = "paused"
	PowerStarting = "starting"
	PowerStopping = "stopping"
	PowerError    = "error"
	PowerUnknown  = "unknown" // the host does not report (down or unreachable)
	PowerPending  = "pending" // not yet seen by its host

	// PowerCrashed is a VM that stopped without being asked: its
	// hypervisor process died, or its guest hit an internal error or
	// panicked. Status.StopCause and Status.Reason say why; the VM's
	// OnCrash policy says what follows.
	PowerCrashed = "crashed"
)

// Why a VM stopped or crashed, as VMStatus.StopCause says.
const (
	StopCauseRequested     = "requested"      // a stop, restart or delete asked for it
	StopCauseGuestPoweroff = "guest-poweroff" // the guest powered itself off
	StopCauseCrash         = "crash"          // the hypervisor process died unasked (killed, crashed)
	StopCauseInternalError = "internal-error" // the hypervisor halted the VM on an internal error (KVM emulation failure)
	StopCauseGuestPanic    = "guest-panic"    // the guest's kernel panicked
)

// IsCrash tells whether a stop cause is a crash, to which the VM's OnCrash
// policy applies.
func IsCrash(stopCause string) bool {
	switch stopCause {
	case StopCauseCrash, StopCauseInternalError, StopCauseGuestPanic:
		return true
	}
	return false
}

// What a host does with a VM that crashed (VMSpec.OnCrash).
const (
	// OnCrashRestart starts the VM again, after a pause that doubles
	// with each crash in a row (the default).
	OnCrashRestart = "restart"
	// OnCrashStop leaves it stopped: its desired state becomes stopped.
	OnCrashStop = "stop"
)

// Network names for NICs.
const (
	// NetworkUser is QEMU user-mode NAT: no host setup, outbound only.
	NetworkUser = "user"
)

// VM is a virtual machine: its desired state (Spec) and what its host last
// observed (Status).
type VM struct {
	Meta
	Spec   VMSpec   `json:"spec"`
	Status VMStatus `json:"status"`
}

// VMSpec is the desired state of a VM. Only the server writes it.
type VMSpec struct {
	// Host is where the VM is placed: the pin given at create, or the
	// scheduler's choice.
	Host      string     `json:"host"`
	VCPUs     int        `json:"vcpus"`
	MemoryMiB int64      `json:"memoryMiB"`
	Disks     []Disk     `json:"disks,omitempty"`
	NICs      []NIC      `json:"nics,omitempty"`
	Boot      Boot       `json:"boot"`
	CloudInit *CloudInit `json:"cloudInit,omitempty"`
	// PowerState is the desired power state: running, stopped or paused.
	PowerState string `json:"powerState"`
	// StopTimeoutSeconds bounds a graceful (ACPI) stop before it is forced.
	StopTimeoutSeconds int `json:"stopTimeoutSeconds"`
	// ForceStop makes the pending stop skip the graceful shutdown; the stop
	// action sets it and the next start clears it.
	ForceStop bool `json:"forceStop,omitempty"`
	// RestartCount is raised by every restart action; the host restarts the
	// VM when it is above the count it last observed.
	RestartCount int64 `json:"restartCount,omitempty"`
	// Deletion, when set, asks the host to stop the VM and remove it.
	Deletion *Deletion `json:"deletion,omitempty"`
	// Provider is set for a VM of a connected estate (vSphere, libvirt):
	// which provider runs it and its native identity.
	Provider *ProviderRef `json:"provider,omitempty"`
	// Lease, when set, is when the VM expires: stopped at its expiry,
	// deleted after the project's grace period.
	Lease *Lease `json:"lease,omitempty"`
	// OnCrash is what the host does when the VM crashes: restart (the
	// default, also when empty) or stop. A guest that powers itself off
	// stays off either way.
	OnCrash string `json:"onCrash,omitempty"`
	// Migration, when set, asks the VM's host to migrate it to another
	// host while it runs.
	Migration *Migration `json:"migration,omitempty"`
	// Volumes are the volumes attached to the VM, after its disks.
	Volumes []VolumeAttachment `json:"volumes,omitempty"`
	// HA is restart when the VM is restarted on another host after its
	// host is lost and fenced (docs/HA.md); none or empty otherwise. Only
	// a VM whose disks all live on shared storage may have it.
	HA string `json:"ha,omitempty"`
	// HASince, written by the server, is the generation at which HA
	// became restart. A host fenced on timeout alone has its VM restarted
	// elsewhere only if it reported that generation (status
	// observedGeneration): only then did its agent know to stop the VM
	// when cut off.
	HASince int64 `json:"haSince,omitempty"`
	// HARestart, written by the server, is the VM's last restart on
	// another host after its host was fenced.
	HARestart *HARestartRecord `json:"haRestart,omitempty"`
}

// HA policies (VMSpec.HA, ProjectSpec.HADefault).
const (
	HARestart = "restart"
	HANone    = "none"
)

// OpVMHARestart is the operation that restarts a VM of a fenced host on
// another host.
const OpVMHARestart = "vm.ha.restart"

// HARestartRecord records a VM's restart on another host after a fence.
type HARestartRecord struct {
	Operation string    `json:"operation"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	At        time.Time `json:"at"`
}

// VMHASet is the body of PUT /v1/vms/{name}/ha.
type VMHASet struct {
	// HA is restart or none.
	HA string `json:"ha"`
}

// Disk is a VM disk: a copy-on-write overlay of an image, or blank.
type Disk struct {
	// Name is unique within the VM ("root", "data"); defaults to disk0, disk1...
	Name string `json:"name"`
	// Image, when set, makes the disk a qcow2 overlay of that image: an
	// image of the VM's project by name, or "<project>/<name>" for a public
	// image of another project. The server stores the latter form.
	Image string `json:"image,omitempty"`
	// SizeMiB is the size of a blank disk, or the grown size of an overlay
	// (0 keeps the image's virtual size).
	SizeMiB int64 `json:"sizeMiB,omitempty"`
	// Bus is virtio (virtio-blk, the default when empty) or sata (AHCI,
	// at most 6 disks): for a guest without virtio drivers, such as one
	// moved from another hypervisor and not converted.
	Bus string `json:"bus,omitempty"`
}

// Disk buses (Disk.Bus) and NIC models (NIC.Model).
const (
	DiskBusVirtio  = "virtio"
	DiskBusSATA    = "sata"
	NICModelVirtio = "virtio"
	NICModelE1000  = "e1000"
)

// NIC is a virtual network interface.
type NIC struct {
	// Network is "user" (user-mode NAT, the default), a network of the
	// VM's project (the NIC gets a port on it), or for a VM of a
	// provider one of the provider's networks.
	Network string `json:"network"`
	// MAC is generated when empty (locally administered, 52:54:00 prefix).
	MAC string `json:"mac,omitempty"`
	// IP asks for this fixed address on the network (default: one the
	// server allocates); the server sets it to the port's first address.
	IP string `json:"ip,omitempty"`
	// SecurityGroups name groups of the VM's project for the NIC's port
	// (default: the project's "default" group).
	SecurityGroups []string `json:"securityGroups,omitempty"`
	// Port names an existing port of the project for the NIC (instead of
	// Network); for a NIC on a network the server sets it to the port it
	// made.
	Port string `json:"port,omitempty"`
	// Model is virtio (virtio-net, the default when empty) or e1000, for
	// a guest without virtio drivers; it is set when the VM is made.
	Model string `json:"model,omitempty"`
}

// VM operation kinds of NICs: a NIC added to or removed from a VM (hot
// plugged while it runs).
const (
	OpVMNICAdd    = "vm.nic.add"
	OpVMNICRemove = "vm.nic.remove"
)

// Boot says how a VM boots: from its first disk through firmware (Kernel
// empty), or directly from a kernel image with an optional initrd.
type Boot struct {
	Kernel  string `json:"kernel,omitempty"`  // image name of kind kernel
	Initrd  string `json:"initrd,omitempty"`  // image name of kind initrd
	Cmdline string `json:"cmdline,omitempty"` // kernel command line
	// Firmware is bios (SeaBIOS; the default when empty) or efi (OVMF,
	// with a writable NVRAM of the VM's own kept with its disks).
	Firmware string `json:"firmware,omitempty"`
}

// Firmware a VM boots with (Boot.Firmware).
const (
	FirmwareBIOS = "bios"
	FirmwareEFI  = "efi"
)

// CloudInit is NoCloud data delivered to the guest as a seed ISO (label cidata).
type CloudInit struct {
	UserData      string `json:"userData,omitempty"`
	MetaData      string `json:"metaData,omitempty"`
	NetworkConfig string `json:"networkConfig,omitempty"`
	// UserDataRedacted is set by the server, in place of UserData, for
	// callers who may not read user data (viewers and operators): it
	// often holds passwords. Never set in a request.
	UserDataRedacted bool `json:"userDataRedacted,omitempty"`
	// MetaDataRedacted and NetworkConfigRedacted are the same for
	// MetaData and NetworkConfig: all of cloud-init's data is read back
	// under one rule (meta data can hold keys, network config Wi-Fi
	// passwords). Never set in a request.
	MetaDataRedacted      bool `json:"metaDataRedacted,omitempty"`
	NetworkConfigRedacted bool `json:"networkConfigRedacted,omitempty"`
}

// Deletion records a requested delete.
type Deletion struct {
	KeepDisks   bool      `json:"keepDisks,omitempty"`
	RequestedAt time.Time `json:"requestedAt"`
}

// VMStatus is what the VM's host last observed. Only the host writes it.
type VMStatus struct {
	PowerState string `json:"powerState"`
	// ObservedGeneration is the spec generation the host has converged to.
	ObservedGeneration int64 `json:"observedGeneration"`
	// ObservedRestartCount is the last restart request the host carried out.
	ObservedRestartCount int64 `json:"observedRestartCount,omitempty"`
	// Error is set when the host failed to converge to a generation.
	Error *VMError `json:"error,omitempty"`
	// PID is the hypervisor process id (QEMU) on the host.
	PID     int          `json:"pid,omitempty"`
	Console Console      `json:"console"`
	IPs     []string     `json:"ips,omitempty"`
	Disks   []DiskStatus `json:"disks,omitempty"`
	// Driver names the hypervisor driver running the VM ("qemu").
	Driver string `json:"driver,omitempty"`
	// Reason explains the last transition for people ("the guest powered
	// itself off", "qemu was killed by signal 9").
	Reason string `json:"reason,omitempty"`
	// StopCause says why a stopped or crashed VM stopped (StopCause*
	// values); empty while it runs.
	StopCause string    `json:"stopCause,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// Migration is how the VM's migration under way (or its last one)
	// goes.
	Migration *MigrationStatus `json:"migration,omitempty"`
	// Volumes are the volumes the host has plugged into the running VM.
	Volumes []VolumeAttachmentStatus `json:"volumes,omitempty"`
}

// VMError is a failure to converge to a spec generation.
type VMError struct {
	Generation int64  `json:"generation"`
	Message    string `json:"message"`
}

// Console lists the console endpoints the host offers, as host-local paths.
type Console struct {
	Serial string `json:"serial,omitempty"` // unix socket of the serial console
	VNC    string `json:"vnc,omitempty"`    // unix socket of the VNC server
}

// DiskStatus describes a disk as it exists on its host.
type DiskStatus struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Format  string `json:"format"`
	SizeMiB int64  `json:"sizeMiB"`
}

// VMCreate is the body of POST /v1/vms.
type VMCreate struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	VCPUs     int               `json:"vcpus"`
	MemoryMiB int64             `json:"memoryMiB"`
	Disks     []Disk            `json:"disks,omitempty"`
	NICs      []NIC             `json:"nics,omitempty"`
	Boot      Boot              `json:"boot,omitzero"`
	CloudInit *CloudInit        `json:"cloudInit,omitempty"`
	// PowerState is the desired state after create: running (default) or stopped.
	PowerState string `json:"powerState,omitempty"`
	// Host pins the VM to a host; empty lets the scheduler choose.
	Host               string `json:"host,omitempty"`
	StopTimeoutSeconds int    `json:"stopTimeoutSeconds,omitempty"`
	// Provider, Cluster and Template create the VM in a connected estate:
	// vSphere clones Template (a template's name or inventory path);
	// libvirt makes a disk backed by Template (an image path on the
	// libvirt host). Host may name one of the provider's hosts, and
	// nics[0].network one of its networks.
	Provider  string `json:"provider,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	Template  string `json:"template,omitempty"`
	Datastore string `json:"datastore,omitempty"`
	// LeaseSeconds gives the VM a lease ending that long after its create
	// (at most the project's maxLeaseSeconds; default that maximum).
	LeaseSeconds int64 `json:"leaseSeconds,omitempty"`
	// OnCrash is restart (default) or stop: see VMSpec.OnCrash.
	OnCrash string `json:"onCrash,omitempty"`
	// HA is restart or none (see VMSpec.HA); empty takes the project's
	// haDefault where the VM's disks allow it.
	HA string `json:"ha,omitempty"`
	// RootVolume boots the VM from a ready, unattached volume of the
	// project: its root disk, attached with the boot flag.
	RootVolume string `json:"rootVolume,omitempty"`
	// RootPool makes the root disk a volume in this pool, named
	// "<vm>-root", from disks[0] (its image and size), which then is no
	// disk of the VM's own.
	RootPool string `json:"rootPool,omitempty"`
	// DeleteRootVolume, with rootPool, deletes the volume made when the VM
	// is deleted; without it the volume outlives the VM.
	DeleteRootVolume bool `json:"deleteRootVolume,omitempty"`
}

// VMStop is the optional body of POST /v1/vms/{name}/stop and /restart.
type VMStop struct {
	// TimeoutSeconds bounds the graceful shutdown before it is forced
	// (default: the VM's stopTimeoutSeconds).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// Force skips the graceful shutdown.
	Force bool `json:"force,omitempty"`
}

// VM actions, as in POST /v1/vms/{name}/{action}.
const (
	ActionStart   = "start"
	ActionStop    = "stop"
	ActionRestart = "restart"
	ActionPause   = "pause"
	ActionResume  = "resume"
)

// VM operation kinds beyond the power actions.
const (
	OpVMReconfigure    = "vm.reconfigure"
	OpVMSnapshotCreate = "vm.snapshot.create"
	OpVMSnapshotRevert = "vm.snapshot.revert"
	OpVMSnapshotDelete = "vm.snapshot.delete"
)

// VMStats is a sample of what a running VM uses on its host (GET
// /v1/vms/{name}/stats). CPU time is cumulative: the CPU use between two
// samples is the difference of their cpuSeconds over the time between them.
type VMStats struct {
	Time        time.Time `json:"time"`
	CPUSeconds  float64   `json:"cpuSeconds"`
	MemoryBytes int64     `json:"memoryBytes"`
	VCPUs       int       `json:"vcpus"`
	MemoryMiB   int64     `json:"memoryMiB"`
}
