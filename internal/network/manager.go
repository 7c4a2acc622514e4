package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Reader is what the network code reads of a store collection.
type Reader[T any] interface {
	Kind() string
	Get(name string) (*T, bool)
	List(opts store.ListOptions[T]) ([]*T, string, error)
	Subscribe(ctx context.Context) <-chan store.Change[T]
}

// Collection is a store collection the network code also writes, in
// transactions.
type Collection[T any] interface {
	Reader[T]
	OpCreate(name string, obj *T) store.Op
	OpUpdate(name string, obj *T, expectVersion int64) store.Op
	OpDelete(name string, expectVersion int64) store.Op
	OpCheck(name string, expectVersion int64) store.Op
	OpNoneUnder(prefix string) store.Op
}

// Store runs transactions and says which revision the index reflects.
type Store interface {
	Txn(ctx context.Context, ops ...store.Op) (int64, error)
	Rev() int64
}

// Config is what a Manager works over.
type Config struct {
	Store          Store
	Networks       Collection[api.Network]
	Subnets        Collection[api.Subnet]
	Ports          Collection[api.Port]
	SecurityGroups Collection[api.SecurityGroup]
	FloatingIPs    Collection[api.FloatingIP]
	Claims         Collection[Claim]
	// VMs, Hosts and Projects are read: where ports live, the hosts'
	// underlay addresses, the projects.
	VMs      Reader[api.VM]
	Hosts    Reader[api.Host]
	Projects Reader[api.Project]
	// Admit checks what a create adds against its project's quota and
	// returns the conditions its transaction carries, so that the check
	// and the write are one step in etcd (the quota gate's Admit, which
	// counts the project's network objects through Counted). Nil admits
	// anything.
	Admit  func(ctx context.Context, project string, delta api.Usage) ([]store.Op, error)
	Logger *slog.Logger
	// Settle is how long the hub waits after a change for more before it
	// recomputes the hosts' states (default 50ms); it recomputes at least
	// every MaxDelay (default 250ms) while changes keep coming.
	Settle, MaxDelay time.Duration
}

// Manager makes, changes and deletes the network objects, allocating what
// they hold; the Hub delivers their state to the hosts.
type Manager struct {
	cfg Config
	log *slog.Logger

	// trying holds the addresses this process is trying to claim, by
	// subnet UID: concurrent creates pick others while any is free. It
	// only spreads the attempts; the claims decide.
	tryMu  sync.Mutex
	trying map[string]map[netip.Addr]int
}

// New returns a Manager over cfg.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Settle == 0 {
		cfg.Settle = 50 * time.Millisecond
	}
	if cfg.MaxDelay == 0 {
		cfg.MaxDelay = 250 * time.Millisecond
	}
	return &Manager{cfg: cfg, log: cfg.Logger, trying: map[string]map[netip.Addr]int{}}
}

// listAll lists every object of c that keep accepts.
func listAll[T any](c Reader[T], keep func(*T) bool) []*T {
	items, _, _ := c.List(store.ListOptions[T]{Filter: keep})
	return items
}

// maxAttempts bounds the retries of a write that lost a race.
const maxAttempts = 40

// retryPause is how long a write that lost a race waits before it reads
// the index again (another server's write may not be in it yet).
func retryPause(attempt int) time.Duration {
	return time.Duration(min(attempt, 10)) * 5 * time.Millisecond
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keyErr returns the store's KeyError in err, if any.
func keyErr(err error) (*store.KeyError, bool) {
	var ke *store.KeyError
	ok := errors.As(err, &ke)
	return ke, ok
}

// lost tells whether err is a precondition of a transaction that failed:
// the write lost a race and may be tried again from a fresh read.
func lost(err error) bool {
	_, ok := keyErr(err)
	return ok
}

// taken is the 409 of a unique thing another object holds.
func taken(field, format string, args ...any) *api.Error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &api.Error{Code: api.CodeConflict, Field: field, Message: msg}
}

// Usage counts a project's networks, ports and floating IPs.
func (m *Manager) Usage(project string) (networks, ports, floatingIPs int64) {
	inProject := func(meta *api.Meta) bool { return meta.Project == project }
	networks = int64(len(listAll(m.cfg.Networks, func(n *api.Network) bool { return inProject(&n.Meta) })))
	ports = int64(len(listAll(m.cfg.Ports, func(p *api.Port) bool { return inProject(&p.Meta) })))
	floatingIPs = int64(len(listAll(m.cfg.FloatingIPs, func(f *api.FloatingIP) bool { return inProject(&f.Meta) })))
	return networks, ports, floatingIPs
}

// Counted is a project's network objects as quota usage: what the quota
// gate adds to the usage it decides from.
func (m *Manager) Counted(project string) api.Usage {
	var u api.Usage
	u.Networks, u.Ports, u.FloatingIPs = m.Usage(project)
	return u
}

// admit checks delta against the project's quota and returns the
// conditions the admitted write's transaction carries (Config.Admit).
func (m *Manager) admit(ctx context.Context, project string, delta api.Usage) ([]store.Op, error) {
	if m.cfg.Admit == nil {
		if _, ok := m.cfg.Projects.Get(project); !ok {
			return nil, api.NotFound("project", project)
		}
		return nil, nil
	}
	return m.cfg.Admit(ctx, project, delta)
}

// try marks addresses as being tried by this process; the returned func
// unmarks them.
func (m *Manager) try(subnetUID string, a netip.Addr) func() {
	m.tryMu.Lock()
	defer m.tryMu.Unlock()
	if m.trying[subnetUID] == nil {
		m.trying[subnetUID] = map[netip.Addr]int{}
	}
	m.trying[subnetUID][a]++
	return func() {
		m.tryMu.Lock()
		defer m.tryMu.Unlock()
		if m.trying[subnetUID][a]--; m.trying[subnetUID][a] <= 0 {
			delete(m.trying[subnetUID], a)
		}
		if len(m.trying[subnetUID]) == 0 {
			delete(m.trying, subnetUID)
		}
	}
}

// avoided is a copy of the addresses this process is trying in a subnet.
func (m *Manager) avoided(subnetUID string) map[netip.Addr]bool {
	m.tryMu.Lock()
	defer m.tryMu.Unlock()
	out := make(map[netip.Addr]bool, len(m.trying[subnetUID]))
	for a := range m.trying[subnetUID] {
		out[a] = true
	}
	return out
}
