package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// liveness notices hosts whose agent stopped heartbeating and marks them
// not ready (and ready again when heartbeats resume, which upsertHost
// does). Heartbeats are kept in memory; after a server start every host
// gets a full timeout before it is judged.
type liveness struct {
	s       *Server
	mu      sync.Mutex
	last    map[string]time.Time
	started time.Time
}

func newLiveness(s *Server) *liveness {
	return &liveness{s: s, last: map[string]time.Time{}, started: time.Now()}
}

func (l *liveness) beat(host string, t time.Time) {
	l.mu.Lock()
	l.last[host] = t
	l.mu.Unlock()
}

func (l *liveness) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			l.check(ctx, now)
		}
	}
}

func (l *liveness) check(ctx context.Context, now time.Time) {
	timeout := l.s.cfg.HeartbeatTimeout
	// A provider's hosts have no agent: their state comes from the provider.
	for _, h := range listAll(l.s.hosts, func(h *api.Host) bool { return h.Provider == nil && h.Status.State != api.HostNotReady }) {
		l.mu.Lock()
		last, ok := l.last[h.Name]
		l.mu.Unlock()
		if !ok {
			last = l.started
		}
		if now.Sub(last) < timeout {
			continue
		}
		next := store.Clone(h)
		next.Status.State = api.HostNotReady
		next.UpdatedAt = now.UTC()
		if _, err := l.s.hosts.Update(ctx, h.Name, next, h.Version); err != nil && !errors.Is(err, store.ErrConflict) {
			l.s.log.Warn("marking host not ready", "host", h.Name, "err", err)
			continue
		}
		l.s.log.Warn("host stopped heartbeating", "host", h.Name, "last", last)
		l.markVMsUnknown(ctx, h.Name)
	}
}

// markVMsUnknown records that nobody knows the state of a lost host's VMs.
func (l *liveness) markVMsUnknown(ctx context.Context, host string) {
	for _, vm := range listAll(l.s.vms, func(vm *api.VM) bool { return vm.Spec.Host == host }) {
		next := store.Clone(vm)
		next.Status.PowerState = api.PowerUnknown
		next.Status.Reason = "host " + host + " is not ready"
		if _, err := l.s.vms.Update(ctx, vm.Key(), next, vm.Version); err != nil && !errors.Is(err, store.ErrConflict) {
			l.s.log.Warn("marking vm unknown", "vm", vm.Name, "err", err)
		}
	}
}
