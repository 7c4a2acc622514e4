package api

import "time"

// Host states.
const (
	HostReady    = "ready"
	HostNotReady = "notready" // heartbeat lost
)

// Host is a machine that runs VMs through an agent.
type Host struct {
	Meta
	Spec   HostSpec   `json:"spec"`
	Status HostStatus `json:"status"`
	// Provider is set for a host of a connected estate, which runs no
	// Polyvisor agent.
	Provider *ProviderRef `json:"provider,omitempty"`
	// Fence, written by the server, is the host's fencing for HA
	// restarts (docs/HA.md): pending while it is silent, fenced once its
	// HA VMs may run elsewhere, returned when it heartbeats again.
	Fence *HostFence `json:"fence,omitempty"`
	// FenceTimeoutMS is T_fence, filled in by the server: how long the
	// host's agent may go without a heartbeat answered before it stops
	// its HA VMs. Zero: HA restarts are off.
	FenceTimeoutMS int64 `json:"fenceTimeoutMS,omitempty"`
}

// Fence states (HostFence.State).
const (
	FencePending  = "pending"
	FenceFenced   = "fenced"
	FenceReturned = "returned"
	// FenceUnknown: silent past T_fence and the margin, but nothing
	// confirmed the host powered off (no fence hook, or it failed) and
	// fencing on timeout alone is off: its HA VMs are not restarted.
	FenceUnknown = "unknown"
)

// HostFence is the server's fencing record of a host.
type HostFence struct {
	State string `json:"state"`
	// LastHeartbeat is the last heartbeat the leader knew of when it
	// began to fence the host.
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// Deadline is when the host counts as fenced without a fence hook:
	// its last heartbeat, T_fence and the margin.
	Deadline time.Time `json:"deadline"`
	FencedAt time.Time `json:"fencedAt,omitzero"`
	// By is timeout or hook: what fenced the host.
	By string `json:"by,omitempty"`
	// Hook is the fence hook's outcome, when one is configured; shown to
	// superadmins only.
	Hook       string    `json:"hook,omitempty"`
	ReturnedAt time.Time `json:"returnedAt,omitzero"`
	// VMs are the VMs restarted elsewhere (project/name); for all but a
	// superadmin, only those of projects the caller may read.
	VMs []string `json:"vms,omitempty"`
}

// HostSpec is the desired state of a host.
type HostSpec struct {
	// Unschedulable keeps the scheduler from placing new VMs on the host.
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// HostStatus is what the host's agent reports, plus the server's view of
// its liveness and allocation.
type HostStatus struct {
	State        string `json:"state"`
	CPUs         int    `json:"cpus"`
	MemoryMiB    int64  `json:"memoryMiB"`
	DiskTotalMiB int64  `json:"diskTotalMiB"`
	DiskFreeMiB  int64  `json:"diskFreeMiB"`
	Accel        string `json:"accel"` // kvm or tcg
	// AccelReason says why: what the accelerator probe saw, or what was asked.
	AccelReason   string    `json:"accelReason,omitempty"`
	QEMUVersion   string    `json:"qemuVersion,omitempty"`
	AgentVersion  string    `json:"agentVersion,omitempty"`
	Address       string    `json:"address,omitempty"`
	Drivers       []string  `json:"drivers,omitempty"`
	LastHeartbeat time.Time `json:"lastHeartbeat,omitzero"`
	// Allocated is the sum of the specs of the VMs placed on the host.
	Allocated Allocation `json:"allocated"`
	// Capacity is what the scheduler offers to VMs on the host: its CPUs
	// and memory under the server's overcommit ratios and reservation.
	// Filled in by the server where it fills in Allocated.
	Capacity HostCapacity `json:"capacity,omitzero"`
	// Warnings are what the agent found wrong on its host and left for a
	// person, such as a VM handle it could not read at start.
	Warnings []string `json:"warnings,omitempty"`
	// Confinement says how the host confines its VMs' processes.
	Confinement *HostConfinement `json:"confinement,omitempty"`
	// Keeper is the state of the host's keeper, the watchdog apart from
	// its agent that kills its HA VMs when the control plane has not
	// answered for T_fence (docs/HA.md); absent when the agent runs none.
	Keeper *HostKeeper `json:"keeper,omitempty"`
}

// HostKeeper is what an agent reports of its keeper.
type HostKeeper struct {
	// Armed: the keeper holds the host's HA VMs and kills them T_fence
	// after the last answered heartbeat. Only a host whose last
	// heartbeat said so has its HA VMs restarted elsewhere on its
	// silence alone.
	Armed   bool   `json:"armed"`
	Message string `json:"message,omitempty"`
	// LastFired is when the keeper last killed the host's HA VMs (since
	// it started).
	LastFired time.Time `json:"lastFired,omitzero"`
}

// HostConfinement says how a host confines its VMs' processes (QEMU and
// the user-mode network of their NICs), and what it could not do there.
type HostConfinement struct {
	// User is the unprivileged user the processes run as; empty when they
	// keep the agent's user.
	User string `json:"user,omitempty"`
	// Sandbox is the hypervisor's own sandbox ("seccomp"); empty for none.
	Sandbox string `json:"sandbox,omitempty"`
	// Cgroups is "v2" or "v1" when each VM has a cgroup with limits from
	// its size; empty when not.
	Cgroups string `json:"cgroups,omitempty"`
	// Network is how user-mode NICs reach the network, and whether the
	// host's loopback is closed to them.
	Network string `json:"network,omitempty"`
	// Notes name what is not confined on this host, and why.
	Notes []string `json:"notes,omitempty"`
}

// HostCapacity is what a host offers to VMs, to compare its allocation with.
type HostCapacity struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memoryMiB"`
}

// Allocation is a sum of VM sizes.
type Allocation struct {
	VCPUs     int   `json:"vcpus"`
	MemoryMiB int64 `json:"memoryMiB"`
	VMs       int   `json:"vms"`
}

// JoinToken is a single-use, expiring secret a new host's agent presents to
// register. The secret is returned once, at creation.
type JoinToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token,omitempty"`
	ExpiresAt time.Time `json:"expiresAt"`
	// CAFingerprint is the SHA-256 of the server's CA certificate, so the
	// agent can trust the server before it has the CA.
	CAFingerprint string `json:"caFingerprint"`
	// ServerURL is the https URL agents reach the server at (its first
	// advertised address, else its listen address or host name, and its
	// port); empty when the server does not listen on TCP.
	ServerURL string `json:"serverURL,omitempty"`
	// Host, when set, is the only host name the token joins.
	Host string `json:"host,omitempty"`
}

// JoinTokenCreate is the body of POST /v1/hosts/join-tokens.
type JoinTokenCreate struct {
	TTLSeconds int `json:"ttlSeconds,omitempty"` // default 3600
	// Host binds the token to one host name: it joins only that host, and
	// is what joins again a host that exists and still holds credentials
	// (one whose agent lost them). A token without it joins new hosts,
	// and hosts revoked or deleted.
	Host string `json:"host,omitempty"`
}

// AgentRegister is the body of POST /v1/agent/register.
type AgentRegister struct {
	JoinToken string     `json:"joinToken"`
	Host      string     `json:"host"`
	Status    HostStatus `json:"status"`
}

// AgentCredentials are returned to an agent that registered.
type AgentCredentials struct {
	Host   string `json:"host"`
	Token  string `json:"token"`
	CACert string `json:"caCert"` // PEM
}

// AgentMessage is one message on an agent's watch stream
// (GET /v1/agent/hosts/{name}/watch): a VM placed on the host changed, was
// removed, or a console stream is wanted.
type AgentMessage struct {
	Type string `json:"type"` // vm, vm-removed, stream, synced
	VM   *VM    `json:"vm,omitempty"`
	Name string `json:"name,omitempty"`
	// Stream asks the agent to dial /v1/agent/streams/{id} and splice it to
	// a console of the named VM.
	Stream *StreamRequest `json:"stream,omitempty"`
	// Network is the host's whole network state (type "network").
	Network *HostNetworkState `json:"network,omitempty"`
	// Volume is a volume the host makes (type "volume"); Pool a pool the
	// host reports on (type "pool").
	Volume *Volume `json:"volume,omitempty"`
	Pool   *Pool   `json:"pool,omitempty"`
	// GuestDeny lists the "IP:port" TCP endpoints the host's guests must
	// not reach (type "guest-deny"): every nbd pool's export address,
	// which carries no authentication of its own. Each message replaces
	// the list before.
	GuestDeny []string `json:"guestDeny,omitempty"`
}

// StreamRequest asks an agent to open a byte stream to a VM console.
type StreamRequest struct {
	ID      string `json:"id"`
	VM      string `json:"vm"`
	Console string `json:"console"` // serial, vnc, log, stats (one api.VMStats as JSON), or usage (one api.UsageAnswer)
	// Bytes bounds a log stream: the agent writes that many bytes of the
	// recorded serial output, then closes.
	Bytes int64 `json:"bytes,omitempty"`
	// Server, when set, is the URL of the server that waits for the
	// stream, when it is not the one whose watch carried the request: the
	// agent dials /v1/agent/streams/{id} there.
	Server string `json:"server,omitempty"`
	// Usage is the history asked for (console "usage").
	Usage *UsageQuery `json:"usage,omitempty"`
}

// Agent message types.
const (
	AgentMsgVM        = "vm"
	AgentMsgVMRemoved = "vm-removed"
	AgentMsgStream    = "stream"
	AgentMsgSynced    = "synced" // every VM of the host has been sent once
	AgentMsgPing      = "ping"   // keeps an idle stream alive
	AgentMsgGuestDeny = "guest-deny"
)
