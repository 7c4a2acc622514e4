// Package provider defines how Polyvisor drives estates it does not run
// itself: a vCenter or ESXi (package provider/vsphere), a libvirt host
// (package provider/libvirt), and later Hyper-V, VirtualBox or Parallels.
// A provider connects with credentials, lists its inventory, follows
// changes, and carries out VM lifecycle actions by the VM's native id. No
// Polyvisor agent runs on a provider's hosts.
package provider

import (
	"context"
	"errors"
	"time"
)

// Config is what a provider needs to connect.
type Config struct {
	Name string
	// URL is the endpoint: https://vc/sdk for vSphere, a libvirt URI
	// (qemu:///system, qemu+tcp://h/system, test:///default, xen:///).
	URL      string
	Username string
	Password string
	// CACert is a PEM bundle to trust; Insecure skips verification.
	CACert   []byte
	Insecure bool
}

// Provider is a live connection to an estate.
type Provider interface {
	// Type is "vsphere" or "libvirt".
	Type() string
	// Capabilities says which actions the estate supports.
	Capabilities() Capabilities
	// Connect checks the endpoint and the credentials and opens the
	// connection. Its errors wrap ErrAuth, ErrUnreachable or ErrCertificate
	// when that is the cause.
	Connect(ctx context.Context) error
	// Close drops the connection; nothing on the hypervisor changes.
	Close() error
	// Inventory returns everything the provider sees, now.
	Inventory(ctx context.Context) (*Inventory, error)
	// Watch calls fn for each change the hypervisor reports (vSphere
	// WaitForUpdatesEx, libvirt lifecycle events) until ctx ends or the
	// connection is lost, which it returns as an error. A change may be
	// a bare Resync request when the provider cannot say what changed.
	Watch(ctx context.Context, fn func(Change)) error

	// CreateVM makes a VM and returns it (powered on if spec.PowerOn).
	CreateVM(ctx context.Context, spec CreateSpec) (*VM, error)
	// PowerOn starts a stopped VM, or resumes a suspended one.
	PowerOn(ctx context.Context, id string) error
	// Shutdown asks the guest to shut down (tools or ACPI) and powers the
	// VM off if it has not stopped within timeout.
	Shutdown(ctx context.Context, id string, timeout time.Duration) error
	// PowerOff stops the VM at once.
	PowerOff(ctx context.Context, id string) error
	// Reboot restarts the VM (guest reboot when possible, else reset).
	Reboot(ctx context.Context, id string) error
	// Suspend pauses (or suspends) a running VM; Resume continues it.
	Suspend(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Delete destroys a VM and its disks. The VM must be off.
	Delete(ctx context.Context, id string) error
	// Reconfigure changes CPUs and memory of a stopped VM.
	Reconfigure(ctx context.Context, id string, vcpus int, memoryMiB int64) error

	Snapshots(ctx context.Context, id string) ([]Snapshot, error)
	CreateSnapshot(ctx context.Context, id, name, description string) error
	RevertSnapshot(ctx context.Context, id, name string) error
	DeleteSnapshot(ctx context.Context, id, name string) error

	// Console returns how to reach the VM's console, when the estate
	// offers one (Capabilities.Console).
	Console(ctx context.Context, id string) (*Console, error)
}

// Capabilities lists what a provider can do; the API refuses (422) an
// action whose capability is false and names it.
type Capabilities struct {
	Create      bool `json:"create"`
	Suspend     bool `json:"suspend"`
	Snapshots   bool `json:"snapshots"`
	Reconfigure bool `json:"reconfigure"`
	Console     bool `json:"console"`
	Events      bool `json:"events"` // changes arrive by events, not only by resync
}

// Errors a provider wraps so the API can answer with the right meaning.
var (
	ErrAuth        = errors.New("authentication failed")
	ErrUnreachable = errors.New("endpoint unreachable")
	ErrCertificate = errors.New("certificate not trusted")
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrBadState    = errors.New("not possible in the vm's current state")
	ErrUnsupported = errors.New("not supported by this provider")
)

// Inventory is a provider's whole estate at one moment. Objects refer to
// each other by native id.
type Inventory struct {
	Datacenters []Datacenter
	Clusters    []Cluster
	Hosts       []Host
	Datastores  []Datastore
	Networks    []Network
	VMs         []VM
}

type Datacenter struct {
	ID, Name string
}

type Cluster struct {
	ID, Name, Datacenter string
}

// Host states.
const (
	HostConnected    = "connected"
	HostDisconnected = "disconnected"
	HostMaintenance  = "maintenance"
)

type Host struct {
	ID, Name            string
	Datacenter, Cluster string // native ids, empty when none
	CPUs                int
	MemoryMiB           int64
	State               string
	Version             string // "VMware ESXi 8.0.0", "QEMU 7.2.0"
	// Accel is what the host's VMs run under (kvm, tcg), when the provider
	// tells; AccelReason says why.
	Accel, AccelReason string
}

type Datastore struct {
	ID, Name, Datacenter string
	CapacityBytes        int64
	FreeBytes            int64
}

type Network struct {
	ID, Name, Datacenter string
}

// VM power states (the same words as api.Power*).
const (
	PowerRunning = "running"
	PowerStopped = "stopped"
	PowerPaused  = "paused" // suspended or paused
)

// VM is a VM as the provider sees it.
type VM struct {
	ID         string // native id: vSphere managed object id, libvirt UUID
	Name       string
	Path       string // inventory path ("/DC0/vm/web-1"); libvirt: the URI and name
	Host       string // native host id
	Datacenter string
	Cluster    string
	PowerState string
	VCPUs      int
	MemoryMiB  int64
	GuestOS    string
	Template   bool
	Disks      []Disk
	NICs       []NIC
	IPs        []string
}

type Disk struct {
	Name      string
	Format    string // qcow2, raw, vmdk
	SizeBytes int64
	Path      string // file or "[datastore] path"
}

type NIC struct {
	MAC     string
	Network string // network name
}

type Snapshot struct {
	Name        string
	Description string
	CreatedAt   time.Time
	Current     bool
}

// Console says how to reach a VM's console.
type Console struct {
	Type string // vnc or webmks
	Host string
	Port int
	// Password or ticket, when the console needs one.
	Ticket string
	// URL, when the console is a web URL (vSphere WebMKS).
	URL string
}

// CreateSpec describes a VM to make.
type CreateSpec struct {
	Name      string
	VCPUs     int
	MemoryMiB int64
	// Template is what the VM is made from: a vSphere template (name or
	// inventory path) or, for libvirt, the path of a disk image on the
	// libvirt host that the VM's disk is a copy-on-write overlay of.
	Template string
	// Network is a network name to connect the first NIC to (empty: as
	// the template has it / the provider's default).
	Network string
	// Placement by native id or name; empty lets the provider choose.
	Datacenter, Cluster, Host, Datastore string
	PowerOn                              bool
}

// Change is one change a provider reports.
type Change struct {
	// Resync asks for a full Inventory: the provider knows something
	// changed but not what.
	Resync bool
	// VM is set when a VM was added or changed; DeletedVM holds the id of
	// a VM that is gone.
	VM        *VM
	DeletedVM string
	Host      *Host
}

// UsageReader is implemented by a provider that can read what its running
// VMs, and its hosts when that is cheap, use now: the server samples it
// into the utilization history.
type UsageReader interface {
	Usage(ctx context.Context) (*Usage, error)
}

// Usage is one reading of an estate's use.
type Usage struct {
	VMs []VMUsage
	// Hosts is empty when the provider reads none: a host's use is then
	// the sum of its VMs'.
	Hosts []HostUsage
}

// VMUsage is what one running VM uses. CPU comes either as cores busy now
// (CPUCores: vSphere's quick statistics) or, with Cumulative, as the CPU
// time used since the VM started (CPUSeconds: libvirt), which the sampler
// turns into cores between two readings.
type VMUsage struct {
	ID          string // native id
	Host        string // native id of the host it runs on
	CPUCores    float64
	CPUSeconds  float64
	Cumulative  bool
	MemoryBytes int64
}

// HostUsage is what one host uses now.
type HostUsage struct {
	ID          string // native id
	CPUCores    float64
	MemoryBytes int64
}
