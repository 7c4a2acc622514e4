package api

// OpVMMigrate moves a running VM to another host while it runs, or
// reassigns a stopped one with its disks copied there.
const OpVMMigrate = "vm.migrate"

// VMMigrate is the body of POST /v1/vms/{name}/migrate.
type VMMigrate struct {
	// Host is the destination; empty lets the scheduler pick one (never
	// the VM's host, never a cordoned one).
	Host string `json:"host,omitempty"`
}

// Migration is a migration asked of a VM's host (VMSpec.Migration).
type Migration struct {
	// Operation is the vm.migrate operation carrying it out.
	Operation string `json:"operation"`
	// Target is the host the VM moves to; its room is held for the VM
	// until the migration ends.
	Target string `json:"target"`
	// Offline is a stopped VM's move: its own disks are copied to the
	// target (the target's agent pulls them through an NBD export of the
	// source's), which then holds it, still stopped.
	Offline bool `json:"offline,omitempty"`
}

// MigrationStatus is how a migration goes, as the VM's host reports it
// (VMStatus.Migration).
type MigrationStatus struct {
	Operation string `json:"operation"`
	// Phase is storage (disks mirrored), memory, switchover, completed or
	// failed.
	Phase string `json:"phase"`
	// DiskTotal and DiskDone are the bytes the disks' mirrors must copy
	// and have copied.
	DiskTotal int64 `json:"diskTotal,omitempty"`
	DiskDone  int64 `json:"diskDone,omitempty"`
	// MemoryTotal is the guest's memory; MemorySent the bytes sent so far
	// (pages sent again count again); MemoryRemaining what is left.
	MemoryTotal     int64 `json:"memoryTotal,omitempty"`
	MemorySent      int64 `json:"memorySent,omitempty"`
	MemoryRemaining int64 `json:"memoryRemaining,omitempty"`
	// DirtyRate is how fast the guest dirties memory, in bytes a second.
	DirtyRate int64 `json:"dirtyRate,omitempty"`
	// ExpectedDowntimeMs is the hypervisor's estimate of the pause at
	// switchover.
	ExpectedDowntimeMs int64 `json:"expectedDowntimeMs,omitempty"`
	// Throttle is the percentage auto-converge slows the guest's CPUs by.
	Throttle int    `json:"throttle,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Migration phases the source reports besides the driver's.
const MigrationFailed = "failed"

// AgentMigration is the destination's side of a migration, between the
// two agents through the server (PUT and GET
// /v1/agent/migrations/{operation}); users never see it. The destination
// agent listens for this migration alone at Address and lets in only
// connections that present Token.
type AgentMigration struct {
	Operation string `json:"operation"`
	VM        string `json:"vm"`     // the VM's key
	Source    string `json:"source"` // the VM's host
	Target    string `json:"target"`
	Address   string `json:"address,omitempty"` // host:port
	Token     string `json:"token,omitempty"`
	// State is listening, running (the VM runs on the target, or, moved
	// offline, its disks are all there) or failed.
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
	Version int64  `json:"version,omitempty"`
}

// States of the destination's side.
const (
	IncomingListening = "listening"
	IncomingRunning   = "running"
	IncomingFailed    = "failed"
)

// OpHostDrain empties a host: it is cordoned, its running VMs migrate
// live and its stopped ones move, one after another. Its result is a
// HostDrain.
const OpHostDrain = "host.drain"

// HostDrain is the result of a host.drain operation (POST
// /v1/hosts/{name}/drain): what became of each VM placed on the host.
type HostDrain struct {
	Host  string      `json:"host"`
	Moves []DrainMove `json:"moves"`
	// Cancel is set when the drain's cancel was asked, through any
	// server: the leader running the drain cancels the move under way and
	// ends the drain.
	Cancel bool `json:"cancel,omitempty"`
}

// DrainMove is one VM leaving a drained host.
type DrainMove struct {
	VM        string `json:"vm"` // the VM's key
	Target    string `json:"target,omitempty"`
	Operation string `json:"operation,omitempty"`
	// Outcome is pending (not yet tried), moving, migrated (live),
	// moved (stopped, its disks copied), skipped (paused: it stays, with
	// why in Error), failed (with Error) or cancelled.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}
