package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

const (
	// maxLeaseSeconds bounds every lease setting: ten years.
	maxLeaseSeconds = 10 * 365 * 24 * 3600
	// defaultLeaseGrace is how long an expired VM stays stopped before it
	// is deleted, when its project does not say.
	defaultLeaseGrace = 24 * time.Hour
)

// leaseFor is the lease of a VM created (or renewed) now for seconds in
// project p: the project's maximum when none is asked and the project has
// one, none when neither says.
func leaseFor(p *api.Project, seconds int64, now time.Time) (*api.Lease, error) {
	max := p.Spec.MaxLeaseSeconds
	switch {
	case seconds < 0 || seconds > maxLeaseSeconds:
		return nil, api.Invalid("leaseSeconds", "must be from 0 to %d, not %d", maxLeaseSeconds, seconds)
	case max > 0 && seconds > max:
		return nil, api.Invalid("leaseSeconds", "must be at most %d, the longest lease project %q allows, not %d", max, p.Name, seconds)
	case seconds == 0 && max == 0:
		return nil, nil
	case seconds == 0:
		seconds = max
	}
	grace := defaultLeaseGrace
	if p.Spec.LeaseGraceSeconds > 0 {
		grace = time.Duration(p.Spec.LeaseGraceSeconds) * time.Second
	}
	exp := now.UTC().Add(time.Duration(seconds) * time.Second).Truncate(time.Second)
	return &api.Lease{ExpiresAt: exp, DeleteAt: exp.Add(grace)}, nil
}

// setLease renews (or, where the project allows, removes) a VM's lease. A
// VM already stopped by its lease stays stopped but is no longer deleted.
func (s *Server) setLease(w http.ResponseWriter, r *http.Request) {
	var req api.LeaseSet
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	for range 10 {
		vm, ok := s.vmOf(w, r)
		if !ok {
			return
		}
		p, ok := s.projects.Get(vm.Project)
		if !ok {
			s.writeError(w, r, api.NotFound("project", vm.Project))
			return
		}
		if req.DurationSeconds == 0 && p.Spec.MaxLeaseSeconds > 0 {
			s.writeError(w, r, api.Invalid("durationSeconds", "project %q requires a lease of at most %d seconds", p.Name, p.Spec.MaxLeaseSeconds))
			return
		}
		lease, err := leaseFor(p, req.DurationSeconds, time.Now())
		if err != nil {
			err.(*api.Error).Field = "durationSeconds"
			s.writeError(w, r, err)
			return
		}
		if vm.Spec.Deletion != nil {
			s.writeError(w, r, api.Conflict("vm %q is being deleted", vm.Name))
			return
		}
		next := store.Clone(vm)
		next.Spec.Lease = lease
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.vms.Update(r.Context(), vm.Key(), next, vm.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, next)
		return
	}
	s.writeError(w, r, api.Conflict("vm %q is being changed concurrently", r.PathValue("name")))
}

// runLeases stops VMs whose lease expired and deletes them after the grace
// period, both as operations with audit records; it also forgets expired
// session tokens.
func (s *Server) runLeases(ctx context.Context) {
	every := s.cfg.LeaseInterval
	t := time.NewTicker(every)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.expireLeases(ctx, time.Now())
		if time.Since(lastSweep) > time.Minute {
			s.sweepTokens(ctx)
			lastSweep = time.Now()
		}
	}
}

func (s *Server) expireLeases(ctx context.Context, now time.Time) {
	due := listAll(s.vms, func(vm *api.VM) bool {
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
			op, fresh, err := s.opctl.submitWith(sys, vm.Key(), api.OpVMDelete, nil, submitOptions{ifMatch: vm.Version, once: true})
			if err == nil && !fresh {
				continue
			}
			s.leaseOutcome(ctx, "vm.lease.delete", target, op, err, "lease expired "+vm.Spec.Lease.ExpiresAt.Format(time.RFC3339)+" and its grace period ended")
			continue
		}
		// Record the stop on the lease first, so that it is issued once.
		next := store.Clone(vm)
		next.Spec.Lease.StoppedAt = now.UTC()
		if _, err := s.vms.Update(ctx, vm.Key(), next, vm.Version); err != nil {
			continue // changed meanwhile; the next round looks again
		}
		var op *api.Operation
		var err error
		if vm.Spec.PowerState != api.PowerStopped {
			// A stop already queued (by anyone) is the lease's stop too.
			var fresh bool
			if op, fresh, err = s.opctl.submitWith(sys, vm.Key(), api.OpVMStop, nil, submitOptions{once: true}); err == nil && !fresh {
				op = nil
			}
		}
		s.leaseOutcome(ctx, "vm.lease.stop", target, op, err, "lease expired "+vm.Spec.Lease.ExpiresAt.Format(time.RFC3339))
	}
}

func (s *Server) leaseOutcome(ctx context.Context, action string, target api.Ref, op *api.Operation, err error, msg string) {
	outcome, opID := api.AuditSuccess, ""
	if op != nil {
		opID = op.ID
	}
	if err != nil {
		outcome, msg = api.AuditFailure, msg+": "+err.Error()
		s.log.Warn("acting on an expired lease", "vm", target.Name, "project", target.Project, "action", action, "err", err)
	} else {
		s.log.Info("lease expired", "vm", target.Name, "project", target.Project, "action", action, "op", opID)
	}
	s.auditSystem(ctx, action, target, opID, outcome, msg)
}

// sweepTokens deletes expired tokens (sessions, mostly).
func (s *Server) sweepTokens(ctx context.Context) {
	now := time.Now()
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return !t.ExpiresAt.IsZero() && now.After(t.ExpiresAt) }) {
		s.deleteToken(ctx, t)
	}
}
