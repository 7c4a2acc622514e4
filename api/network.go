package api

// Networks, subnets, ports, security groups and floating IPs: the objects
// of Polyvisor's software-defined networks. Every one belongs to a project
// (Meta.Project); networks of different projects may use the same CIDR.
//
// The server owns the objects and the addresses (IPAM); each host's agent
// is sent, on its watch, the part of the network state its host needs
// (HostNetworkState) and makes the host's dataplane match it.

// Network types.
const (
	// NetworkOverlay is a VXLAN network (one VNI per network) that spans
	// every host with a port on it. The default for project networks.
	NetworkOverlay = "overlay"
	// NetworkBridged attaches ports to a bridge (or interface) that already
	// exists on the hosts: a provider network. Superadmins make them.
	NetworkBridged = "bridged"
	// NetworkProvider is a network of a connected estate (a vSphere port
	// group, a libvirt network): shown read-only, never stored; a VM of
	// that provider names it in its NICs.
	NetworkProvider = "provider"
)

// Network is a layer-2 segment with its subnets.
type Network struct {
	Meta
	Spec   NetworkSpec   `json:"spec"`
	Status NetworkStatus `json:"status"`
	// Provider is set on a network of a connected estate (type provider):
	// which provider has it and its native id.
	Provider *ProviderRef `json:"provider,omitempty"`
}

// NetworkSpec is a network's desired state.
type NetworkSpec struct {
	Description string `json:"description,omitempty"`
	// Type is overlay (default) or bridged.
	Type string `json:"type"`
	// Bridge is, for a bridged network, the name of the bridge or interface
	// on every host that ports attach to.
	Bridge string `json:"bridge,omitempty"`
	// External networks (bridged, superadmin-made) hand out floating IPs and
	// are reachable from outside Polyvisor.
	External bool `json:"external,omitempty"`
	// NAT gives the network's guests outbound access through the host they
	// run on (masquerading behind the host's address).
	NAT bool `json:"nat,omitempty"`
	// MTU of the guests' interfaces; default 1450 on overlays (the VXLAN
	// header taken from a 1500 underlay), 1500 on bridged networks.
	MTU int `json:"mtu,omitempty"`
}

// NetworkStatus is what the server knows of a network.
type NetworkStatus struct {
	// VNI is an overlay network's VXLAN id, assigned by the server.
	VNI int `json:"vni,omitempty"`
	// Hosts are the hosts with a port on the network.
	Hosts []string `json:"hosts,omitempty"`
	// Ports counts the network's ports.
	Ports int `json:"ports"`
}

// NetworkCreate is the body of POST /v1/networks.
type NetworkCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	NetworkSpec
}

// Subnet is an IP range of a network: addresses, gateway and DHCP.
type Subnet struct {
	Meta
	Spec   SubnetSpec   `json:"spec"`
	Status SubnetStatus `json:"status"`
}

// SubnetStatus is computed when a subnet is read.
type SubnetStatus struct {
	// Used counts the subnet's allocated addresses (ports' fixed IPs and
	// floating IPs).
	Used int `json:"used"`
}

// SubnetSpec is a subnet's desired state.
type SubnetSpec struct {
	// Network names the subnet's network, in the same project.
	Network string `json:"network"`
	// CIDR is the subnet's range, IPv4 ("10.0.0.0/24") or IPv6.
	CIDR string `json:"cidr"`
	// Gateway is the router address guests use; default the first address
	// of the CIDR. Each host that has a port on the network answers it.
	Gateway string `json:"gateway,omitempty"`
	// DHCP serves addresses to the subnet's ports (default true).
	DHCP *bool `json:"dhcp,omitempty"`
	// Pools are the ranges addresses are allocated from; default the whole
	// CIDR but the network and broadcast addresses and the gateway.
	Pools []IPRange `json:"pools,omitempty"`
	// DNSServers are handed to guests by DHCP and cloud-init.
	DNSServers []string `json:"dnsServers,omitempty"`
	// Routes are extra static routes handed to guests.
	Routes []Route `json:"routes,omitempty"`
}

// IPRange is an inclusive range of addresses.
type IPRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Route is a static route for guests.
type Route struct {
	Destination string `json:"destination"` // CIDR
	NextHop     string `json:"nextHop"`
}

// SubnetCreate is the body of POST /v1/subnets.
type SubnetCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	SubnetSpec
}

// Port is a VM NIC's place on a network: its MAC, its addresses and the
// security groups that filter it. A VM's NICs on networks are ports; a
// port may also be made on its own and named by a NIC.
type Port struct {
	Meta
	Spec   PortSpec   `json:"spec"`
	Status PortStatus `json:"status"`
}

// PortSpec is a port's desired state.
type PortSpec struct {
	Network string `json:"network"`
	// MAC is assigned by the server when empty (52:54:00 prefix).
	MAC string `json:"mac"`
	// FixedIPs are the port's addresses, allocated atomically by the server
	// from the network's subnets when not given: one address is never held
	// by two ports.
	FixedIPs []FixedIP `json:"fixedIPs"`
	// SecurityGroups name groups of the port's project; default the
	// project's "default" group.
	SecurityGroups []string `json:"securityGroups,omitempty"`
	// PortSecurity enforces the port's MAC and addresses (anti-spoofing)
	// and its security groups; default true.
	PortSecurity *bool `json:"portSecurity,omitempty"`
	// VM and NIC name the VM and the index of its NIC using the port;
	// empty for a port no VM uses. The server sets them.
	VM  string `json:"vm,omitempty"`
	NIC int    `json:"nic,omitempty"`
	// DeleteWithVM is set on a port made by a VM's create (or NIC add)
	// for a NIC naming a network: it is deleted with the VM or the NIC.
	// A port made on its own is only released (VM cleared).
	DeleteWithVM bool `json:"deleteWithVM,omitempty"`
}

// FixedIP is one address of a port, in one of its network's subnets.
type FixedIP struct {
	Subnet string `json:"subnet"`
	IP     string `json:"ip"`
}

// PortStatus is where a port lives.
type PortStatus struct {
	// Host is the host of the port's VM (empty while it has none).
	Host string `json:"host,omitempty"`
	// State is down or active (its host reported its dataplane made).
	State string `json:"state,omitempty"`
	// Message is what the host could not make for the port, if anything.
	Message string `json:"message,omitempty"`
}

// Port states.
const (
	PortDown   = "down"
	PortActive = "active"
)

// PortCreate is the body of POST /v1/ports. VM, NIC and DeleteWithVM
// are the server's: a request that sets them is refused.
type PortCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	PortSpec
}

// PortUpdate is the body of PATCH /v1/ports/{name}: the fields present are
// changed.
type PortUpdate struct {
	SecurityGroups *[]string `json:"securityGroups,omitempty"`
	PortSecurity   *bool     `json:"portSecurity,omitempty"`
}

// SecurityGroup is a set of stateful rules applied to the ports that name
// it. With no rule, nothing comes in and nothing goes out; the project's
// "default" group, made with the project, lets everything out and lets in
// what comes from ports of the same group.
type SecurityGroup struct {
	Meta
	Spec SecurityGroupSpec `json:"spec"`
}

// SecurityGroupSpec is a security group's rules.
type SecurityGroupSpec struct {
	Description string              `json:"description,omitempty"`
	Rules       []SecurityGroupRule `json:"rules,omitempty"`
}

// Security group rule directions, protocols and address families.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"

	ProtocolAny  = "any"
	ProtocolTCP  = "tcp"
	ProtocolUDP  = "udp"
	ProtocolICMP = "icmp"

	EtherTypeIPv4 = "IPv4"
	EtherTypeIPv6 = "IPv6"
)

// SecurityGroupRule allows traffic in one direction. Rules are stateful:
// the answers to allowed traffic are allowed.
type SecurityGroupRule struct {
	// ID is assigned by the server.
	ID        string `json:"id,omitempty"`
	Direction string `json:"direction"`           // ingress or egress
	EtherType string `json:"etherType,omitempty"` // IPv4 (default) or IPv6
	Protocol  string `json:"protocol,omitempty"`  // any (default), tcp, udp, icmp
	// PortMin and PortMax bound the destination port (tcp, udp); 0 for all.
	PortMin int `json:"portMin,omitempty"`
	PortMax int `json:"portMax,omitempty"`
	// At most one of RemoteCIDR and RemoteGroup: where traffic comes from
	// (ingress) or goes to (egress); neither means anywhere.
	RemoteCIDR  string `json:"remoteCIDR,omitempty"`
	RemoteGroup string `json:"remoteGroup,omitempty"`
}

// SecurityGroupCreate is the body of POST /v1/security-groups.
type SecurityGroupCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	SecurityGroupSpec
}

// SecurityGroupUpdate is the body of PATCH /v1/security-groups/{name}: the
// fields present are changed; Rules replaces every rule.
type SecurityGroupUpdate struct {
	Description *string              `json:"description,omitempty"`
	Rules       *[]SecurityGroupRule `json:"rules,omitempty"`
}

// SecurityGroupRules is the body of POST /v1/security-groups/{name}/rules:
// rules added to the group.
type SecurityGroupRules struct {
	Rules []SecurityGroupRule `json:"rules"`
}

// FloatingIP is an address of an external network mapped one to one to a
// port: traffic to it reaches the port's fixed address, and the port's
// outbound traffic leaves from it.
type FloatingIP struct {
	Meta
	Spec   FloatingIPSpec   `json:"spec"`
	Status FloatingIPStatus `json:"status"`
}

// FloatingIPSpec is a floating IP's desired state.
type FloatingIPSpec struct {
	// Network is the external network the address comes from (it may be of
	// another project: external networks are shared).
	Network string `json:"network"`
	// Address is allocated by the server when empty.
	Address string `json:"address,omitempty"`
	// Port is the port (in the floating IP's project) it maps to; empty
	// while unassigned.
	Port string `json:"port,omitempty"`
}

// FloatingIPStatus says where the mapping is made; computed when read.
type FloatingIPStatus struct {
	Host string `json:"host,omitempty"`
	// FixedIP is the port's address the floating IP maps to.
	FixedIP string `json:"fixedIP,omitempty"`
}

// FloatingIPCreate is the body of POST /v1/floating-ips.
type FloatingIPCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	FloatingIPSpec
}

// FloatingIPAssociate is the body of POST /v1/floating-ips/{name}/associate.
type FloatingIPAssociate struct {
	Port string `json:"port"`
}

// HostNetworkState is the part of the network state one host needs to make
// its dataplane: sent whole to the host's agent (AgentMsgNetwork) whenever
// any of it changes. The agent makes the host match it (declaratively,
// idempotently) and reports the ports it made active.
type HostNetworkState struct {
	// Revision orders states: an agent ignores one older than what it has.
	// It is the store revision the state was computed at, so it orders
	// states computed by any server of the installation.
	Revision int64 `json:"revision"`
	// Host is the host the state is for.
	Host string `json:"host,omitempty"`
	// Underlay is this host's address for VXLAN (its status address).
	Underlay string `json:"underlay,omitempty"`
	// Networks with a port on this host (and those its floating IPs use).
	Networks []HostNetwork `json:"networks"`
	// Ports on this host.
	Ports []HostPort `json:"ports"`
	// Remote are the ports of the same networks on other hosts: where to
	// send their MACs (static VXLAN forwarding and neighbour entries; no
	// flooding).
	Remote []RemotePort `json:"remote"`
	// SecurityGroups used by this host's ports, with remote groups
	// resolved to addresses.
	SecurityGroups []HostSecurityGroup `json:"securityGroups"`
	// FloatingIPs mapped to this host's ports.
	FloatingIPs []HostFloatingIP `json:"floatingIPs"`
}

// HostNetwork is one network as a host makes it.
type HostNetwork struct {
	// Key is the network's "<project>/<name>"; ID a short, stable id the
	// host uses to name its devices (bridges, VXLAN devices, nft sets):
	// 10 lowercase hex digits, derived from the network's UID, so that
	// "pvbr" or "pvvx" and the ID fit an interface name (15 bytes).
	Key      string   `json:"key"`
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	VNI      int      `json:"vni,omitempty"`
	Bridge   string   `json:"bridge,omitempty"`
	MTU      int      `json:"mtu"`
	NAT      bool     `json:"nat,omitempty"`
	External bool     `json:"external,omitempty"`
	Subnets  []Subnet `json:"subnets"`
}

// HostPort is one port on this host.
type HostPort struct {
	Key            string    `json:"key"` // "<project>/<name>"
	ID             string    `json:"id"`  // 10 hex digits, stable: names the tap
	Network        string    `json:"network"`
	MAC            string    `json:"mac"`
	FixedIPs       []FixedIP `json:"fixedIPs"`
	SecurityGroups []string  `json:"securityGroups"` // keys
	PortSecurity   bool      `json:"portSecurity"`
	// VM is the key of the VM using the port, NIC its index there.
	VM  string `json:"vm,omitempty"`
	NIC int    `json:"nic"`
}

// RemotePort is a port of a network on another host.
type RemotePort struct {
	Network  string   `json:"network"` // key
	MAC      string   `json:"mac"`
	IPs      []string `json:"ips"`
	Underlay string   `json:"underlay"` // the other host's VXLAN address
	// Port and VM are the port's and its VM's keys (for names in DNS).
	Port string `json:"port,omitempty"`
	VM   string `json:"vm,omitempty"`
}

// HostSecurityGroup is a security group as a host applies it.
type HostSecurityGroup struct {
	Key   string              `json:"key"`
	ID    string              `json:"id"`
	Rules []SecurityGroupRule `json:"rules"`
	// Members are the addresses of every port in the group (anywhere):
	// what a rule naming this group as its remote matches.
	Members []string `json:"members"`
}

// HostFloatingIP is a floating IP mapped to a port of this host.
type HostFloatingIP struct {
	Address string `json:"address"`
	Network string `json:"network"` // the external network's key
	Port    string `json:"port"`    // key
	FixedIP string `json:"fixedIP"`
}

// AgentMsgNetwork carries a HostNetworkState on the agent's watch.
const AgentMsgNetwork = "network"

// PortReport is the body of PUT /v1/agent/hosts/{name}/ports: the ports
// of the host whose dataplane its agent has made (active), as of the
// HostNetworkState of Revision. The host's other ports are down; ports of
// other hosts are ignored.
type PortReport struct {
	Revision int64    `json:"revision"`
	Active   []string `json:"active"` // port keys
	// Errors maps a port key to what the agent could not make for it.
	Errors map[string]string `json:"errors,omitempty"`
}

// PortReportResult is the answer to a PortReport: how many ports changed
// state.
type PortReportResult struct {
	Changed int `json:"changed"`
}
