package estate

import "github.com/polyvisor/polyvisor/internal/provider"

// Connected returns the providers connected now, by name: for reading
// their usage beside the mirror (the connection is the mirror's; a call
// on it must not close it).
func (m *Manager) Connected() map[string]provider.Provider {
	m.mu.Lock()
	conns := make([]*conn, 0, len(m.conns))
	for _, c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	out := make(map[string]provider.Provider, len(conns))
	for _, c := range conns {
		if p := c.provider(); p != nil {
			out[c.name] = p
		}
	}
	return out
}
