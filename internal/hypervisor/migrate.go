package hypervisor

import (
	"context"
	"net"
	"strings"
)

// Migrator is implemented by drivers that move a running VM to a driver on
// another host while it runs: its memory, and its disks with the
// hypervisor's own block mirror (never a cold copy). The driver opens no
// network connection itself: the agents carry the streams. The source's
// dial returns a connection to the destination for one channel; the
// destination hands each connection it accepted for the VM to Incoming.
//
// On the destination: PrepareIncoming, then Incoming for each channel as it
// arrives, then FinishIncoming, which returns once the VM runs there; or
// AbortIncoming at any point, which leaves nothing behind. On the source:
// MigrateOut, which returns nil once the destination holds the VM (the
// source's process is left paused for the caller to destroy, or to resume
// if the destination fails to run it), or an error with the VM still
// running on the source.
type Migrator interface {
	// PrepareIncoming makes the VM as Create does and starts its
	// hypervisor waiting for the incoming migration, with its disks open
	// for the source's mirror. It rolls back what it made if it fails.
	PrepareIncoming(ctx context.Context, cfg VMConfig) (*Handle, error)
	// Incoming hands the waiting VM one channel's connection; the driver
	// owns conn from then on.
	Incoming(ctx context.Context, h *Handle, channel string, conn net.Conn) error
	// FinishIncoming waits for the migration to end and runs the VM.
	FinishIncoming(ctx context.Context, h *Handle) error
	// AbortIncoming stops the waiting VM and removes what PrepareIncoming
	// made.
	AbortIncoming(ctx context.Context, h *Handle) error
	// MigrateOut sends the running VM through connections from dial,
	// reporting progress as it goes. ctx ending cancels the migration: the
	// VM keeps running here.
	MigrateOut(ctx context.Context, h *Handle, dial MigrationDialer, progress func(MigrationProgress)) error
}

// DiskMover is implemented by drivers that move a stopped VM's own disks
// (not those on shared storage) to another host over the migration's
// channels, one per disk: the destination makes the VM with Create, then
// hands each disk's connection to ReceiveDisk, which returns once the disk
// is whole there; the source's SendDisks serves each disk through a
// connection from dial. Nothing runs the VM meanwhile.
type DiskMover interface {
	SendDisks(ctx context.Context, h *Handle, dial MigrationDialer) error
	ReceiveDisk(ctx context.Context, h *Handle, channel string, conn net.Conn) error
}

// MovedDisks are the disks of h a move copies: those not on shared
// storage.
func MovedDisks(h *Handle) []DiskFile {
	var out []DiskFile
	for _, df := range h.Disks {
		if !df.Shared {
			out = append(out, df)
		}
	}
	return out
}

// MigrationDialer connects to the destination for one channel.
type MigrationDialer func(ctx context.Context, channel string) (net.Conn, error)

// Migration channels: the memory stream, and one per disk mirrored.
const (
	ChannelMemory     = "memory"
	channelDiskPrefix = "disk/"
)

// ChannelDisk is the channel of the disk named name.
func ChannelDisk(name string) string { return channelDiskPrefix + name }

// DiskOfChannel returns the disk a channel carries, and whether it is a
// disk's channel.
func DiskOfChannel(channel string) (string, bool) {
	return strings.CutPrefix(channel, channelDiskPrefix)
}

// Migration phases, in order.
const (
	PhaseStorage    = "storage"    // disks are mirrored to the destination
	PhaseMemory     = "memory"     // memory is copied while the guest runs
	PhaseSwitchover = "switchover" // the guest is paused for the last pages and disk writes
	PhaseCompleted  = "completed"
)

// MigrationProgress is a sample of a migration under way.
type MigrationProgress struct {
	Phase string `json:"phase"`
	// DiskTotal and DiskDone are the bytes the disks' mirrors must copy
	// and have copied.
	DiskTotal int64 `json:"diskTotal,omitempty"`
	DiskDone  int64 `json:"diskDone,omitempty"`
	// MemoryTotal is the guest's memory; MemorySent the bytes sent so far
	// (pages sent again count again); MemoryRemaining what is left of this
	// pass.
	MemoryTotal     int64 `json:"memoryTotal,omitempty"`
	MemorySent      int64 `json:"memorySent,omitempty"`
	MemoryRemaining int64 `json:"memoryRemaining,omitempty"`
	// DirtyRate is how fast the guest dirties memory, in bytes a second.
	DirtyRate int64 `json:"dirtyRate,omitempty"`
	// ExpectedDowntimeMs is the hypervisor's estimate of the pause at
	// switchover.
	ExpectedDowntimeMs int64 `json:"expectedDowntimeMs,omitempty"`
	// Throttle is the percentage auto-converge slows the guest's CPUs by.
	Throttle int `json:"throttle,omitempty"`
}
