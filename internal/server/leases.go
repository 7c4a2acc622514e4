package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
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

// runTokenSweep deletes expired tokens (sessions, mostly) every minute.
func (s *Server) runTokenSweep(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweepTokens(ctx)
		}
	}
}

// sweepTokens deletes expired tokens (sessions, mostly).
func (s *Server) sweepTokens(ctx context.Context) {
	now := time.Now()
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return !t.ExpiresAt.IsZero() && now.After(t.ExpiresAt) }) {
		s.deleteToken(ctx, t)
	}
}
