package network

import (
	"context"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// janitorGrace is how long a port may name a VM that does not name it
// back before the janitor frees it: the VM's own write and the port's are
// one transaction, so only a VM removed without its ports (by a path that
// did not free them) leaves one behind.
const janitorGrace = 30 * time.Second

// RunJanitor frees what removed VMs and ports left behind, at start, after
// each VM removal (once the grace has passed) and every minute: ports of
// VMs that are gone (deleted if made for the VM, released otherwise), and
// floating IPs mapped to ports that are gone. It runs on the leader, each
// write through w (fenced by the leader's term) and checked against the
// version it read.
func (m *Manager) RunJanitor(ctx context.Context, w store.Writer) {
	vms := m.cfg.VMs.Subscribe(ctx)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	m.sweep(ctx, w, time.Now().Add(-janitorGrace))
	var later <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-vms:
			if !ok {
				return
			}
			if c.Type == store.Delete && Networked(c.Obj.Spec.NICs) && later == nil {
				later = time.After(janitorGrace)
			}
		case <-later:
			later = nil
			m.sweep(ctx, w, time.Now().Add(-janitorGrace))
		case <-tick.C:
			m.sweep(ctx, w, time.Now().Add(-janitorGrace))
		}
	}
}

// sweep frees what is left behind by objects gone before cutoff.
func (m *Manager) sweep(ctx context.Context, w store.Writer, cutoff time.Time) {
	for _, p := range listAll(m.cfg.Ports, func(p *api.Port) bool { return p.Spec.VM != "" && p.UpdatedAt.Before(cutoff) }) {
		if _, ok := m.usedBy(p); ok {
			continue
		}
		if _, err := w.Txn(ctx, m.releaseOps(p)...); err != nil && !lost(err) && ctx.Err() == nil {
			m.log.Warn("freeing the port of a removed vm", "port", p.Key(), "vm", p.Spec.VM, "err", err)
		} else if err == nil {
			m.log.Info("freed the port of a removed vm", "port", p.Key(), "vm", p.Spec.VM)
		}
	}
	for _, f := range listAll(m.cfg.FloatingIPs, func(f *api.FloatingIP) bool { return f.Spec.Port != "" && f.UpdatedAt.Before(cutoff) }) {
		if _, ok := m.cfg.Ports.Get(api.Key(f.Project, f.Spec.Port)); ok {
			continue
		}
		next := store.Clone(f)
		next.Spec.Port = ""
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		ops := append(m.unmapClaimOps(f), m.cfg.FloatingIPs.OpUpdate(f.Key(), next, f.Version))
		if _, err := w.Txn(ctx, ops...); err != nil && !lost(err) && ctx.Err() == nil {
			m.log.Warn("unmapping the floating IP of a removed port", "floating_ip", f.Key(), "err", err)
		}
	}
}
