package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// cordonHost marks a host unschedulable (or schedulable again): the
// scheduler places no new VM on it, pinned ones included; the VMs it runs
// keep running.
func (s *Server) cordonHost(cordon bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		requestOf(r).resource = api.Ref{Kind: "host", Name: name}
		h, err := s.setUnschedulable(r.Context(), name, cordon)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		requestOf(r).resource.UID = h.UID
		writeJSON(w, http.StatusOK, s.withAllocation(h))
	}
}

// setUnschedulable writes a host's spec.unschedulable.
func (s *Server) setUnschedulable(ctx context.Context, name string, v bool) (*api.Host, error) {
	for range 10 {
		cur, ok := s.hosts.Get(name)
		if !ok {
			return nil, api.NotFound("host", name)
		}
		if cur.Spec.Unschedulable == v {
			return cur, nil
		}
		next := store.Clone(cur)
		next.Spec.Unschedulable = v
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.hosts.Update(ctx, name, next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			return nil, fmt.Errorf("updating host %q: %w", name, err)
		}
		if got, ok := s.hosts.Get(name); ok {
			return got, nil
		}
		return next, nil
	}
	return nil, api.Conflict("host %q is being updated concurrently", name)
}

// agentHost returns one of Polyvisor's own hosts, refusing a provider's:
// those have no agent or token, and their provider decides what they are.
func (s *Server) agentHost(name string) (*api.Host, error) {
	h, ok := s.hosts.Get(name)
	if !ok {
		return nil, api.NotFound("host", name)
	}
	if h.Provider != nil {
		return nil, api.Conflict("host %q belongs to provider %q, which manages it; it has no Polyvisor agent or token", name, h.Provider.Name)
	}
	return h, nil
}

// revokeHost ends a host's credentials at once: its token stops working,
// its watch and streams end, and its agent cannot act for it any more. The
// host is marked not ready (its VMs unknown) and may join again with a new
// join token, under the same name.
func (s *Server) revokeHost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	requestOf(r).resource = api.Ref{Kind: "host", Name: name}
	h, err := s.agentHost(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = h.UID
	if err := s.revokeHostCredentials(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	h, err = s.markHostNotReady(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.ctl.Liveness.MarkVMsUnknown(r.Context()) // the host is not ready now: its VMs too
	s.log.Warn("host credentials revoked", "host", name)
	writeJSON(w, http.StatusOK, s.withAllocation(h))
}

// revokeHostCredentials deletes every token of a host, and fails when one
// could not be deleted: a revocation that half worked is no revocation.
func (s *Server) revokeHostCredentials(ctx context.Context, name string) error {
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindHost && t.Name == name }) {
		if err := s.tokens.Delete(ctx, t.ID, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("revoking a token of host %q: %w", name, err)
		}
	}
	return nil
}

// markHostNotReady records that a host's agent is gone.
func (s *Server) markHostNotReady(ctx context.Context, name string) (*api.Host, error) {
	for range 10 {
		cur, ok := s.hosts.Get(name)
		if !ok {
			return nil, api.NotFound("host", name)
		}
		if cur.Status.State == api.HostNotReady {
			return cur, nil
		}
		next := store.Clone(cur)
		next.Status.State = api.HostNotReady
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.hosts.Update(ctx, name, next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			return nil, fmt.Errorf("updating host %q: %w", name, err)
		}
		return next, nil
	}
	return nil, api.Conflict("host %q is being updated concurrently", name)
}

// maxNamed is how many VMs an error names before counting the rest.
const maxNamed = 10

// deleteHost removes a host and its credentials. It is refused while VMs
// are placed on the host, naming them: delete or move them first (a VM
// being deleted counts until its host reports it gone).
func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	requestOf(r).resource = api.Ref{Kind: "host", Name: name}
	h, err := s.agentHost(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = h.UID
	if err := s.hostIsEmpty(name); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Cordon first, so no create places a VM on it meanwhile, then look
	// again: a create placed before the cordon may have landed since.
	wasCordoned := h.Spec.Unschedulable
	if _, err := s.setUnschedulable(r.Context(), name, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.hostIsEmpty(name); err != nil {
		if !wasCordoned {
			if _, uerr := s.setUnschedulable(r.Context(), name, false); uerr != nil {
				s.log.Warn("uncordoning a host whose deletion was refused", "host", name, "err", uerr)
			}
		}
		s.writeError(w, r, err)
		return
	}
	if err := s.revokeHostCredentials(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.hosts.Delete(r.Context(), name, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.writeError(w, r, fmt.Errorf("deleting host %q: %w", name, err))
		return
	}
	s.log.Warn("host deleted", "host", name)
	w.WriteHeader(http.StatusNoContent)
}

// hostIsEmpty fails, naming them, when VMs are placed on the host or
// being placed there.
func (s *Server) hostIsEmpty(name string) error {
	var keys []string
	for _, vm := range s.vmsOn.List(name) {
		if vm.Spec.Host != name {
			continue // only migrating to it
		}
		k := vm.Key()
		if vm.Spec.Deletion != nil {
			k += " (being deleted)"
		}
		keys = append(keys, k)
	}
	if len(keys) > 0 {
		slices.Sort(keys)
		named := keys[:min(len(keys), maxNamed)]
		msg := fmt.Sprintf("host %q still has %d VM(s) placed on it: %s", name, len(keys), strings.Join(named, ", "))
		if rest := len(keys) - len(named); rest > 0 {
			msg += fmt.Sprintf(" and %d more", rest)
		}
		return &api.Error{Code: api.CodeConflict, Message: msg + "; delete them first",
			Details: map[string]string{"vms": strings.Join(keys, ",")}}
	}
	// A create placed on the host before it was cordoned is in the index
	// by now; one placed after fails on the host's version.
	return nil
}
