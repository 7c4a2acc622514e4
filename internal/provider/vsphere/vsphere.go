// Package vsphere is Polyvisor's provider for VMware vSphere: it drives a
// vCenter Server or a standalone ESXi host through the vSphere Web Services
// API with govmomi.
//
// Objects are named by their managed object reference values ("vm-42",
// "host-12", "domain-c7"). Inventory reads the whole estate with one
// property-collector retrieval over a container view of the root folder and
// works out inventory paths and datacenter and cluster membership from the
// objects' parents, so it costs about as much as a plain listing of the VMs.
// Watch follows the same container view with WaitForUpdatesEx. Lifecycle
// actions are vSphere tasks, waited on until they finish.
package vsphere

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// TypeName is what Type returns.
const TypeName = "vsphere"

var _ provider.Provider = (*Provider)(nil)

// Timeouts the provider applies on its own.
const (
	dialTimeout   = 30 * time.Second
	keepAliveIdle = 5 * time.Minute
	logoutTimeout = 10 * time.Second
)

// Provider is a connection to a vCenter or an ESXi host. It is safe for
// concurrent use once Connect has returned.
type Provider struct {
	cfg provider.Config
	log *slog.Logger

	mu     sync.Mutex
	client *vim25.Client
	sm     *session.Manager
	ka     *keepalive.HandlerSOAP
	url    *url.URL // the endpoint, without credentials

	viewMu sync.Mutex
	views  map[string]*view.ContainerView
}

// New returns a provider for cfg; nothing is dialled before Connect.
func New(cfg provider.Config, log *slog.Logger) *Provider {
	if log == nil {
		log = slog.Default()
	}
	return &Provider{
		cfg: cfg,
		log: log.With("provider", TypeName, "name", cfg.Name),
	}
}

// Type returns "vsphere".
func (p *Provider) Type() string { return TypeName }

// Capabilities says what vSphere supports: everything the interface has.
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

// endpoint parses cfg.URL: https is assumed when there is no scheme and
// /sdk when there is no path. Credentials in the URL are used when the
// config has none, and are never kept in the URL.
func endpoint(raw string) (*url.URL, *url.Userinfo, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, nil, errors.New("no url")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, nil, fmt.Errorf("parse url: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, nil, fmt.Errorf("url scheme %q: want https", u.Scheme)
	}
	if u.Host == "" {
		return nil, nil, errors.New("url has no host")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	user := u.User
	u.User = nil
	u.RawQuery, u.Fragment = "", ""
	return u, user, nil
}

// Connect dials the endpoint, checks its certificate and logs in.
func (p *Provider) Connect(ctx context.Context) error {
	u, userinfo, err := endpoint(p.cfg.URL)
	if err != nil {
		return fmt.Errorf("connect to vsphere: %w", err)
	}
	username, password := p.cfg.Username, p.cfg.Password
	if username == "" && userinfo != nil {
		username = userinfo.Username()
		password, _ = userinfo.Password()
	}
	where := u.String()
	// A second Connect replaces the session.
	_ = p.Close()

	sc := soap.NewClient(u, p.cfg.Insecure)
	tr := sc.DefaultTransport()
	if len(p.cfg.CACert) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(p.cfg.CACert) {
			return fmt.Errorf("connect to %s: ca certificate: no PEM certificate found", where)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	// govmomi's own TLS dialer ignores the context and has no timeout:
	// dial with both, and verify the certificate the standard way.
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		Config:    tr.TLSClientConfig,
	}
	tr.DialTLSContext = dialer.DialContext

	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", where, classify(err))
	}
	ka := keepalive.NewHandlerSOAP(c.RoundTripper, keepAliveIdle, nil)
	c.RoundTripper = ka
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(username, password)); err != nil {
		sc.CloseIdleConnections()
		return fmt.Errorf("log in to %s as %q: %w", where, username, classify(err))
	}

	p.mu.Lock()
	p.client, p.sm, p.ka, p.url = c, sm, ka, u
	p.mu.Unlock()
	p.log.Info("connected", "url", where, "api", c.ServiceContent.About.FullName)
	return nil
}

// Close logs out and drops the connection.
func (p *Provider) Close() error {
	p.mu.Lock()
	c, sm, ka := p.client, p.sm, p.ka
	p.client, p.sm, p.ka = nil, nil, nil
	p.mu.Unlock()
	p.viewMu.Lock()
	p.views = nil
	p.viewMu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	if err := sm.Logout(ctx); err != nil {
		// The session dies with its idle timeout anyway.
		p.log.Debug("logout failed", "err", err)
	}
	ka.Stop()
	c.CloseIdleConnections()
	return nil
}

var errNotConnected = errors.New("not connected")

// Client returns the connection's vSphere client, for work beyond the
// Provider interface (a migration's export of a VM's disks).
func (p *Provider) Client() (*vim25.Client, error) { return p.conn() }

// conn returns the live client.
func (p *Provider) conn() (*vim25.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return nil, errNotConnected
	}
	return p.client, nil
}

// Container views the provider keeps for the life of its session.
const (
	viewInventory = "inventory" // every kind Inventory reads
	viewSkeleton  = "skeleton"  // what a VM's path and placement need
)

var viewTypes = map[string][]string{
	viewInventory: {"VirtualMachine", "HostSystem", "ComputeResource", "Datacenter",
		"Datastore", "Network", "Folder", "VirtualApp"},
	viewSkeleton: {"HostSystem", "ComputeResource", "Datacenter", "Network", "Folder", "VirtualApp"},
}

// view returns the named container view over the root folder, creating it
// on first use. A container view follows the inventory on the server side.
func (p *Provider) view(ctx context.Context, c *vim25.Client, name string) (*view.ContainerView, error) {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	if v := p.views[name]; v != nil {
		return v, nil
	}
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, viewTypes[name], true)
	if err != nil {
		return nil, fmt.Errorf("create %s container view: %w", name, classify(err))
	}
	if p.views == nil {
		p.views = map[string]*view.ContainerView{}
	}
	p.views[name] = v
	return v, nil
}
