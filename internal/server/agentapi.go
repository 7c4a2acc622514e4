package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// The agent routes: what a host's agent may do, each limited to its host.
func (s *Server) agentRoutes() []route {
	return []route{
		{method: "POST", path: "/v1/agent/register", rule: auth.Public, handler: s.registerAgent},
		{method: "PUT", path: "/v1/agent/hosts/{name}/status", rule: auth.Host, handler: s.putHostStatus, hostOf: pathHost},
		{method: "GET", path: "/v1/agent/hosts/{name}/watch", rule: auth.Host, handler: s.watchHost, hostOf: pathHost},
		{method: "PUT", path: "/v1/agent/vms/{project}/{name}/status", rule: auth.Host, handler: s.putVMStatus, hostOf: s.vmHost},
		{method: "POST", path: "/v1/agent/vms/{project}/{name}/removed", rule: auth.Host, handler: s.vmRemoved, hostOf: s.vmHost},
		{method: "GET", path: "/v1/agent/streams/{id}", rule: auth.AnyHost, handler: s.attachStream},
	}
}

// pathHost is the host a route's path names.
func pathHost(r *http.Request, _ auth.Identity) string { return r.PathValue("name") }

// vmHost is the host of the VM an agent route names. A VM that no longer
// exists concerns the caller (its handler answers not found); one on
// another host concerns none ("": it does not exist for the caller).
func (s *Server) vmHost(r *http.Request, id auth.Identity) string {
	vm, ok := s.vms.Get(agentVMKey(r))
	if !ok || vm.Spec.Host == id.Name {
		return id.Name
	}
	return ""
}

// agentVMKey is the store key of the VM an agent route names.
func agentVMKey(r *http.Request) string { return api.Key(r.PathValue("project"), r.PathValue("name")) }

func (s *Server) registerAgent(w http.ResponseWriter, r *http.Request) {
	var req api.AgentRegister
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateName("host", req.Host); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The token first: nothing about hosts is told to a caller without one.
	id, jt, err := s.checkJoinToken(r.Context(), req.JoinToken)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if jt.Host != "" && jt.Host != req.Host {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: fmt.Sprintf("this join token is for host %q, not %q", jt.Host, req.Host)})
		return
	}
	if h, ok := s.hosts.Get(req.Host); ok && h.Provider != nil {
		s.writeError(w, r, api.Conflict("host %q belongs to provider %q; choose another name", req.Host, h.Provider.Name))
		return
	} else if ok && h.Status.State == api.HostReady {
		// A live host cannot be taken over with a join token.
		s.writeError(w, r, api.Conflict("host %q is registered and ready; join under another name", req.Host))
		return
	} else if ok && jt.Host == "" && s.hostHasCredentials(req.Host) {
		// Joining again takes the host's VMs, their specs and user data:
		// it needs a token made for this host, or the host revoked (or
		// deleted) first, so that a token meant for a new host cannot
		// take over one whose agent is merely down.
		s.writeError(w, r, api.Conflict("host %q is registered: join it again with a join token made for it (polyvisor host join-token --host %s), or revoke it first (polyvisor host revoke %s)",
			req.Host, req.Host, req.Host))
		return
	}
	if err := s.consumeJoinToken(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A registration that fails from here on (the store busy or out of
	// reach) gives its join token back: the agent asks again with it,
	// rather than its one-use token being spent on nothing.
	if _, err := s.upsertHost(r.Context(), req.Host, req.Status); err != nil {
		s.restoreJoinToken(r.Context(), id, jt)
		s.writeError(w, r, err)
		return
	}
	// The host's earlier tokens end here: an agent that registers again
	// has lost them, and nobody else should hold them.
	s.revokeHostTokens(r.Context(), req.Host)
	tok, _, err := s.mintToken(r.Context(), auth.PrefixHost, &tokenRecord{Kind: tokenKindHost, Name: req.Host})
	if err != nil {
		s.restoreJoinToken(r.Context(), id, jt)
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.actor = &api.AuditActor{Kind: auth.KindHost, Name: req.Host}
	rq.resource = api.Ref{Kind: "host", Name: req.Host}
	s.log.Info("host registered", "host", req.Host, "address", req.Status.Address)
	writeJSON(w, http.StatusOK, api.AgentCredentials{Host: req.Host, Token: tok, CACert: string(s.caPEM)})
}

// hostHasCredentials tells whether a host holds a token: it joined and
// was neither revoked nor deleted since.
func (s *Server) hostHasCredentials(host string) bool {
	return len(listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindHost && t.Name == host })) > 0
}

// upsertHost creates or updates a host from its agent's report and records
// the heartbeat. The store is written only when something other than the
// heartbeat time changed, or the stored heartbeat is old.
func (s *Server) upsertHost(ctx context.Context, name string, st api.HostStatus) (*api.Host, error) {
	now := time.Now().UTC()
	s.ctl.Liveness.Beat(name, now)
	for range 10 {
		cur, ok, err := s.hostForBeat(ctx, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			h := &api.Host{Meta: api.Meta{Name: name, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now}}
			h.Status = st
			h.Status.State, h.Status.LastHeartbeat = hostState(st), now
			h.Status.Allocated, h.Status.Capacity = api.Allocation{}, api.HostCapacity{}
			if _, err := s.hosts.Create(ctx, name, h); err != nil {
				if errors.Is(err, store.ErrExists) {
					continue
				}
				return nil, fmt.Errorf("registering host %q: %w", name, err)
			}
			return h, nil
		}
		// Most heartbeats change nothing (an unfenced host, its status as
		// stored, its last one persisted recently): answered without
		// copying the host.
		if cur.Fence == nil && now.Sub(cur.Status.LastHeartbeat) < heartbeatPersist {
			same := st
			same.State, same.LastHeartbeat = hostState(st), cur.Status.LastHeartbeat
			same.Allocated, same.Capacity = api.Allocation{}, api.HostCapacity{}
			if hostStatusEqual(same, cur.Status) {
				return cur, nil
			}
		}
		next := store.Clone(cur)
		next.Status = st
		next.Status.State, next.Status.LastHeartbeat = hostState(st), cur.Status.LastHeartbeat
		// Allocation and capacity are the server's to say, never the agent's.
		next.Status.Allocated, next.Status.Capacity = api.Allocation{}, api.HostCapacity{}
		// A heartbeat ends the host's fencing: before the leader fenced
		// it, the write its fencing is conditional on is refused; after,
		// the VMs restarted elsewhere are in the store by the time the
		// agent hears the host is no longer fenced (docs/HA.md).
		returned := returnFromFence(next, now)
		if !returned && hostStatusEqual(next.Status, cur.Status) && now.Sub(cur.Status.LastHeartbeat) < heartbeatPersist {
			return cur, nil
		}
		next.Status.LastHeartbeat = now
		next.UpdatedAt = now
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

// hostForBeat is the host record a heartbeat is answered from. With HA
// restarts on, it is read as fresh as through the store's quorum (a
// barrier the heartbeats arriving together share, then the index): a
// server cut off from the store must not answer (and so renew the agent's
// contact, keeping it from fencing itself) while the leader fences the
// host, and what it says of the host's fencing must be what the store
// holds (docs/HA.md). 503 when the store cannot say.
func (s *Server) hostForBeat(ctx context.Context, name string) (*api.Host, bool, error) {
	if s.cfg.HA.FenceTimeout > 0 {
		rctx, cancel := context.WithTimeout(ctx, heartbeatReadTimeout)
		defer cancel()
		if err := s.st.Barrier(rctx); err != nil {
			return nil, false, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("the store cannot confirm host %q: heartbeat not taken: %v", name, err)}
		}
	}
	h, ok := s.hosts.Get(name)
	return h, ok, nil
}

// heartbeatReadTimeout bounds a heartbeat's quorum read.
const heartbeatReadTimeout = 2 * time.Second

// hostState is the state of a host that just reported: ready once its
// agent has reported what the host has (a registration alone does not).
func hostState(st api.HostStatus) string {
	if st.CPUs > 0 && st.MemoryMiB > 0 {
		return api.HostReady
	}
	return api.HostNotReady
}

// heartbeatPersist is how often a heartbeat that changes nothing else is
// written to the store (liveness itself is tracked in memory).
const heartbeatPersist = 30 * time.Second

func hostStatusEqual(a, b api.HostStatus) bool {
	a.LastHeartbeat, b.LastHeartbeat = time.Time{}, time.Time{}
	a.Allocated, b.Allocated = api.Allocation{}, api.Allocation{}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func (s *Server) putHostStatus(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var st api.HostStatus
	if err := decodeJSON(w, r, &st, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if h, ok := s.hosts.Get(name); !ok || h.Provider != nil {
		s.writeError(w, r, api.NotFound("host", name))
		return
	}
	h, err := s.upsertHost(r.Context(), name, st)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.withAllocation(h))
}

// watchHost streams the VMs placed on a host, then every change to them,
// and the console streams wanted from the host.
func (s *Server) watchHost(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("name")
	if _, ok := s.hosts.Get(host); !ok {
		s.writeError(w, r, api.NotFound("host", host))
		return
	}
	// The watch ends when the host's token is revoked or the host deleted.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	release, err := s.guard.open(r, streamAgent, s.hostAccess(host), func(string) { cancel() })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	// Each subscription gets only the host's changes, from partitions
	// of the collections by host: with thousands of hosts, a VM's change
	// reaches the watches of the hosts it names alone. The switch below
	// decides what each change means.
	changes := s.vmsOn.Subscribe(ctx, host)
	volChanges := s.volumesOn.Subscribe(ctx, host)
	// Every pool change: the host's own pools are sent, and any nbd pool's
	// address is kept from every host's guests.
	poolChanges := s.pools.Subscribe(ctx)
	requests, unregister := s.streams.register(host)
	defer unregister()
	// The host's network state: once after the VMs, then at each change.
	netStates, stopNet := s.net.hub.Watch(host)
	defer stopNet()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	// What the guests must not reach goes first, before any VM to start.
	denied := s.guestDenied()
	if enc.Encode(api.AgentMessage{Type: api.AgentMsgGuestDeny, GuestDeny: denied}) != nil {
		return
	}
	for _, vm := range s.vmsOn.List(host) {
		if enc.Encode(api.AgentMessage{Type: api.AgentMsgVM, VM: vm}) != nil {
			return
		}
	}
	for _, p := range listAll(s.pools, func(p *api.Pool) bool { return slices.Contains(p.Spec.Hosts, host) }) {
		if enc.Encode(api.AgentMessage{Type: api.AgentMsgPool, Pool: p}) != nil {
			return
		}
	}
	for _, v := range s.volumesOn.List(host) {
		if enc.Encode(api.AgentMessage{Type: api.AgentMsgVolume, Volume: v}) != nil {
			return
		}
	}
	if enc.Encode(api.AgentMessage{Type: api.AgentMsgSynced}) != nil {
		return
	}
	flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		var msg api.AgentMessage
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			switch {
			case c.Type == store.Delete && concernsHost(c.Obj, host):
				msg = api.AgentMessage{Type: api.AgentMsgVMRemoved, Name: c.Name}
			case c.Type == store.Put && concernsHost(c.Obj, host):
				msg = api.AgentMessage{Type: api.AgentMsgVM, VM: c.Obj}
			case c.Type == store.Put && c.Prev != nil && concernsHost(c.Prev, host):
				// Migrated away, or a migration here ended without it.
				msg = api.AgentMessage{Type: api.AgentMsgVMRemoved, Name: c.Name}
			default:
				continue
			}
		case c, ok := <-volChanges:
			if !ok {
				return
			}
			switch {
			case c.Type == store.Delete && c.Obj.Spec.Host == host:
				msg = api.AgentMessage{Type: api.AgentMsgVolumeRemoved, Name: c.Name}
			case c.Type == store.Put && c.Obj.Spec.Host == host:
				msg = api.AgentMessage{Type: api.AgentMsgVolume, Volume: c.Obj}
			default:
				continue
			}
		case c, ok := <-poolChanges:
			if !ok {
				return
			}
			if now := s.guestDenied(); !slices.Equal(now, denied) {
				denied = now
				if enc.Encode(api.AgentMessage{Type: api.AgentMsgGuestDeny, GuestDeny: denied}) != nil {
					return
				}
				flush()
			}
			if c.Obj == nil || !slices.Contains(c.Obj.Spec.Hosts, host) {
				continue
			}
			msg = api.AgentMessage{Type: api.AgentMsgPool, Pool: c.Obj}
			if c.Type == store.Delete {
				msg = api.AgentMessage{Type: api.AgentMsgPoolRemoved, Name: c.Name}
			}
		case req := <-requests:
			msg = api.AgentMessage{Type: api.AgentMsgStream, Stream: &req}
		case st := <-netStates:
			msg = api.AgentMessage{Type: api.AgentMsgNetwork, Network: st}
		case <-ping.C:
			msg = api.AgentMessage{Type: api.AgentMsgPing}
		}
		if err := enc.Encode(msg); err != nil {
			return
		}
		flush()
	}
}

// guestDenied is what every host's guests must not reach: each nbd pool's
// export address, sorted.
func (s *Server) guestDenied() []string {
	var out []string
	for _, p := range listAll(s.pools, func(p *api.Pool) bool { return p.Spec.Kind == api.PoolNBD && p.Spec.Address != "" }) {
		if !slices.Contains(out, p.Spec.Address) {
			out = append(out, p.Spec.Address)
		}
	}
	slices.Sort(out)
	return out
}

// concernsHost tells whether a host's agent has a VM: placed on the host,
// or migrating to it.
func concernsHost(vm *api.VM, host string) bool {
	return slices.Contains(vmHosts(vm), host)
}

// vmHosts are the hosts whose agents have a VM: the one it is placed on
// and the one it migrates to.
func vmHosts(vm *api.VM) []string {
	if vm.Spec.Migration != nil {
		return []string{vm.Spec.Host, vm.Spec.Migration.Target}
	}
	return []string{vm.Spec.Host}
}

func (s *Server) putVMStatus(w http.ResponseWriter, r *http.Request) {
	name := agentVMKey(r)
	var st api.VMStatus
	if err := decodeJSON(w, r, &st, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	for range 20 {
		cur, ok := s.vms.Get(name)
		if !ok {
			s.writeError(w, r, api.NotFound("vm", name))
			return
		}
		next := store.Clone(cur)
		next.Status = st
		next.Status.UpdatedAt = time.Now().UTC()
		if stoppedForGood(next, st) {
			next.Spec.PowerState = api.PowerStopped
			next.Generation++
			next.Status.ObservedGeneration = next.Generation
		}
		if _, err := s.vms.Update(r.Context(), name, next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, next)
		return
	}
	s.writeError(w, r, api.Conflict("vm %q is being updated concurrently", name))
}

// stoppedForGood tells whether a VM's host reports it stopped in a way
// that makes stopped its desired state, as a stop would: its guest powered
// itself off, or it crashed and its restart policy is stop. Only a report
// for the current generation counts: an operation under way decides.
func stoppedForGood(vm *api.VM, st api.VMStatus) bool {
	if vm.Spec.PowerState == api.PowerStopped || vm.Spec.Deletion != nil || st.ObservedGeneration != vm.Generation {
		return false
	}
	switch {
	case st.PowerState == api.PowerStopped && st.StopCause == api.StopCauseGuestPoweroff:
		return true
	case st.PowerState == api.PowerCrashed && api.IsCrash(st.StopCause):
		return vm.Spec.OnCrash == api.OnCrashStop
	}
	return false
}

func (s *Server) vmRemoved(w http.ResponseWriter, r *http.Request) {
	name := agentVMKey(r)
	vm, ok := s.vms.Get(name)
	if !ok {
		s.writeError(w, r, api.NotFound("vm", name))
		return
	}
	if vm.Spec.Deletion == nil {
		s.writeError(w, r, api.Conflict("vm %q is not being deleted", name))
		return
	}
	deleted, err := s.removeVMWithPorts(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("vm removed", "vm", name, "host", vm.Spec.Host)
	s.auditReleasedRoots(r.Context(), vm, deleted)
	writeJSON(w, http.StatusOK, struct{}{})
}
