package server

import (
	"context"
	"errors"
	"fmt"
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

// maxWriteRetries bounds how often a controller writes an object again
// after losing a race to another writer.
const maxWriteRetries = 10

// check marks the hosts silent for longer than the timeout not ready, then
// makes sure every VM on a host of Polyvisor's that is not ready shows
// unknown. That second step looks at every such VM each round, not only
// at those of a host that just went silent, so a write that lost a race
// with another writer (a report, an operation) is made again.
func (l *liveness) check(ctx context.Context, now time.Time) {
	// A provider's hosts have no agent: their state comes from the provider.
	for _, h := range listAll(l.s.hosts, func(h *api.Host) bool { return h.Provider == nil && h.Status.State != api.HostNotReady }) {
		if _, silent := l.silent(h.Name, now); !silent {
			continue
		}
		if err := l.markNotReady(ctx, h.Name, now); err != nil && ctx.Err() == nil {
			l.s.log.Warn("marking host not ready", "host", h.Name, "err", err)
		}
	}
	l.markVMsUnknown(ctx)
}

// silent tells whether host has not heartbeaten for the timeout at now,
// and since when.
func (l *liveness) silent(host string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	last, ok := l.last[host]
	l.mu.Unlock()
	if !ok {
		last = l.started
	}
	return last, now.Sub(last) >= l.s.cfg.HeartbeatTimeout
}

// markNotReady marks a silent host not ready. When another write got to
// the host first it reads the host again: a heartbeat in between keeps
// it ready.
func (l *liveness) markNotReady(ctx context.Context, name string, now time.Time) error {
	for range maxWriteRetries {
		h, ok := l.s.hosts.Get(name)
		if !ok || h.Provider != nil || h.Status.State == api.HostNotReady {
			return nil
		}
		last, silent := l.silent(name, now)
		if !silent {
			return nil
		}
		next := store.Clone(h)
		next.Status.State = api.HostNotReady
		next.UpdatedAt = now.UTC()
		_, err := l.s.hosts.Update(ctx, name, next, h.Version)
		switch {
		case err == nil:
			l.s.log.Warn("host stopped heartbeating", "host", name, "last", last)
			return nil
		case errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("updating host %q: %w", name, err)
		}
	}
	return fmt.Errorf("updating host %q: it kept changing (%w)", name, store.ErrConflict)
}

// lostHost tells whether a VM's host is one of Polyvisor's hosts and is
// not ready.
func (l *liveness) lostHost(name string) bool {
	h, ok := l.s.hosts.Get(name)
	return ok && h.Provider == nil && h.Status.State == api.HostNotReady
}

// markVMsUnknown records that nobody knows the state of the VMs on lost
// hosts.
func (l *liveness) markVMsUnknown(ctx context.Context) {
	lost := listAll(l.s.hosts, func(h *api.Host) bool { return h.Provider == nil && h.Status.State == api.HostNotReady })
	if len(lost) == 0 {
		return
	}
	onLost := make(map[string]bool, len(lost))
	for _, h := range lost {
		onLost[h.Name] = true
	}
	for _, vm := range listAll(l.s.vms, func(vm *api.VM) bool { return onLost[vm.Spec.Host] && vm.Status.PowerState != api.PowerUnknown }) {
		if err := l.markVMUnknown(ctx, vm.Key()); err != nil && ctx.Err() == nil {
			l.s.log.Warn("marking vm unknown", "vm", vm.Name, "project", vm.Project, "err", err)
		}
	}
}

// markVMUnknown marks one VM unknown, reading it again when another write
// got there first. The host is read after the VM: a host back to ready
// before the VM's newest report is seen as such, and the report kept.
func (l *liveness) markVMUnknown(ctx context.Context, key string) error {
	for range maxWriteRetries {
		vm, ok := l.s.vms.Get(key)
		if !ok || vm.Status.PowerState == api.PowerUnknown || !l.lostHost(vm.Spec.Host) {
			return nil
		}
		next := store.Clone(vm)
		next.Status.PowerState = api.PowerUnknown
		next.Status.Reason = "host " + vm.Spec.Host + " is not ready"
		_, err := l.s.vms.Update(ctx, key, next, vm.Version)
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("updating vm %q: %w", key, err)
		}
	}
	return fmt.Errorf("updating vm %q: it kept changing (%w)", key, store.ErrConflict)
}
