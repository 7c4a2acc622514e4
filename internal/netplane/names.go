package netplane

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"regexp"
)

// Every device, namespace and nftables object Polyvisor makes on a host
// carries a prefix of its own, so the agent can tell what is its to change
// or remove from what the host's operator made. A network's and a port's
// short id (10 hex digits from the server) follows the prefix: an interface
// name holds 15 bytes.
const (
	prefixBridge = "pvbr" // a network's bridge (overlay networks)
	prefixVXLAN  = "pvvx" // a network's VXLAN device
	prefixTap    = "pvtp" // a port's tap, which QEMU's NIC uses
	prefixGW     = "pvgw" // the bridge's end of the veth to the network's router namespace
	prefixUp     = "pvup" // the host's end of the router namespace's uplink veth
	prefixRouter = "pvr-" // a network's router namespace (a file in the netns dir)

	// Inside a router namespace.
	routerGW = "gw" // the gateway's end, with the subnets' gateway addresses
	routerUp = "up" // the uplink to the host, for NAT and floating IPs
)

// ourPrefixes are the prefixes of the host's devices the agent owns.
var ourPrefixes = []string{prefixBridge, prefixVXLAN, prefixTap, prefixGW, prefixUp}

var shortIDRE = regexp.MustCompile(`^[0-9a-z]{1,11}$`)

// shortID returns id when it fits a device name after a 4-byte prefix, and
// otherwise 10 hex digits of its hash, so any id the server sends names a
// device, and two ids name two devices.
func shortID(id string) string {
	if shortIDRE.MatchString(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:])[:10]
}

// TapName is the tap device of the port with the given id: the agent makes
// it, and QEMU's NIC for the port attaches to it.
func TapName(portID string) string { return prefixTap + shortID(portID) }

// gatewayMAC is the MAC of a network's gateway: the same on every host, so
// a guest's ARP entry for its gateway stays right wherever it runs. It is
// locally administered and unicast.
func gatewayMAC(netID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("polyvisor-gateway/" + netID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// bridgeMAC is the MAC of a network's bridge on this host: fixed, so the
// bridge does not take another MAC as ports come and go.
func bridgeMAC(netID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("polyvisor-bridge/" + netID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}
