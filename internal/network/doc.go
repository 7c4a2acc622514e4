// Package network holds Polyvisor's software-defined networks on the
// server's side: the objects (networks, subnets, ports, security groups,
// floating IPs), their validation, the allocation of addresses, MACs and
// VXLAN ids (IPAM), and the part of the network state each host needs
// (api.HostNetworkState), computed from the store and delivered to the
// hosts' agents as it changes.
//
// # Claims
//
// Everything that must be unique is a claim: an object of the "claims"
// collection whose name is the unique thing, created in the same etcd
// transaction as the object that holds it. etcd refuses a second create of
// one name, so no two ports ever hold one address, also when two servers
// allocate at once; nothing is locked in a process. The names:
//
//	vni/<vni>                               a network's VXLAN id
//	net/<network-uid>/subnet/<subnet-uid>   a subnet of a network
//	net/<network-uid>/ip/<subnet-uid>/<ip>  an address (a port's, a floating IP's)
//	net/<network-uid>/mac/<mac>             a port's MAC on its network
//	sg/<group-uid>/port/<port-uid>          a port using a security group
//	sg/<group-uid>/group/<group-uid>        a group whose rules name another as remote
//	fip/<port-uid>                          the floating IP mapped to a port
//
// Claims also guard deletes: a network is deleted only while nothing is
// claimed under net/<uid>/ip/ and net/<uid>/mac/, a subnet while nothing is
// under its addresses, a security group while nothing is under sg/<uid>/,
// each checked in the delete's own transaction (store.OpNoneUnder). A
// create checks that the objects it refers to still exist at the same
// transaction (store.OpCheck), so a port is never made on a subnet deleted
// at the same moment.
//
// # Per-host state
//
// The Hub follows every collection the network state depends on (networks,
// subnets, ports, groups, floating IPs, VMs, hosts), recomputes the state
// of every host after a burst of changes, and hands each host's watchers
// the state when it differs from the last one sent. A state's revision is
// the store revision it was computed at, so states from any server of an
// installation are ordered.
package network
