// Package libvirt is Polyvisor's provider for libvirt hosts: it speaks
// libvirt's RPC protocol (github.com/digitalocean/go-libvirt, pure Go, no
// libvirt C library) to a libvirtd, locally over its unix socket
// (qemu:///system, qemu:///session, test:///default, xen:///) or remotely
// over TCP (qemu+tcp://host/system, port 16509).
//
// A libvirt host is one Host with no datacenter or cluster; its storage
// pools are datastores and its networks are networks. A VM is a domain,
// identified by its UUID; its Path is "<uri>/<name>".
//
// CreateVM makes a copy-on-write qcow2 overlay of a disk image on the
// libvirt host as a volume of a storage pool (the "polyvisor" directory
// pool, /var/lib/polyvisor-libvirt, made on first use, unless
// CreateSpec.Datastore names another) and defines a q35 domain booting from
// it, with KVM when the host offers it and QEMU's TCG otherwise. The
// volumes a domain was created with are recorded in the domain's metadata,
// and Delete removes exactly those. Snapshots are libvirt's internal
// snapshots, which need every disk to be qcow2.
//
// go-libvirt's calls take no context: a ctx ends Connect's dial and
// handshake, and the waits of Shutdown, but an RPC already sent to a
// libvirtd that hangs is not abandoned. A libvirtd that goes away fails
// every call at once with an error wrapping provider.ErrUnreachable; call
// Connect again to reconnect.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/polyvisor/polyvisor/internal/provider"
)

var _ provider.Provider = (*Provider)(nil)

// TypeName is what Type returns.
const TypeName = "libvirt"

// dialTimeout bounds the dial when the caller's ctx has no deadline.
const dialTimeout = 10 * time.Second

// Provider is a connection to one libvirt daemon. It is safe for
// concurrent use; lifecycle actions on one VM are expected to be
// serialized by the caller.
type Provider struct {
	cfg provider.Config
	log *slog.Logger

	mu   sync.Mutex
	l    *golibvirt.Libvirt // nil until Connect
	ep   endpoint
	host hostFacts
}

// hostFacts are what Connect learns about the host once.
type hostFacts struct {
	id       string // host UUID from the capabilities, else the URI
	arch     string // the guest architecture CreateVM uses
	virtType string // "kvm" when offered and working, else "qemu" (or the driver's own)
	// virtReason says why virtType was chosen.
	virtReason string
}

// New returns a provider for the libvirt URI cfg.URL. It does not connect:
// call Connect. A nil log discards the provider's logging.
func New(cfg provider.Config, log *slog.Logger) *Provider {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, log: log.With("provider", TypeName, "uri", cfg.URL)}
}

// Type returns "libvirt".
func (p *Provider) Type() string { return TypeName }

// Capabilities says what a libvirt host supports. The test driver
// (test:///default) emits lifecycle events too, so Events holds for every
// URI.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{
		Create:      true,
		Suspend:     true,
		Snapshots:   true,
		Reconfigure: true,
		Console:     true,
		Events:      true,
	}
}

// Connect dials the daemon the URI names, opens the hypervisor connection
// and learns the host's id and virtualization type. Calling it again
// replaces the connection (after the daemon restarted, say). Errors wrap
// provider.ErrUnreachable (no daemon, unknown host, no such hypervisor
// driver), provider.ErrAuth (the daemon refused us) or
// provider.ErrUnsupported (a transport this provider does not speak).
func (p *Provider) Connect(ctx context.Context) error {
	ep, err := parseURI(p.cfg.URL)
	if err != nil {
		return err
	}
	if p.cfg.Username != "" || p.cfg.Password != "" {
		p.log.Warn("libvirt SASL authentication is not supported: ignoring the username and password")
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, ep.network, ep.address)
	if err != nil {
		return fmt.Errorf("dial libvirt at %s %s: %w: %w", ep.network, ep.address, provider.ErrUnreachable, err)
	}
	l := golibvirt.NewWithDialer(dialers.NewAlreadyConnected(conn))
	// The handshake takes no context: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err = l.ConnectToURI(golibvirt.ConnectURI(ep.remote))
	if !stop() {
		if err == nil {
			l.Disconnect()
		}
		return fmt.Errorf("open libvirt %s: %w", ep.remote, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("open libvirt %s: %w", ep.remote, classifyOpen(err))
	}
	facts, err := loadHostFacts(l, ep)
	if err != nil {
		l.Disconnect()
		return err
	}

	p.mu.Lock()
	old := p.l
	p.l, p.ep, p.host = l, ep, facts
	p.mu.Unlock()
	if old != nil {
		old.Disconnect()
	}
	p.log.Info("connected to libvirt", "remote", ep.remote, "host", facts.id, "virt", facts.virtType, "because", facts.virtReason)
	return nil
}

// Close drops the connection; domains keep running.
func (p *Provider) Close() error {
	p.mu.Lock()
	l := p.l
	p.l = nil
	p.mu.Unlock()
	if l == nil || !l.IsConnected() {
		return nil
	}
	if err := l.Disconnect(); err != nil && !errors.Is(classify(err), provider.ErrUnreachable) {
		return fmt.Errorf("close libvirt connection: %w", err)
	}
	return nil
}

// conn returns the live connection and what Connect learned.
func (p *Provider) conn() (*golibvirt.Libvirt, endpoint, hostFacts, error) {
	p.mu.Lock()
	l, ep, h := p.l, p.ep, p.host
	p.mu.Unlock()
	if l == nil {
		return nil, ep, h, fmt.Errorf("libvirt %s: not connected: %w", p.cfg.URL, provider.ErrUnreachable)
	}
	if !l.IsConnected() {
		return nil, ep, h, fmt.Errorf("libvirt %s: connection lost: %w", p.cfg.URL, provider.ErrUnreachable)
	}
	return l, ep, h, nil
}

// domain looks a domain up by its UUID string, after checking ctx.
func (p *Provider) domain(ctx context.Context, id string) (*golibvirt.Libvirt, golibvirt.Domain, error) {
	if err := ctx.Err(); err != nil {
		return nil, golibvirt.Domain{}, err
	}
	l, _, _, err := p.conn()
	if err != nil {
		return nil, golibvirt.Domain{}, err
	}
	u, err := parseUUID(id)
	if err != nil {
		return nil, golibvirt.Domain{}, fmt.Errorf("look up vm %q: %w: %w", id, provider.ErrNotFound, err)
	}
	dom, err := l.DomainLookupByUUID(u)
	if err != nil {
		return nil, golibvirt.Domain{}, fmt.Errorf("look up vm %s: %w", id, classify(err))
	}
	return l, dom, nil
}
