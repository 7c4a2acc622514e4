// Package liveness notices hosts whose agent stopped heartbeating.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Monitor notices hosts whose agent stopped heartbeating and marks them
// not ready (and ready again when heartbeats resume, which the agent API
// does). It judges only while its server leads (Lead). A server keeps the
// heartbeats it receives in memory and shares them through the store
// (Share: one record per server, written a few times per timeout, not one
// write per heartbeat), so the leader judges a host by the newest
// heartbeat any server received. When a term begins every host gets a
// full timeout before it is judged.
type Monitor struct {
	w       store.Writer // the API's, for MarkVMsUnknown and Share
	lead    atomic.Pointer[store.Writer]
	hosts   *store.Collection[api.Host]
	vms     *store.Collection[api.VM]
	vmsOn   *store.Partition[api.VM]
	beats   *store.Collection[Beats]
	self    string
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	last    map[string]time.Time
	fresh   bool // a heartbeat since the last Share
	started time.Time
}

// Beats is the heartbeats one server received lately, shared with the
// leader through the store.
type Beats struct {
	// Server is the id of the server that received them.
	Server  string `json:"server"`
	Version int64  `json:"-"`
	// Hosts maps each host heard from lately to the time of its last
	// heartbeat, in Unix milliseconds.
	Hosts     map[string]int64 `json:"hosts"`
	UpdatedAt time.Time        `json:"updatedAt"`
}

// Config is what a monitor works on.
type Config struct {
	// Writer is what MarkVMsUnknown writes through, called for a request.
	Writer store.Writer
	Hosts  *store.Collection[api.Host]
	VMs    *store.Collection[api.VM]
	// VMsOn, when set, holds the VMs by the hosts they concern: the VMs
	// of lost hosts are read from it rather than from every VM.
	VMsOn *store.Partition[api.VM]
	// Beats holds the heartbeats each server shares, under its ID; nil
	// shares none.
	Beats *store.Collection[Beats]
	ID    string
	// Timeout is how long a host may be silent before it is not ready.
	Timeout time.Duration
	Logger  *slog.Logger
}

// New makes a monitor; Run starts it.
func New(cfg Config) *Monitor {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Monitor{w: cfg.Writer, hosts: cfg.Hosts, vms: cfg.VMs, vmsOn: cfg.VMsOn, beats: cfg.Beats, self: cfg.ID, timeout: cfg.Timeout, log: cfg.Logger,
		last: map[string]time.Time{}, started: time.Now()}
}

// Beat records a heartbeat of host at t.
func (l *Monitor) Beat(host string, t time.Time) {
	l.mu.Lock()
	l.last[host] = t
	l.fresh = true
	l.mu.Unlock()
}

// SharePeriod is how often a server shares the heartbeats it received,
// for a heartbeat timeout: a third of it, at least 100ms.
func SharePeriod(timeout time.Duration) time.Duration {
	return max(timeout/3, 100*time.Millisecond)
}

// Share writes the heartbeats this server received lately to its record
// in the store, a few times per timeout, until ctx ends; every server
// runs it, whoever leads.
func (l *Monitor) Share(ctx context.Context) {
	if l.beats == nil || l.self == "" {
		return
	}
	tick := time.NewTicker(SharePeriod(l.timeout))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if err := l.share(ctx, now); err != nil && ctx.Err() == nil {
				l.log.Warn("sharing heartbeats", "err", err)
			}
		}
	}
}

func (l *Monitor) share(ctx context.Context, now time.Time) error {
	l.mu.Lock()
	if !l.fresh {
		l.mu.Unlock()
		return nil
	}
	l.fresh = false
	hosts := make(map[string]int64, len(l.last))
	for h, t := range l.last {
		if now.Sub(t) < 2*l.timeout {
			hosts[h] = t.UnixMilli()
		}
	}
	l.mu.Unlock()
	rec := &Beats{Server: l.self, Hosts: hosts, UpdatedAt: now.UTC()}
	op := l.beats.OpCreate(l.self, rec)
	if _, ok := l.beats.Get(l.self); ok {
		op = l.beats.OpUpdate(l.self, rec, 0) // only this server writes it
	}
	if _, err := l.w.Txn(ctx, op); err != nil {
		l.mu.Lock()
		l.fresh = true // again next round
		l.mu.Unlock()
		return fmt.Errorf("writing the heartbeats of server %s: %w", l.self, err)
	}
	return nil
}

// shared is the newest heartbeat of each host that the other servers
// shared.
func (l *Monitor) shared() map[string]time.Time {
	out := map[string]time.Time{}
	if l.beats == nil {
		return out
	}
	for _, b := range l.beats.Select(func(b *Beats) bool { return b.Server != l.self }) {
		for h, ms := range b.Hosts {
			if t := time.UnixMilli(ms); t.After(out[h]) {
				out[h] = t
			}
		}
	}
	return out
}

// Lead checks the hosts every second until ctx ends (the term does),
// writing through w, the leader's fenced writer.
func (l *Monitor) Lead(ctx context.Context, w store.Writer) {
	l.mu.Lock()
	l.started = time.Now()
	l.mu.Unlock()
	l.lead.Store(&w)
	defer l.lead.Store(nil)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			l.check(ctx, w, now)
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
	if w := l.lead.Load(); w != nil {
		l.check(ctx, *w, now)
	}
}

func (l *Monitor) check(ctx context.Context, w store.Writer, now time.Time) {
	shared := l.shared()
	// A provider's hosts have no agent: their state comes from the provider.
	for _, h := range l.hosts.Select(func(h *api.Host) bool { return h.Provider == nil && h.Status.State != api.HostNotReady }) {
		if _, silent := l.silent(h, now, shared); !silent {
			continue
		}
		if err := l.markNotReady(ctx, w, h.Name, now, shared); err != nil && ctx.Err() == nil {
			l.log.Warn("marking host not ready", "host", h.Name, "err", err)
		}
	}
	l.markVMsUnknown(ctx, w)
}

// silent tells whether host has not heartbeaten for the timeout at now,
// and since when: since its last heartbeat here or at another server (as
// shared, or as its record holds: a host that registered through another
// server a moment ago may be in neither yet), or since the term began.
func (l *Monitor) silent(h *api.Host, now time.Time, shared map[string]time.Time) (time.Time, bool) {
	l.mu.Lock()
	last := l.last[h.Name]
	if t := shared[h.Name]; t.After(last) {
		last = t
	}
	if t := h.Status.LastHeartbeat; t.After(last) {
		last = t
	}
	if last.Before(l.started) {
		last = l.started
	}
	l.mu.Unlock()
	return last, now.Sub(last) >= l.timeout
}

// LastHeard is the newest heartbeat of host that this server knows of:
// received here, shared by another server or in its record, and not
// before this server's term began.
func (l *Monitor) LastHeard(h *api.Host) time.Time {
	last, _ := l.silent(h, time.Now(), l.shared())
	return last
}

// markNotReady marks a silent host not ready. When another write got to
// the host first it reads the host again: a heartbeat in between keeps
// it ready.
func (l *Monitor) markNotReady(ctx context.Context, w store.Writer, name string, now time.Time, shared map[string]time.Time) error {
	for range maxWriteRetries {
		h, ok := l.hosts.Get(name)
		if !ok || h.Provider != nil || h.Status.State == api.HostNotReady {
			return nil
		}
		last, silent := l.silent(h, now, shared)
		if !silent {
			return nil
		}
		next := store.Clone(h)
		next.Status.State = api.HostNotReady
		next.UpdatedAt = now.UTC()
		_, err := w.Txn(ctx, l.hosts.OpUpdate(name, next, h.Version))
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
func (l *Monitor) MarkVMsUnknown(ctx context.Context) { l.markVMsUnknown(ctx, l.w) }

func (l *Monitor) markVMsUnknown(ctx context.Context, w store.Writer) {
	lost := l.hosts.Select(func(h *api.Host) bool { return h.Provider == nil && h.Status.State == api.HostNotReady })
	if len(lost) == 0 {
		return
	}
	onLost := make(map[string]bool, len(lost))
	for _, h := range lost {
		onLost[h.Name] = true
	}
	var vms []*api.VM
	if l.vmsOn != nil {
		for _, h := range lost {
			for _, vm := range l.vmsOn.List(h.Name) {
				if vm.Spec.Host == h.Name && vm.Status.PowerState != api.PowerUnknown {
					vms = append(vms, vm)
				}
			}
		}
	} else {
		vms = l.vms.Select(func(vm *api.VM) bool { return onLost[vm.Spec.Host] && vm.Status.PowerState != api.PowerUnknown })
	}
	for _, vm := range vms {
		if err := l.markVMUnknown(ctx, w, vm.Key()); err != nil && ctx.Err() == nil {
			l.log.Warn("marking vm unknown", "vm", vm.Name, "project", vm.Project, "err", err)
		}
	}
}

// markVMUnknown marks one VM unknown, reading it again when another write
// got there first. The host is read after the VM: a host back to ready
// before the VM's newest report is seen as such, and the report kept.
func (l *Monitor) markVMUnknown(ctx context.Context, w store.Writer, key string) error {
	for range maxWriteRetries {
		vm, ok := l.vms.Get(key)
		if !ok || vm.Status.PowerState == api.PowerUnknown || !l.lostHost(vm.Spec.Host) {
			return nil
		}
		next := store.Clone(vm)
		next.Status.PowerState = api.PowerUnknown
		next.Status.Reason = "host " + vm.Spec.Host + " is not ready"
		_, err := w.Txn(ctx, l.vms.OpUpdate(key, next, vm.Version))
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("updating vm %q: %w", key, err)
		}
	}
	return fmt.Errorf("updating vm %q: it kept changing (%w)", key, store.ErrConflict)
}
