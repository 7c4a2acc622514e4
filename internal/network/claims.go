package network

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
)

// Claim is one unique thing held by one object (see the package doc). The
// claim's name in its collection is the thing; the claim says who holds
// it.
type Claim struct {
	Name string `json:"name"`
	// Kind and Owner are the holder's kind (network, subnet, port,
	// floating-ip, security-group) and store key; OwnerUID its UID.
	Kind     string `json:"kind"`
	Owner    string `json:"owner"`
	OwnerUID string `json:"ownerUID"`
	Version  int64  `json:"-"`
}

// SetClaimVersion stamps a claim with its store revision.
func SetClaimVersion(c *Claim, rev int64) { c.Version = rev }

// Owner kinds of claims.
const (
	kindNetwork    = "network"
	kindSubnet     = "subnet"
	kindPort       = "port"
	kindFloatingIP = "floating-ip"
	kindGroup      = "security-group"
)

func vniClaim(vni int) string { return "vni/" + strconv.Itoa(vni) }

func netPrefix(netUID string) string { return "net/" + netUID + "/" }

func subnetClaim(netUID, subnetUID string) string {
	return netPrefix(netUID) + "subnet/" + subnetUID
}

func ipPrefix(netUID string) string { return netPrefix(netUID) + "ip/" }

func subnetIPPrefix(netUID, subnetUID string) string { return ipPrefix(netUID) + subnetUID + "/" }

func ipClaim(netUID, subnetUID string, ip netip.Addr) string {
	return subnetIPPrefix(netUID, subnetUID) + ip.String()
}

func macPrefix(netUID string) string { return netPrefix(netUID) + "mac/" }

func macClaim(netUID, mac string) string { return macPrefix(netUID) + mac }

// fipClaim is held by the floating IP mapped to a port: one per port.
func fipClaim(portUID string) string { return "fip/" + portUID }

func groupPrefix(groupUID string) string { return "sg/" + groupUID + "/" }

func groupPortClaim(groupUID, portUID string) string {
	return groupPrefix(groupUID) + "port/" + portUID
}

func groupRefClaim(remoteUID, groupUID string) string {
	return groupPrefix(remoteUID) + "group/" + groupUID
}

// claimed lists the claims under prefix, from the index.
func (m *Manager) claimed(prefix string) []*Claim {
	return listAll(m.cfg.Claims, func(c *Claim) bool { return strings.HasPrefix(c.Name, prefix) })
}

// ShortID is the short, stable id a host names an object's devices with:
// 10 hex digits of the SHA-256 of its UID.
func ShortID(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(sum[:5])
}
