package api

import "time"

// A VMMigration moves VMs from another hypervisor (vSphere, libvirt, an
// OVA, disk files) into Polyvisor hosts (`polyvisor migration run`): the
// record a project keeps of it. The runner that copies the disks reports
// its progress here and learns here that it was cancelled.
type VMMigration struct {
	Meta
	Spec   VMMigrationSpec   `json:"spec"`
	Status VMMigrationStatus `json:"status"`
}

// VMMigrationSpec is what the migration is to do.
type VMMigrationSpec struct {
	// Source names where the VMs come from: file, ova, or a provider.
	Source string `json:"source"`
	// Host is the Polyvisor host the VMs move to.
	Host string `json:"host"`
	// Parallel is how many VMs are copied at once (a wave).
	Parallel int `json:"parallel"`
	// VMs are the VMs it moves, in order.
	VMs []VMMigrationVM `json:"vms"`
	// Cancel, once set (POST .../cancel), asks the runner to stop; what
	// it copied stays checkpointed, so that a later run resumes.
	Cancel bool `json:"cancel,omitempty"`
}

// VMMigrationVM is one VM of a migration.
type VMMigrationVM struct {
	// Name is the Polyvisor VM made; SourceName the source's VM.
	Name       string `json:"name"`
	SourceName string `json:"sourceName"`
	VCPUs      int    `json:"vcpus"`
	MemoryMiB  int64  `json:"memoryMiB"`
	Disks      int    `json:"disks"`
	CopyBytes  int64  `json:"copyBytes"`
}

// Bounds of a migration record, which a runner keeps to: how many VMs it
// moves, and how long an error it reports may be (a runner cuts a longer
// one).
const (
	MaxMigrationVMs        = 256
	MaxMigrationErrorBytes = 1024
)

// States of a migration and of each of its VMs.
const (
	VMMigrationPending   = "pending"
	VMMigrationRunning   = "running"
	VMMigrationSucceeded = "succeeded"
	VMMigrationFailed    = "failed"
	VMMigrationCancelled = "cancelled"
)

// VMMigrationStatus is how the migration goes, as its runner reports it
// (PUT .../status).
type VMMigrationStatus struct {
	State string `json:"state"`
	// Runner names where the copy runs (user@machine).
	Runner string `json:"runner,omitempty"`
	// RunnerUser is the user who recorded the migration, set by the
	// server: only that user reports to it (and so sets its final
	// state); anyone who may create migrations may cancel it.
	RunnerUser string                `json:"runnerUser,omitempty"`
	VMs        []VMMigrationVMStatus `json:"vms,omitempty"`
	Error      string                `json:"error,omitempty"`
	// ReportedAt is when the runner last reported.
	ReportedAt time.Time `json:"reportedAt,omitzero"`
}

// VMMigrationVMStatus is how one VM's move goes.
type VMMigrationVMStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Phase is the step under way: stream, extract, convert, verify,
	// adapt, upload, create, done.
	Phase string `json:"phase,omitempty"`
	Disk  string `json:"disk,omitempty"`
	// DoneBytes and TotalBytes are the phase's; Rate is bytes a second,
	// ETASeconds the time left at it.
	DoneBytes  int64   `json:"doneBytes,omitempty"`
	TotalBytes int64   `json:"totalBytes,omitempty"`
	Rate       float64 `json:"rate,omitempty"`
	ETASeconds float64 `json:"etaSeconds,omitempty"`
	// ResumedBytes is where a resumed copy started.
	ResumedBytes int64  `json:"resumedBytes,omitempty"`
	Error        string `json:"error,omitempty"`
}

// VMMigrationCreate is the body of POST /v1/migrations.
type VMMigrationCreate struct {
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels,omitempty"`
	Source   string            `json:"source"`
	Host     string            `json:"host"`
	Parallel int               `json:"parallel,omitempty"`
	VMs      []VMMigrationVM   `json:"vms"`
}
