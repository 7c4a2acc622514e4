package libvirt

import (
	"encoding/xml"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Where libvirtd listens.
const (
	systemSocket = "/var/run/libvirt/libvirt-sock"
	tcpPort      = "16509"
)

// endpoint is a parsed libvirt URI: where to dial and what to open there.
type endpoint struct {
	uri     string // the URI as configured
	network string // "unix" or "tcp"
	address string // socket path or host:port
	remote  string // the URI the daemon opens: "qemu:///system"
	host    string // the URI's host; "" for a local daemon
}

var driverRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

// parseURI turns a libvirt URI into an endpoint. The unix and tcp
// transports are spoken; ssh, libssh, libssh2, tls and ext are refused
// with provider.ErrUnsupported.
func parseURI(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return endpoint{}, fmt.Errorf("parse libvirt uri %q: not a uri like qemu:///system", raw)
	}
	driver, transport, _ := strings.Cut(u.Scheme, "+")
	if !driverRE.MatchString(driver) {
		return endpoint{}, fmt.Errorf("parse libvirt uri %q: bad driver %q", raw, driver)
	}
	if transport == "" && u.Host != "" {
		transport = "tls" // libvirt's default for a remote host
	}
	ep := endpoint{uri: raw, remote: remoteURI(driver, u)}
	switch transport {
	case "", "unix":
		if u.Host != "" {
			return endpoint{}, fmt.Errorf("parse libvirt uri %q: the unix transport takes no host", raw)
		}
		ep.network, ep.address = "unix", systemSocket
		if s := u.Query().Get("socket"); s != "" {
			ep.address = s
		}
	case "tcp":
		if u.Hostname() == "" {
			return endpoint{}, fmt.Errorf("parse libvirt uri %q: the tcp transport needs a host", raw)
		}
		port := u.Port()
		if port == "" {
			port = tcpPort
		}
		ep.network, ep.address, ep.host = "tcp", net.JoinHostPort(u.Hostname(), port), u.Hostname()
	case "ssh", "libssh", "libssh2":
		return endpoint{}, fmt.Errorf("libvirt uri %q: the %s transport is not supported yet (use qemu+tcp:// or a local socket): %w",
			raw, transport, provider.ErrUnsupported)
	default:
		return endpoint{}, fmt.Errorf("libvirt uri %q: the %s transport is not supported: %w", raw, transport, provider.ErrUnsupported)
	}
	return ep, nil
}

// remoteURI is the URI the daemon opens once connected: the driver and
// path, without transport, host or transport parameters ("name" overrides).
func remoteURI(driver string, u *url.URL) string {
	if name := u.Query().Get("name"); name != "" {
		return name
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	return driver + "://" + path
}

// vmPath is a VM's inventory path: the URI and the domain name.
func vmPath(uri, name string) string {
	if strings.HasSuffix(uri, "/") {
		return uri + name
	}
	return uri + "/" + name
}

// capsXML is the part of the capabilities document the provider reads.
type capsXML struct {
	Host struct {
		UUID string `xml:"uuid"`
		CPU  struct {
			Arch string `xml:"arch"`
		} `xml:"cpu"`
	} `xml:"host"`
	Guests []struct {
		OSType string `xml:"os_type"`
		Arch   struct {
			Name    string `xml:"name,attr"`
			Domains []struct {
				Type string `xml:"type,attr"`
			} `xml:"domain"`
		} `xml:"arch"`
	} `xml:"guest"`
}

// loadHostFacts reads the capabilities: the host's UUID and the best
// virtualization type for x86_64 (or the host's architecture): kvm where
// it works (decideVirtType), else qemu (TCG), else whatever the driver
// offers (test, xen).
func loadHostFacts(l *golibvirt.Libvirt, ep endpoint) (hostFacts, error) {
	raw, err := l.ConnectGetCapabilities()
	if err != nil {
		return hostFacts{}, fmt.Errorf("read libvirt capabilities: %w", classify(err))
	}
	var caps capsXML
	if err := xml.Unmarshal([]byte(raw), &caps); err != nil {
		return hostFacts{}, fmt.Errorf("parse libvirt capabilities: %w", err)
	}
	h := hostFacts{id: strings.TrimSpace(caps.Host.UUID)}
	if h.id == "" {
		h.id = ep.uri
	}
	types := map[string]map[string]bool{}
	for _, g := range caps.Guests {
		if g.OSType != "hvm" {
			continue
		}
		if types[g.Arch.Name] == nil {
			types[g.Arch.Name] = map[string]bool{}
		}
		for _, d := range g.Arch.Domains {
			types[g.Arch.Name][d.Type] = true
		}
	}
	h.arch = "x86_64"
	if types[h.arch] == nil {
		h.arch = caps.Host.CPU.Arch
	}
	d := decideVirtType(l, h.arch, types[h.arch])
	h.virtType, h.virtReason = d.virtType, d.reason
	return h, nil
}
