package api

import (
	"encoding/json"
	"time"
)

// Operation statuses.
const (
	OpPending   = "pending"
	OpRunning   = "running"
	OpSucceeded = "succeeded"
	OpFailed    = "failed"
	OpCancelled = "cancelled"
)

// Operation kinds.
const (
	OpVMCreate    = "vm.create"
	OpVMStart     = "vm.start"
	OpVMStop      = "vm.stop"
	OpVMRestart   = "vm.restart"
	OpVMPause     = "vm.pause"
	OpVMResume    = "vm.resume"
	OpVMDelete    = "vm.delete"
	OpImageImport = "image.import"
	OpImageDelete = "image.delete"
)

// Operation is an asynchronous action: every mutation returns one.
type Operation struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Target Ref    `json:"target"`
	Status string `json:"status"`
	// Progress is 0-100.
	Progress int    `json:"progress"`
	Message  string `json:"message,omitempty"`
	Error    *Error `json:"error,omitempty"`
	// Params are the action's parameters (a stop's timeout, a delete's keepDisks).
	Params json.RawMessage `json:"params,omitempty"`
	// TargetGeneration is the spec generation whose observation completes
	// the operation (VM operations).
	TargetGeneration int64     `json:"targetGeneration,omitempty"`
	Version          int64     `json:"version"`
	CreatedAt        time.Time `json:"createdAt"`
	StartedAt        time.Time `json:"startedAt,omitzero"`
	FinishedAt       time.Time `json:"finishedAt,omitzero"`
	Deadline         time.Time `json:"deadline,omitzero"`

	// Result is what the operation produced, when its kind says (a
	// host.drain's HostDrain), kept up to date while it runs.
	Result json.RawMessage `json:"result,omitempty"`
}

// Done tells whether the operation reached a final status.
func (o *Operation) Done() bool {
	return o.Status == OpSucceeded || o.Status == OpFailed || o.Status == OpCancelled
}

// Ref names an object.
type Ref struct {
	Kind string `json:"kind"` // vm, image, host
	Name string `json:"name"`
	// Project is the project of a project object.
	Project string `json:"project,omitempty"`
	UID     string `json:"uid,omitempty"`
}

// Event types.
const (
	EventVM        = "vm"        // a VM was created, changed or deleted
	EventHost      = "host"      // a host registered, changed state
	EventImage     = "image"     // an image changed
	EventOperation = "operation" // an operation changed
	EventProvider  = "provider"  // a provider connected, synced or was lost

	// Network objects created, changed or deleted.
	EventNetwork       = "network"
	EventSubnet        = "subnet"
	EventPort          = "port"
	EventSecurityGroup = "security-group"
	EventFloatingIP    = "floating-ip"

	// A migration of VMs from another hypervisor was created, progressed
	// (about every second while it runs) or was deleted.
	EventMigration = "migration"
)

// HeaderRevision is the header of GET /v1/events's answer that tells the
// revision the stream follows after: a client that gets no event before
// it is cut off resumes from it.
const HeaderRevision = "X-Polyvisor-Revision"

// Event is one item of GET /v1/events (newline-delimited JSON).
type Event struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	// Revision is the store revision of the change: the same at every
	// server. A client cut off passes the last one it got as ?since= to
	// resume, at any server, without missing an event.
	Revision int64 `json:"revision"`
	// Action is created, updated or deleted.
	Action    string     `json:"action"`
	Object    Ref        `json:"object"`
	VM        *VM        `json:"vm,omitempty"`
	Host      *Host      `json:"host,omitempty"`
	Image     *Image     `json:"image,omitempty"`
	Operation *Operation `json:"operation,omitempty"`
	Provider  *Provider  `json:"provider,omitempty"`

	Network       *Network       `json:"network,omitempty"`
	Subnet        *Subnet        `json:"subnet,omitempty"`
	Port          *Port          `json:"port,omitempty"`
	SecurityGroup *SecurityGroup `json:"securityGroup,omitempty"`
	FloatingIP    *FloatingIP    `json:"floatingIP,omitempty"`

	Migration *VMMigration `json:"migration,omitempty"`
}
