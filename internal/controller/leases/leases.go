// Package leases acts on VM leases: it stops a VM whose lease expired and
// deletes it after the grace period, through ordinary operations.
package leases

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Submitter queues VM operations (ops.Controller.SubmitWith).
type Submitter interface {
	SubmitWith(ctx context.Context, key, kind string, params any, o ops.SubmitOptions) (*api.Operation, bool, error)
}

// Audit records what the expirer did, as the system, to a VM.
type Audit func(ctx context.Context, action string, target api.Ref, opID, outcome, msg string)

// Config is what an expirer works on.
type Config struct {
	VMs   *store.Collection[api.VM]
	Ops   Submitter
	Audit Audit
	// Interval is how often leases are checked.
	Interval time.Duration
	Logger   *slog.Logger
}

// Expirer stops VMs whose lease expired and deletes them after the grace
// period, both as operations with audit records.
type Expirer struct {
	lead     atomic.Pointer[store.Writer] // while this server leads
	vms      *store.Collection[api.VM]
	ops      Submitter
	audit    Audit
	interval time.Duration
	log      *slog.Logger
}

// New makes an expirer; Run starts it.
func New(cfg Config) *Expirer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Audit == nil {
		cfg.Audit = func(context.Context, string, api.Ref, string, string, string) {}
	}
	return &Expirer{vms: cfg.VMs, ops: cfg.Ops, audit: cfg.Audit, interval: cfg.Interval, log: cfg.Logger}
}

// Lead checks the leases every interval until ctx ends (the term does),
// writing through w, the leader's fenced writer.
func (x *Expirer) Lead(ctx context.Context, w store.Writer) {
	x.lead.Store(&w)
	defer x.lead.Store(nil)
	t := time.NewTicker(x.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		x.expire(ctx, w, time.Now())
	}
}

// Expire acts on the leases due at now, while this server leads: a stop
// for each lease expired, once, and a delete for each lease past its
// grace period, once.
func (x *Expirer) Expire(ctx context.Context, now time.Time) {
	if w := x.lead.Load(); w != nil {
		x.expire(ctx, *w, now)
	}
}

func (x *Expirer) expire(ctx context.Context, w store.Writer, now time.Time) {
	due := x.vms.Select(func(vm *api.VM) bool {
		l := vm.Spec.Lease
		return l != nil && vm.Spec.Deletion == nil &&
			(!now.Before(l.DeleteAt) || (!now.Before(l.ExpiresAt) && l.StoppedAt.IsZero()))
	})
	sys := auth.WithIdentity(ctx, auth.Identity{Kind: auth.KindSystem, Name: "lease"})
	for _, vm := range due {
		target := api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}
		if !now.Before(vm.Spec.Lease.DeleteAt) {
			// The VM stays due until its delete starts, which may wait
			// behind its other operations: one delete is queued, and the
			// rounds after find it queued and do nothing.
			op, fresh, err := x.ops.SubmitWith(sys, vm.Key(), api.OpVMDelete, nil, ops.SubmitOptions{IfMatch: vm.Version, Once: true, Writer: w})
			if err == nil && !fresh {
				continue
			}
			x.outcome(ctx, "vm.lease.delete", target, op, err, "lease expired "+vm.Spec.Lease.ExpiresAt.Format(time.RFC3339)+" and its grace period ended")
			continue
		}
		// Record the stop on the lease first, so that it is issued once.
		next := store.Clone(vm)
		next.Spec.Lease.StoppedAt = now.UTC()
		if _, err := w.Txn(ctx, x.vms.OpUpdate(vm.Key(), next, vm.Version)); err != nil {
			continue // changed meanwhile; the next round looks again
		}
		var op *api.Operation
		var err error
		if vm.Spec.PowerState != api.PowerStopped {
			// A stop already queued (by anyone) is the lease's stop too.
			var fresh bool
			if op, fresh, err = x.ops.SubmitWith(sys, vm.Key(), api.OpVMStop, nil, ops.SubmitOptions{Once: true, Writer: w}); err == nil && !fresh {
				op = nil
			}
		}
		x.outcome(ctx, "vm.lease.stop", target, op, err, "lease expired "+vm.Spec.Lease.ExpiresAt.Format(time.RFC3339))
	}
}

func (x *Expirer) outcome(ctx context.Context, action string, target api.Ref, op *api.Operation, err error, msg string) {
	outcome, opID := api.AuditSuccess, ""
	if op != nil {
		opID = op.ID
	}
	if err != nil {
		outcome, msg = api.AuditFailure, msg+": "+err.Error()
		x.log.Warn("acting on an expired lease", "vm", target.Name, "project", target.Project, "action", action, "err", err)
	} else {
		x.log.Info("lease expired", "vm", target.Name, "project", target.Project, "action", action, "op", opID)
	}
	x.audit(ctx, action, target, opID, outcome, msg)
}
