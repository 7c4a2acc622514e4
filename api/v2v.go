package api

import "time"

// A VMMigration moves VMs from another hypervisor (a connected vSphere or
// libvirt provider, an OVA, disk files) into Polyvisor hosts. The control
// plane runs it: the leading server plans it (reads the source's
// hardware), and once started copies the disks with the provider
// binding's credentials into its data directory, checkpointed, imports
// them as the project's images, creates the VMs, and then does with the
// source VMs what the migration says (Spec.SourceDisposition).
type VMMigration struct {
	Meta
	Spec   VMMigrationSpec   `json:"spec"`
	Status VMMigrationStatus `json:"status"`
}

// Kinds of migration source.
const (
	// MigrationSourceProvider is VMs of a connected provider (vSphere or
	// libvirt) bound to the migration's project, named by the provider's
	// ids (spec.provider.id of the project's VMs mirrored from it).
	MigrationSourceProvider = "provider"
	// MigrationSourceUpload is files uploaded to the migration
	// (PUT /v1/migrations/{name}/files/{file}): an OVA, or disk files.
	MigrationSourceUpload = "upload"
	// MigrationSourceURL is an OVA the server fetches from an http(s)
	// URL, under the image import's rules (public destinations only,
	// unless the image settings allow a host; size bounded).
	MigrationSourceURL = "url"
)

// Formats of uploaded sources.
const (
	MigrationFormatOVA  = "ova"
	MigrationFormatDisk = "disk"
)

// What is done with a source VM once its target has booted.
const (
	DispositionKeep     = "keep"
	DispositionPowerOff = "poweroff"
	DispositionDelete   = "delete"
)

// Cutover modes of a running source.
const (
	// CutoverAuto copies a running vSphere source from a snapshot while it
	// runs, then powers it off and copies what changed (with
	// changed-block tracking where the source offers it; otherwise a cold
	// copy, said in the VM's status), then boots the target.
	CutoverAuto = "auto"
)

// VMMigrationSource says where a migration's VMs come from.
type VMMigrationSource struct {
	// Kind is provider, upload or url.
	Kind string `json:"kind"`
	// Provider names the provider (kind provider); VMs are its VMs to
	// move, by the provider's ids.
	Provider string                `json:"provider,omitempty"`
	VMs      []VMMigrationSourceVM `json:"vms,omitempty"`
	// URL is the OVA's http(s) URL (kind url); the record keeps it
	// without a password.
	URL string `json:"url,omitempty"`
	// Format is ova or disk (kind upload; kind url is always an OVA).
	Format string `json:"format,omitempty"`
	// Files are the files uploaded (kind upload): one OVA, or a VM's disk
	// files in order, the first its boot disk.
	Files []VMMigrationFile `json:"files,omitempty"`
	// Hardware describes the VM whose disk files are uploaded (format
	// disk), which they do not say themselves.
	Hardware *VMMigrationHardware `json:"hardware,omitempty"`
}

// VMMigrationSourceVM is one VM of a provider source.
type VMMigrationSourceVM struct {
	// ID is the provider's id of the VM (vSphere's managed object id,
	// libvirt's domain UUID).
	ID string `json:"id"`
	// Name is the Polyvisor VM to make; default the source VM's name
	// made a DNS label.
	Name string `json:"name,omitempty"`
}

// VMMigrationFile is one uploaded file of a migration.
type VMMigrationFile struct {
	// Name is the file's name (a single path element), by which it is
	// uploaded.
	Name string `json:"name"`
	// SizeBytes is the file's size: its upload must be exactly this long.
	SizeBytes int64 `json:"sizeBytes"`
	// Uploaded is set by the server once the whole file arrived.
	Uploaded bool `json:"uploaded,omitempty"`
}

// VMMigrationHardware is the hardware of a VM uploaded as disk files.
type VMMigrationHardware struct {
	// Name is the Polyvisor VM's name (default: the first file's name).
	Name      string `json:"name,omitempty"`
	VCPUs     int    `json:"vcpus,omitempty"`     // default 1
	MemoryMiB int64  `json:"memoryMiB,omitempty"` // default 1024
	// Firmware is bios (default) or efi.
	Firmware string `json:"firmware,omitempty"`
	// GuestOS is the guest's system (e.g. debian12, windows2019).
	GuestOS string `json:"guestOS,omitempty"`
	// DiskBus is the bus the source attached the disks to (virtio,
	// scsi, sata, ide, nvme).
	DiskBus string `json:"diskBus,omitempty"`
	// MACs are the VM's NICs, by MAC (on the source network "").
	MACs []string `json:"macs,omitempty"`
}

// VMMigrationSpec is what the migration is to do.
type VMMigrationSpec struct {
	Source VMMigrationSource `json:"source"`
	// Host is the Polyvisor host the VMs move to; "" lets the scheduler
	// place each VM.
	Host string `json:"host,omitempty"`
	// NetworkMap maps a source network (port group, libvirt network,
	// OVF network name) onto a Polyvisor network ("user" or a network of
	// the project); "*" maps every other one.
	NetworkMap map[string]string `json:"networkMap,omitempty"`
	// Parallel is how many VMs move at once (the wave size, default 2).
	Parallel int `json:"parallel"`
	// SourceDisposition is what is done with each source VM once its
	// target runs: keep (default), poweroff or delete. Provider sources
	// only.
	SourceDisposition string `json:"sourceDisposition,omitempty"`
	// Cutover is how a running source is switched over: auto (default
	// for a running vSphere source). A running libvirt source is copied
	// as it runs (as after a crash): power it off first, or the plan
	// warns.
	Cutover string `json:"cutover,omitempty"`
	// Start is set once the migration is to run (POST .../start, or
	// create with start): a planned migration waits for it.
	Start bool `json:"start,omitempty"`
	// Cancel, once set (POST .../cancel), stops the run: what it made
	// (images, VMs) is removed, copies are kept until the record is
	// deleted.
	Cancel bool `json:"cancel,omitempty"`
}

// Bounds of a migration record.
const (
	MaxMigrationVMs        = 256
	MaxMigrationErrorBytes = 1024
	MaxMigrationParallel   = 32
	MaxMigrationFiles      = 16
)

// States of a migration. A migration is created planning (or uploading,
// while its files are awaited), planned once its plan is known, pending
// once started until the controller takes it, then running and one of
// the final states.
const (
	VMMigrationUploading = "uploading"
	VMMigrationPlanning  = "planning"
	VMMigrationPlanned   = "planned"
	VMMigrationPending   = "pending"
	VMMigrationRunning   = "running"
	VMMigrationSucceeded = "succeeded"
	VMMigrationFailed    = "failed"
	VMMigrationCancelled = "cancelled"
)

// VMMigrationStatus is how the migration goes, as the control plane
// writes it.
type VMMigrationStatus struct {
	State string `json:"state"`
	// Server is the server that runs the migration (holds its job
	// directory and uploads).
	Server string `json:"server,omitempty"`
	// CreatedBy is the user who made the migration.
	CreatedBy string                `json:"createdBy,omitempty"`
	VMs       []VMMigrationVMStatus `json:"vms,omitempty"`
	Error     string                `json:"error,omitempty"`
	// CopyBytes and EstimatedSeconds total the VMs' plans.
	CopyBytes        int64     `json:"copyBytes,omitempty"`
	EstimatedSeconds float64   `json:"estimatedSeconds,omitempty"`
	StartedAt        time.Time `json:"startedAt,omitzero"`
	FinishedAt       time.Time `json:"finishedAt,omitzero"`
	// ReportedAt is when the runner last wrote progress.
	ReportedAt time.Time `json:"reportedAt,omitzero"`
}

// VMMigrationVMStatus is one VM of a migration: its plan, then how its
// move goes.
type VMMigrationVMStatus struct {
	// Name is the Polyvisor VM made; SourceID and SourceName the source's
	// VM.
	Name       string             `json:"name"`
	SourceID   string             `json:"sourceID,omitempty"`
	SourceName string             `json:"sourceName,omitempty"`
	Plan       *VMMigrationVMPlan `json:"plan,omitempty"`
	State      string             `json:"state"`
	// Phase is the step under way: stream, extract, convert,
	// verify, adapt, cutover, import, create, boot, disposition, done.
	Phase string `json:"phase,omitempty"`
	Disk  string `json:"disk,omitempty"`
	// DoneBytes and TotalBytes are the phase's; Rate is bytes a second,
	// ETASeconds the time left at it.
	DoneBytes  int64   `json:"doneBytes,omitempty"`
	TotalBytes int64   `json:"totalBytes,omitempty"`
	Rate       float64 `json:"rate,omitempty"`
	ETASeconds float64 `json:"etaSeconds,omitempty"`
	// ResumedBytes is where a resumed copy started.
	ResumedBytes int64 `json:"resumedBytes,omitempty"`
	// Host is where the VM was placed; Notes say what was done beyond the
	// plan (cutover without changed-block tracking, source powered off).
	Host  string   `json:"host,omitempty"`
	Notes []string `json:"notes,omitempty"`
	Error string   `json:"error,omitempty"`
}

// VMMigrationVMPlan is what will be done to one source VM.
type VMMigrationVMPlan struct {
	// Host is the destination ("" while the scheduler is to place it).
	Host      string `json:"host,omitempty"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int64  `json:"memoryMiB"`
	// Firmware and GuestOS are the source's.
	Firmware string `json:"firmware,omitempty"`
	GuestOS  string `json:"guestOS,omitempty"`
	// Running says the source VM runs (a running vSphere source is
	// cut over, see Spec.Cutover).
	Running bool                  `json:"running,omitempty"`
	Disks   []VMMigrationDiskPlan `json:"disks,omitempty"`
	NICs    []VMMigrationNICPlan  `json:"nics,omitempty"`
	// Adaptation is none, virt-v2v-in-place or compatible-devices (SATA
	// disks and e1000 NICs for a guest that is not converted).
	Adaptation  string   `json:"adaptation,omitempty"`
	Conversions []string `json:"conversions,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	// Blockers say why the VM cannot move; a migration with a blocked VM
	// moves the others.
	Blockers []string `json:"blockers,omitempty"`
	// CopyBytes is the most that will be copied; EstimatedSeconds the
	// copy's time at the rate assumed.
	CopyBytes        int64   `json:"copyBytes"`
	EstimatedSeconds float64 `json:"estimatedSeconds"`
}

// VMMigrationDiskPlan is one disk of a VM's plan.
type VMMigrationDiskPlan struct {
	// Name is the Polyvisor VM's disk; Image the image it becomes.
	Name          string `json:"name"`
	Image         string `json:"image"`
	SourceBus     string `json:"sourceBus,omitempty"`
	Bus           string `json:"bus"`
	CapacityBytes int64  `json:"capacityBytes,omitempty"`
}

// VMMigrationNICPlan is one NIC of a VM's plan.
type VMMigrationNICPlan struct {
	SourceNetwork string `json:"sourceNetwork"`
	SourceModel   string `json:"sourceModel,omitempty"`
	Network       string `json:"network"`
	MAC           string `json:"mac,omitempty"`
	Model         string `json:"model"`
}

// VMMigrationCreate is the body of POST /v1/migrations. The migration is
// planned at once (uploading first for an upload source); Start runs it
// once planned.
type VMMigrationCreate struct {
	Name              string            `json:"name"`
	Labels            map[string]string `json:"labels,omitempty"`
	Source            VMMigrationSource `json:"source"`
	Host              string            `json:"host,omitempty"`
	NetworkMap        map[string]string `json:"networkMap,omitempty"`
	Parallel          int               `json:"parallel,omitempty"`
	SourceDisposition string            `json:"sourceDisposition,omitempty"`
	Cutover           string            `json:"cutover,omitempty"`
	Start             bool              `json:"start,omitempty"`
}
