package api

import "time"

// Pool kinds.
const (
	// PoolDir is a directory on one host: its volumes are usable by VMs of
	// that host only.
	PoolDir = "dir"
	// PoolShared is a filesystem path every host of the pool sees (NFS,
	// CephFS): its volumes are usable by VMs of any of its hosts.
	PoolShared = "shared"
	// PoolNBD is a network block target: the volumes' files live on the
	// pool's first host (its serving host), where one qemu-storage-daemon
	// serves each as an NBD export on the pool's address; QEMU on any
	// host of the pool opens them with its own nbd driver.
	PoolNBD = "nbd"
)

// SharedStorage tells whether every host of a pool of this kind reaches
// its volumes (so a VM using them may run on, move to or restart on any
// of them): shared and nbd pools.
func SharedStorage(kind string) bool { return kind == PoolShared || kind == PoolNBD }

// Pool is a place volumes live in. Superadmins define pools and grant
// them to projects.
type Pool struct {
	Meta
	Spec   PoolSpec   `json:"spec"`
	Status PoolStatus `json:"status"`
}

// PoolSpec is what a superadmin asked for.
type PoolSpec struct {
	// Kind is dir or shared.
	Kind string `json:"kind"`
	// Path is the directory of the volumes' files on each host (an
	// absolute path).
	Path string `json:"path"`
	// Hosts are the hosts that see the pool: exactly one for dir.
	Hosts []string `json:"hosts"`
	// Projects may make volumes in the pool; empty grants none.
	Projects []string `json:"projects,omitempty"`
	// Address, for an nbd pool, is the "IP:port" its serving host's
	// daemon listens on, which every host of the pool reaches.
	Address string `json:"address,omitempty"`
	// Images, for a shared pool, makes its hosts keep the images their
	// VMs use in the pool (<path>/.images, by content) rather than each
	// in its own cache: one host fetches an image, the others read it
	// there.
	Images bool `json:"images,omitempty"`
}

// PoolStatus is what the pool's hosts report.
type PoolStatus struct {
	Hosts []PoolHostStatus `json:"hosts,omitempty"`
}

// PoolHostStatus is one host's view of a pool: the capacity of the
// filesystem under its path and what the pool's volumes hold there.
type PoolHostStatus struct {
	Host     string `json:"host"`
	TotalMiB int64  `json:"totalMiB"`
	FreeMiB  int64  `json:"freeMiB"`
	// UsedMiB is what the pool's volume files take on disk.
	UsedMiB int64 `json:"usedMiB"`
	// Error says why the host cannot use the pool (its path is missing).
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// PoolCreate is the body of POST /v1/pools.
type PoolCreate struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Path     string   `json:"path"`
	Hosts    []string `json:"hosts"`
	Projects []string `json:"projects,omitempty"`
	Address  string   `json:"address,omitempty"`
	Images   bool     `json:"images,omitempty"`
}

// PoolUpdate is the body of PATCH /v1/pools/{name}: the fields present
// replace the pool's.
type PoolUpdate struct {
	Projects *[]string `json:"projects,omitempty"`
	// Images turns the pool's image store on or off (shared pools).
	Images *bool `json:"images,omitempty"`
}

// Volume states, as VolumeStatus.State says.
const (
	VolumePending  = "pending"  // not yet made by its host
	VolumeReady    = "ready"    // made, not attached
	VolumeAttached = "attached" // plugged into a running VM, or held by a stopped one
	VolumeError    = "error"    // its host failed to carry out its spec
	VolumeDeleting = "deleting"
)

// Volume is a project's disk that lives apart from VMs: made in a pool,
// attached to one VM at a time, grown, snapshotted, cloned.
type Volume struct {
	Meta
	Spec   VolumeSpec   `json:"spec"`
	Status VolumeStatus `json:"status"`
}

// VolumeSpec is the desired state of a volume. Only the server writes it.
type VolumeSpec struct {
	Pool string `json:"pool"`
	// Host is the host that makes, grows and deletes the volume's file:
	// the dir pool's host, or one host of a shared pool.
	Host string `json:"host"`
	// Path is the volume's qcow2 file on the pool's hosts (set by the
	// server: <pool path>/<project>/<uid>.qcow2).
	Path    string `json:"path"`
	SizeMiB int64  `json:"sizeMiB"`
	// Export, for a volume of an nbd pool, is where VMs open it:
	// "nbd://<address>/<uid>" (set by the server).
	Export string `json:"export,omitempty"`
	// Source is what the volume starts as; nil for a blank volume.
	Source *VolumeSource `json:"source,omitempty"`
	// AttachedTo names the VM of the project the volume is attached to.
	AttachedTo string       `json:"attachedTo,omitempty"`
	Limits     VolumeLimits `json:"limits,omitzero"`
	// Snapshots are the volume's snapshots by name: point-in-time copies
	// new volumes can start from.
	Snapshots []string  `json:"snapshots,omitempty"`
	Deletion  *Deletion `json:"deletion,omitempty"`
}

// VolumeSource is what a volume starts as: a disk image, another volume
// of the project (a clone), or a snapshot of one.
type VolumeSource struct {
	// Image is a disk image of the project, or "<project>/<name>" for a
	// public one.
	Image string `json:"image,omitempty"`
	// Volume is a volume of the same project and pool.
	Volume string `json:"volume,omitempty"`
	// Snapshot, with Volume, is one of that volume's snapshots.
	Snapshot string `json:"snapshot,omitempty"`
	// Path is where the host finds the source (set by the server).
	Path string `json:"path,omitempty"`
}

// VolumeLimits bound a volume's I/O in its VM (QEMU throttling); zero
// is unlimited.
type VolumeLimits struct {
	IOPS int64 `json:"iops,omitempty"` // operations per second, reads and writes together
	BPS  int64 `json:"bps,omitempty"`  // bytes per second, reads and writes together
}

// VolumeStatus is what the volume's host last observed.
type VolumeStatus struct {
	State string `json:"state"`
	// Path is the volume's file on its pool's hosts.
	Path    string `json:"path,omitempty"`
	SizeMiB int64  `json:"sizeMiB,omitempty"`
	// AllocatedMiB is what its file takes on disk.
	AllocatedMiB int64    `json:"allocatedMiB,omitempty"`
	Snapshots    []string `json:"snapshots,omitempty"`
	// ObservedGeneration is the spec generation its host carried out.
	ObservedGeneration int64     `json:"observedGeneration"`
	Error              string    `json:"error,omitempty"`
	UpdatedAt          time.Time `json:"updatedAt,omitzero"`
}

// VolumeCreate is the body of POST /v1/volumes.
type VolumeCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Pool   string            `json:"pool"`
	// SizeMiB is the size; with a source, 0 keeps the source's size and
	// more grows it.
	SizeMiB int64         `json:"sizeMiB,omitempty"`
	Source  *VolumeSource `json:"source,omitempty"`
	// Host picks the host of a shared pool that makes the file (default:
	// the pool's first ready host).
	Host   string       `json:"host,omitempty"`
	Limits VolumeLimits `json:"limits,omitzero"`
}

// VolumeAttach is the body of POST /v1/volumes/{name}/attach.
type VolumeAttach struct {
	VM string `json:"vm"`
}

// VolumeGrow is the body of POST /v1/volumes/{name}/grow.
type VolumeGrow struct {
	SizeMiB int64 `json:"sizeMiB"`
}

// VolumeSnapshot is the body of POST /v1/volumes/{name}/snapshots.
type VolumeSnapshot struct {
	Name string `json:"name"`
}

// VolumeAttachment is a volume in a VM's spec, as the server wrote it
// from the volume when it was attached: what the VM's host needs to plug
// it in.
type VolumeAttachment struct {
	Volume  string       `json:"volume"`
	Path    string       `json:"path"`
	SizeMiB int64        `json:"sizeMiB"`
	Limits  VolumeLimits `json:"limits,omitzero"`
	// Export is the volume's network export (nbd://...) when its pool
	// serves it over the network; the VM's host opens that, not Path.
	Export string `json:"export,omitempty"`
	// Boot marks the VM's root disk: plugged in before the guest runs,
	// first in the boot order, never detached while the VM exists.
	Boot bool `json:"boot,omitempty"`
	// DeleteWithVM deletes the volume when the VM is deleted (the root
	// volume a create made, when asked); otherwise it is only detached.
	DeleteWithVM bool `json:"deleteWithVM,omitempty"`
}

// VolumeAttachmentStatus is a volume as the VM's host has it plugged in.
type VolumeAttachmentStatus struct {
	Volume  string `json:"volume"`
	Device  string `json:"device"` // the QEMU device id
	SizeMiB int64  `json:"sizeMiB"`
	// Port is the hot-plug port it is in: a live migration's target plugs
	// it into the same one.
	Port  string `json:"port,omitempty"`
	Error string `json:"error,omitempty"`
}

// Agent messages about volumes and pools.
const (
	AgentMsgVolume        = "volume"
	AgentMsgVolumeRemoved = "volume-removed"
	AgentMsgPool          = "pool"
	AgentMsgPoolRemoved   = "pool-removed"
)
