// Package estate connects Polyvisor to the estates it does not run itself
// (vCenter/ESXi, libvirt hosts) through package provider. For each stored
// provider it keeps a connection, mirrors the provider's hosts and VMs into
// the store (full sync, then the provider's change events, with a periodic
// resync as a safety net), and carries out what Polyvisor's operations ask
// of those VMs. It plays, for a provider's VMs, the part the host agent
// plays for Polyvisor's own: the server writes a VM's spec, the estate
// makes the provider match and reports the observed status.
package estate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Factory makes an unconnected provider of a type.
type Factory func(typ string, cfg provider.Config, log *slog.Logger) (provider.Provider, error)

// Credential is a provider's sealed password, stored apart from the
// provider so that no API answer can carry it.
type Credential struct {
	Name    string `json:"name"`
	Sealed  string `json:"sealed"`
	Version int64  `json:"-"`
}

// Config wires a Manager to the server's store.
type Config struct {
	Store       *store.Store
	Providers   *store.Collection[api.Provider]
	Credentials *store.Collection[Credential]
	Hosts       *store.Collection[api.Host]
	VMs         *store.Collection[api.VM]
	Secrets     *secrets.Box
	Factory     Factory
	// Busy tells whether a VM has an operation under way; the mirrored
	// desired state follows out-of-band changes only when it has none.
	Busy           func(vm string) bool
	ResyncInterval time.Duration
	Logger         *slog.Logger
}

// Manager keeps one connection per provider.
type Manager struct {
	cfg Config
	log *slog.Logger

	lead atomic.Pointer[store.Writer] // while the server leads

	mu    sync.Mutex
	conns map[string]*conn // by provider name
	work  map[string]bool  // VMs being converged; true = changed meanwhile
}

// New makes a Manager; Run starts it.
func New(cfg Config) *Manager {
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Busy == nil {
		cfg.Busy = func(string) bool { return false }
	}
	return &Manager{cfg: cfg, log: cfg.Logger, conns: map[string]*conn{}, work: map[string]bool{}}
}

// SecretContext binds a provider's sealed password to the provider.
func SecretContext(provider string) string { return "provider/" + provider }

// providerConfig assembles what a provider needs to connect.
func (m *Manager) providerConfig(p *api.Provider) (provider.Config, error) {
	cfg := provider.Config{
		Name: p.Name, URL: p.Spec.URL, Username: p.Spec.Username,
		CACert: []byte(p.Spec.CACert), Insecure: p.Spec.Insecure,
	}
	if cred, ok := m.cfg.Credentials.Get(p.Name); ok && cred.Sealed != "" {
		pw, err := m.cfg.Secrets.Open(cred.Sealed, SecretContext(p.Name))
		if err != nil {
			return cfg, fmt.Errorf("reading the credentials of provider %q: %w", p.Name, err)
		}
		cfg.Password = pw
	}
	return cfg, nil
}

// Verify connects to a would-be provider and disconnects: adding a
// provider stores nothing unless this succeeds.
func (m *Manager) Verify(ctx context.Context, typ string, cfg provider.Config) (provider.Capabilities, error) {
	p, err := m.cfg.Factory(typ, cfg, m.log)
	if err != nil {
		return provider.Capabilities{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.Connect(ctx); err != nil {
		return provider.Capabilities{}, err
	}
	defer p.Close()
	if _, err := p.Inventory(ctx); err != nil {
		return provider.Capabilities{}, fmt.Errorf("reading the inventory: %w", err)
	}
	return p.Capabilities(), nil
}

// Lead runs the manager while the server leads (see Run), writing
// through w, the leader's fenced writer, until ctx ends (the term does).
func (m *Manager) Lead(ctx context.Context, w store.Writer) {
	m.lead.Store(&w)
	defer m.lead.Store(nil)
	m.Run(ctx)
}

// writer is what the manager writes through: the leader's writer while
// it leads, else the store.
func (m *Manager) writer() store.Writer {
	if w := m.lead.Load(); w != nil {
		return *w
	}
	return m.cfg.Store
}

// write commits one write through the manager's writer.
func (m *Manager) write(ctx context.Context, op store.Op) error {
	_, err := m.writer().Txn(ctx, op)
	return err
}

// Run follows providers and provider VMs until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	provCh := m.cfg.Providers.Subscribe(ctx)
	vmCh := m.cfg.VMs.Subscribe(ctx)
	m.purgeOrphans(ctx)
	for _, p := range listAll(m.cfg.Providers) {
		m.ensure(ctx, p)
	}
	for {
		select {
		case <-ctx.Done():
			m.stopAll()
			return
		case c, ok := <-provCh:
			if !ok {
				m.stopAll()
				return
			}
			if c.Type == store.Delete {
				m.remove(ctx, c.Name)
			} else {
				m.ensure(ctx, c.Obj)
			}
		case c, ok := <-vmCh:
			if !ok {
				m.stopAll()
				return
			}
			if c.Type == store.Put && c.Obj.Spec.Provider != nil && needsWork(c.Obj) {
				m.kick(ctx, c.Obj.Key())
			}
		}
	}
}

// needsWork tells whether a provider VM's spec is ahead of what was done.
func needsWork(vm *api.VM) bool {
	return vm.Spec.Deletion != nil || vm.Status.ObservedGeneration < vm.Generation
}

// ensure starts a provider's connection, or restarts it when how to reach
// the provider changed.
func (m *Manager) ensure(ctx context.Context, p *api.Provider) {
	m.mu.Lock()
	old, ok := m.conns[p.Name]
	if ok && old.spec == p.Spec {
		m.mu.Unlock()
		return
	}
	c := newConn(m, p)
	m.conns[p.Name] = c
	m.mu.Unlock()
	// Stopped outside the lock: a connection may be calling back into the
	// manager as it ends.
	if ok {
		old.stop()
	}
	c.start(ctx)
}

func (m *Manager) conn(name string) (*conn, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.conns[name]
	return c, ok
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	conns := make([]*conn, 0, len(m.conns))
	for _, c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		c.stop()
	}
}

// remove drops a provider's connection and its inventory from Polyvisor.
// Nothing on the hypervisor is touched.
func (m *Manager) remove(ctx context.Context, name string) {
	m.mu.Lock()
	c, ok := m.conns[name]
	delete(m.conns, name)
	m.mu.Unlock()
	if ok {
		c.stop()
	}
	m.purge(ctx, func(ref *api.ProviderRef) bool { return ref.Name == name })
}

// purgeOrphans removes hosts and VMs of providers that no longer exist
// (a removal the server did not finish before it stopped).
func (m *Manager) purgeOrphans(ctx context.Context) {
	m.purge(ctx, func(ref *api.ProviderRef) bool {
		_, ok := m.cfg.Providers.Get(ref.Name)
		return !ok
	})
}

func (m *Manager) purge(ctx context.Context, match func(*api.ProviderRef) bool) {
	for _, vm := range listAll(m.cfg.VMs) {
		if vm.Spec.Provider != nil && match(vm.Spec.Provider) {
			if err := m.write(ctx, m.cfg.VMs.OpDelete(vm.Key(), 0)); err != nil && !errors.Is(err, store.ErrNotFound) {
				m.log.Warn("removing provider vm", "vm", vm.Name, "err", err)
			}
		}
	}
	for _, h := range listAll(m.cfg.Hosts) {
		if h.Provider != nil && match(h.Provider) {
			if err := m.write(ctx, m.cfg.Hosts.OpDelete(h.Name, 0)); err != nil && !errors.Is(err, store.ErrNotFound) {
				m.log.Warn("removing provider host", "host", h.Name, "err", err)
			}
		}
	}
}

// Inventory returns a provider's datacenters, clusters, datastores and
// networks as last synced.
func (m *Manager) Inventory(name string) (*api.ProviderInventory, bool) {
	c, ok := m.conn(name)
	if !ok {
		return nil, false
	}
	return c.inventory(), true
}

func listAll[T any](c *store.Collection[T]) []*T {
	items, _, _ := c.List(store.ListOptions[T]{})
	return items
}

// Refresh resyncs a connected provider now.
func (m *Manager) Refresh(ctx context.Context, name string) error {
	c, ok := m.conn(name)
	if !ok {
		return fmt.Errorf("provider %q is not running: %w", name, provider.ErrNotFound)
	}
	p := c.provider()
	if p == nil {
		return fmt.Errorf("provider %q is disconnected: %w", name, provider.ErrUnreachable)
	}
	return c.fullSync(ctx, p)
}
