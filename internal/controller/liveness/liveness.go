// Package liveness notices hosts whose agent stopped heartbeating.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Monitor notices hosts whose agent stopped heartbeating and marks them
// not ready (and ready again when heartbeats resume, which the agent API
// does). Heartbeats are kept in memory; after a start every host gets a
// full timeout before it is judged.
type Monitor struct {
	w       store.Writer
	hosts   *store.Collection[api.Host]
	vms     *store.Collection[api.VM]
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	last    map[string]time.Time
	started time.Time
}

// Config is what a monitor works on.
type Config struct {
	Writer store.Writer
	Hosts  *store.Collection[api.Host]
	VMs    *store.Collection[api.VM]
	// Timeout is how long a host may be silent before it is not ready.
	Timeout time.Duration
	Logger  *slog.Logger
}

// New makes a monitor; Run starts it.
func New(cfg Config) *Monitor {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Monitor{w: cfg.Writer, hosts: cfg.Hosts, vms: cfg.VMs, timeout: cfg.Timeout, log: cfg.Logger,
		last: map[string]time.Time{}, started: time.Now()}
}

// Beat records a heartbeat of host at t.
func (l *Monitor) Beat(host string, t time.Time) {
	l.mu.Lock()
	l.last[host] = t
	l.mu.Unlock()
}

// Run checks the hosts every second until ctx ends.
func (l *Monitor) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			l.Check(ctx, now)
		}
	}
}

// maxWriteRetries bounds how often a controller writes an object again
// after losing a race to another writer.
const maxWriteRetries = 10

// Check marks the hosts silent for longer than the timeout not ready, then
// makes sure every VM on a host of Polyvisor's that is not ready shows
// unknown. That second step looks at every such VM each round, not only
// at those of a host that just went silent, so a write that lost a race
// with another writer (a report, an operation) is made again.
func (l *Monitor) Check(ctx context.Context, now time.Time) {
	// A provider's hosts have no agent: their state comes from the provider.
	for _, h := range l.hosts.Select(func(h *api.Host) bool { return h.Provider == nil && h.Status.State != api.HostNotReady }) {
		if _, silent := l.silent(h.Name, now); !silent {
			continue
		}
		if err := l.markNotReady(ctx, h.Name, now); err != nil && ctx.Err() == nil {
			l.log.Warn("marking host not ready", "host", h.Name, "err", err)
		}
	}
	l.MarkVMsUnknown(ctx)
}

// silent tells whether host has not heartbeaten for the timeout at now,
// and since when.
func (l *Monitor) silent(host string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	last, ok := l.last[host]
	l.mu.Unlock()
	if !ok {
		last = l.started
	}
	return last, now.Sub(last) >= l.timeout
}

// markNotReady marks a silent host not ready. When another write got to
// the host first it reads the host again: a heartbeat in between keeps
// it ready.
func (l *Monitor) markNotReady(ctx context.Context, name string, now time.Time) error {
	for range maxWriteRetries {
		h, ok := l.hosts.Get(name)
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
		_, err := l.w.Txn(ctx, l.hosts.OpUpdate(name, next, h.Version))
		switch {
		case err == nil:
			l.log.Warn("host stopped heartbeating", "host", name, "last", last)
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
func (l *Monitor) lostHost(name string) bool {
	h, ok := l.hosts.Get(name)
	return ok && h.Provider == nil && h.Status.State == api.HostNotReady
}

// MarkVMsUnknown records that nobody knows the state of the VMs on lost
// hosts.
func (l *Monitor) MarkVMsUnknown(ctx context.Context) {
	lost := l.hosts.Select(func(h *api.Host) bool { return h.Provider == nil && h.Status.State == api.HostNotReady })
	if len(lost) == 0 {
		return
	}
	onLost := make(map[string]bool, len(lost))
	for _, h := range lost {
		onLost[h.Name] = true
	}
	for _, vm := range l.vms.Select(func(vm *api.VM) bool { return onLost[vm.Spec.Host] && vm.Status.PowerState != api.PowerUnknown }) {
		if err := l.markVMUnknown(ctx, vm.Key()); err != nil && ctx.Err() == nil {
			l.log.Warn("marking vm unknown", "vm", vm.Name, "project", vm.Project, "err", err)
		}
	}
}

// markVMUnknown marks one VM unknown, reading it again when another write
// got there first. The host is read after the VM: a host back to ready
// before the VM's newest report is seen as such, and the report kept.
func (l *Monitor) markVMUnknown(ctx context.Context, key string) error {
	for range maxWriteRetries {
		vm, ok := l.vms.Get(key)
		if !ok || vm.Status.PowerState == api.PowerUnknown || !l.lostHost(vm.Spec.Host) {
			return nil
		}
		next := store.Clone(vm)
		next.Status.PowerState = api.PowerUnknown
		next.Status.Reason = "host " + vm.Spec.Host + " is not ready"
		_, err := l.w.Txn(ctx, l.vms.OpUpdate(key, next, vm.Version))
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("updating vm %q: %w", key, err)
		}
	}
	return fmt.Errorf("updating vm %q: it kept changing (%w)", key, store.ErrConflict)
}
