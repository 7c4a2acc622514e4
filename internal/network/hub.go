package network

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Hub computes the network state of every host from the store and hands
// it to the host's watchers whenever it changes: after a burst of changes
// settles (Config.Settle), and at least every Config.MaxDelay while they
// keep coming.
type Hub struct {
	m *Manager

	compute sync.Mutex // one computation at a time, so revisions only grow
	mu      sync.Mutex
	states  map[string]*hostState
	watches map[string]map[*watch]struct{}
	ready   chan struct{} // closed once the first states are computed
	once    sync.Once
	kicks   int // recomputes done, for tests
}

// hostState is a host's latest state and its encoding without revision.
type hostState struct {
	state *api.HostNetworkState
	body  []byte
}

// watch is one watcher of a host: the latest state not yet taken.
type watch struct {
	ch chan *api.HostNetworkState // capacity 1: the newest state wins
}

// NewHub returns the hub of m's objects; Run computes and delivers.
func (m *Manager) NewHub() *Hub {
	return &Hub{m: m, states: map[string]*hostState{}, watches: map[string]map[*watch]struct{}{}, ready: make(chan struct{})}
}

// Run follows the store until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	cfg := h.m.cfg
	// Subscribe before the first computation, so no change falls between.
	follow(ctx, cfg.Networks.Subscribe(ctx), signal, nil)
	follow(ctx, cfg.Subnets.Subscribe(ctx), signal, nil)
	follow(ctx, cfg.Ports.Subscribe(ctx), signal, func(c store.Change[api.Port]) bool {
		return c.Prev == nil || c.Type == store.Delete || !reflect.DeepEqual(c.Prev.Spec, c.Obj.Spec)
	})
	follow(ctx, cfg.SecurityGroups.Subscribe(ctx), signal, nil)
	follow(ctx, cfg.FloatingIPs.Subscribe(ctx), signal, nil)
	follow(ctx, cfg.VMs.Subscribe(ctx), signal, func(c store.Change[api.VM]) bool {
		if !Networked(c.Obj.Spec.NICs) && (c.Prev == nil || !Networked(c.Prev.Spec.NICs)) {
			return false
		}
		return c.Prev == nil || c.Type == store.Delete || c.Prev.Spec.Host != c.Obj.Spec.Host ||
			!reflect.DeepEqual(c.Prev.Spec.NICs, c.Obj.Spec.NICs)
	})
	follow(ctx, cfg.Hosts.Subscribe(ctx), signal, func(c store.Change[api.Host]) bool {
		return c.Prev == nil || c.Type == store.Delete || c.Prev.Status.Address != c.Obj.Status.Address ||
			(c.Prev.Provider == nil) != (c.Obj.Provider == nil)
	})
	h.recompute()

	var timer *time.Timer
	var first time.Time
	fire := make(<-chan time.Time)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-kick:
			now := time.Now()
			if timer == nil {
				first = now
				timer = time.NewTimer(cfg.Settle)
			} else {
				timer.Stop()
				timer.Reset(max(0, min(cfg.Settle, cfg.MaxDelay-now.Sub(first))))
			}
			fire = timer.C
		case <-fire:
			timer, fire = nil, make(<-chan time.Time)
			h.recompute()
		}
	}
}

// follow calls signal for every change on ch that relevant accepts (all
// when nil), until ch closes.
func follow[T any](ctx context.Context, ch <-chan store.Change[T], signal func(), relevant func(store.Change[T]) bool) {
	go func() {
		for c := range ch {
			if relevant == nil || relevant(c) {
				signal()
			}
		}
	}()
}

// recompute computes every host's state and delivers those that changed.
func (h *Hub) recompute() {
	h.compute.Lock()
	defer h.compute.Unlock()
	states := computeStates(h.m.snapshot())
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.once.Do(func() { close(h.ready) })
	h.kicks++
	for host, st := range states {
		body := encodeState(st)
		if cur, ok := h.states[host]; ok && bytes.Equal(cur.body, body) {
			continue
		}
		h.states[host] = &hostState{state: st, body: body}
		for w := range h.watches[host] {
			w.offer(st)
		}
	}
	for host := range h.states {
		if _, ok := states[host]; !ok {
			// The host is gone: its watchers end with it.
			delete(h.states, host)
		}
	}
}

// encodeState is a state's encoding without its revision, to compare.
func encodeState(st *api.HostNetworkState) []byte {
	c := *st
	c.Revision = 0
	b, _ := json.Marshal(&c)
	return b
}

func (w *watch) offer(st *api.HostNetworkState) {
	select {
	case <-w.ch: // drop the older state not yet taken
	default:
	}
	w.ch <- st
}

// Watch returns a channel that delivers the host's state as soon as it is
// known, then each changed state; a state not taken before the next is
// replaced by it. stop ends the watch.
func (h *Hub) Watch(host string) (states <-chan *api.HostNetworkState, stop func()) {
	w := &watch{ch: make(chan *api.HostNetworkState, 1)}
	h.mu.Lock()
	if h.watches[host] == nil {
		h.watches[host] = map[*watch]struct{}{}
	}
	h.watches[host][w] = struct{}{}
	if cur, ok := h.states[host]; ok {
		w.offer(cur.state)
	}
	h.mu.Unlock()
	return w.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watches[host], w)
		if len(h.watches[host]) == 0 {
			delete(h.watches, host)
		}
	}
}

// State returns the host's latest state, waiting for the first
// computation (or ctx).
func (h *Hub) State(ctx context.Context, host string) (*api.HostNetworkState, bool) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cur, ok := h.states[host]
	if !ok {
		return nil, false
	}
	return cur.state, true
}

// Recompute computes the states now (tests, and a caller that must not
// wait for the next settle).
func (h *Hub) Recompute() { h.recompute() }
