package api

import "time"

// Provider types.
const (
	ProviderVSphere = "vsphere"
	ProviderLibvirt = "libvirt"
)

// Provider states.
const (
	ProviderConnecting   = "connecting"
	ProviderConnected    = "connected"
	ProviderDisconnected = "disconnected" // lost; inventory kept, marked stale
)

// Provider is an existing estate Polyvisor connects to: a vCenter or ESXi,
// or a libvirt host. Its hosts and VMs appear among Polyvisor's own, with
// no agent on its hosts.
type Provider struct {
	Meta
	Spec   ProviderSpec   `json:"spec"`
	Status ProviderStatus `json:"status"`
}

// ProviderSpec is how to reach the provider. Its password is never part of
// it: it is stored encrypted apart and never returned.
type ProviderSpec struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username,omitempty"`
	// CACert is the PEM of the CA to trust for the provider's endpoint.
	CACert   string `json:"caCert,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
}

// ProviderStatus is the connection and the inventory as last synced.
type ProviderStatus struct {
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Stale is true while the inventory shown is the last one seen before
	// the connection was lost.
	Stale        bool                 `json:"stale,omitempty"`
	LastSync     time.Time            `json:"lastSync,omitzero"`
	Inventory    ProviderCounts       `json:"inventory"`
	Capabilities ProviderCapabilities `json:"capabilities"`
}

// ProviderCounts counts a provider's inventory.
type ProviderCounts struct {
	Datacenters int `json:"datacenters"`
	Clusters    int `json:"clusters"`
	Hosts       int `json:"hosts"`
	Datastores  int `json:"datastores"`
	Networks    int `json:"networks"`
	VMs         int `json:"vms"`
}

// ProviderCapabilities says what a provider can do; an action it cannot do
// is answered 422 naming the capability.
type ProviderCapabilities struct {
	Create      bool `json:"create"`
	Suspend     bool `json:"suspend"`
	Snapshots   bool `json:"snapshots"`
	Reconfigure bool `json:"reconfigure"`
	Console     bool `json:"console"`
	Events      bool `json:"events"`
}

// ProviderCreate is the body of POST /v1/providers.
type ProviderCreate struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	CACert   string `json:"caCert,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
	// Project binds the provider to a project (default "default"): its VMs
	// belong there, and that project's members may use it.
	Project string `json:"project,omitempty"`
}

// ProviderRef ties a host or VM to the provider that runs it.
type ProviderRef struct {
	Name string `json:"name"` // the Polyvisor provider
	Type string `json:"type"`
	// ID is the object's native id (vSphere managed object id, libvirt
	// domain UUID); Path its native inventory path.
	ID         string `json:"id"`
	Path       string `json:"path,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	// Template and Datastore are what a VM created through Polyvisor was
	// made from and where its disks were put.
	Template  string `json:"template,omitempty"`
	Datastore string `json:"datastore,omitempty"`
	GuestOS   string `json:"guestOS,omitempty"`
	Stale     bool   `json:"stale,omitempty"`
}

// ProviderInventory is GET /v1/providers/{name}/inventory: the parts of an
// estate that are not hosts or VMs (those are under /v1/hosts and /v1/vms).
type ProviderInventory struct {
	Datacenters []InventoryItem `json:"datacenters"`
	Clusters    []InventoryItem `json:"clusters"`
	Datastores  []InventoryItem `json:"datastores"`
	Networks    []InventoryItem `json:"networks"`
	// Templates are what VMs can be cloned from (vSphere).
	Templates []InventoryItem `json:"templates"`
}

// InventoryItem is one datacenter, cluster, datastore or network.
type InventoryItem struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Datacenter    string `json:"datacenter,omitempty"`
	CapacityBytes int64  `json:"capacityBytes,omitempty"`
	FreeBytes     int64  `json:"freeBytes,omitempty"`
}

// Snapshot is a VM snapshot.
type Snapshot struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt,omitzero"`
	Current     bool      `json:"current,omitempty"`
}

// SnapshotCreate is the body of POST /v1/vms/{name}/snapshots.
type SnapshotCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// VMReconfigure is the body of POST /v1/vms/{name}/reconfigure: new CPUs
// and memory for a stopped VM (zero keeps a value).
type VMReconfigure struct {
	VCPUs     int   `json:"vcpus,omitempty"`
	MemoryMiB int64 `json:"memoryMiB,omitempty"`
}

// ConsoleTicket is GET /v1/vms/{name}/console/ticket: how to reach the
// console of a VM whose provider serves it itself (vSphere WebMKS).
type ConsoleTicket struct {
	Type   string `json:"type"` // webmks or vnc
	Host   string `json:"host,omitempty"`
	Port   int    `json:"port,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	URL    string `json:"url,omitempty"`
}
