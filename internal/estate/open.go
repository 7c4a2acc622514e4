package estate

import (
	"context"
	"fmt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Open makes a connection of its own to the provider called name, with
// its binding's credentials, for work that must not share the mirror's
// (a migration reading a VM's disks). The caller closes it.
func (m *Manager) Open(ctx context.Context, name string) (provider.Provider, error) {
	p, ok := m.cfg.Providers.Get(name)
	if !ok {
		return nil, fmt.Errorf("provider %q: %w", name, provider.ErrNotFound)
	}
	cfg, err := m.providerConfig(p)
	if err != nil {
		return nil, err
	}
	pv, err := m.cfg.Factory(p.Spec.Type, cfg, m.log.With("provider", name, "for", "migration"))
	if err != nil {
		return nil, err
	}
	if err := pv.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connecting to provider %q: %w", name, err)
	}
	return pv, nil
}
