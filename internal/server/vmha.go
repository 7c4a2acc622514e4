package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/ha"
	"github.com/polyvisor/polyvisor/internal/controller/liveness"
	"github.com/polyvisor/polyvisor/internal/store"
)

// HA restart with fencing (docs/HA.md): the policy per VM and its
// project's default. The leader's side, which fences lost hosts and
// restarts their VMs, is internal/controller/ha.

func (s *Server) haRoutes() []route {
	return []route{
		{method: "PUT", path: "/v1/vms/{name}/ha", rule: auth.In(auth.PermVMUpdate), handler: s.setHA},
	}
}

// haRefused is a 422 naming the ha field: the VM's disks do not allow a
// restart on another host.
func haRefused(format string, args ...any) *api.Error {
	e := api.Unprocessable(format, args...)
	e.Field = "ha"
	return e
}

// validHA checks an HA policy named in field; empty is allowed.
func validHA(field, v string) error {
	switch v {
	case "", api.HARestart, api.HANone:
		return nil
	}
	return api.Invalid(field, "must be restart or none, not %q", v)
}

// haIneligible says why a VM cannot be restarted on another host: a disk
// of its own (on its host only), a volume in a pool other than a shared
// one, or a VM of a connected estate. Nil when every disk it has is on
// shared storage.
func (s *Server) haIneligible(vm *api.VM) error {
	if vm.Spec.Provider != nil {
		return haRefused("vm %q runs in a connected estate, which restarts its vms by its own policy", vm.Name)
	}
	if len(vm.Spec.Disks) > 0 {
		return haRefused("vm %q has disks of its own (%q) on host %q: only a vm whose disks are all volumes of a shared pool can be restarted on another host", vm.Name, vm.Spec.Disks[0].Name, vm.Spec.Host)
	}
	for _, a := range vm.Spec.Volumes {
		if err := s.sharedVolume(vm.Project, a.Volume); err != nil {
			return err
		}
	}
	return nil
}

// sharedVolume refuses a volume that is not in a shared pool.
func (s *Server) sharedVolume(project, name string) error {
	v, ok := s.volumes.Get(api.Key(project, name))
	if !ok {
		return haRefused("volume %q is not found", name)
	}
	if p, ok := s.pools.Get(v.Spec.Pool); !ok || p.Spec.Kind != api.PoolShared {
		return haRefused("volume %q is in pool %q, which is not shared: only a vm whose disks are all volumes of a shared pool can be restarted on another host", name, v.Spec.Pool)
	}
	return nil
}

// haOfCreate is the HA policy a new VM gets: the one asked for, which its
// disks must allow (422 otherwise), or the project's default where they
// do.
func haOfCreate(req *api.VMCreate, proj *api.Project) (string, error) {
	if err := validHA("ha", req.HA); err != nil {
		return "", err
	}
	local := len(req.Disks) > 0 || req.Provider != "" || req.Template != ""
	switch {
	case req.HA == api.HARestart && local:
		return "", haRefused("vm %q would have disks of its own on its host: only a vm whose disks are all volumes of a shared pool can be restarted on another host (create it without disks and attach volumes of a shared pool)", req.Name)
	case req.HA != "":
		return req.HA, nil
	case proj.Spec.HADefault == api.HARestart && !local:
		return api.HARestart, nil
	}
	return "", nil
}

// haSince is VMSpec.HASince for a VM with policy ha at generation gen.
func haSince(ha string, gen int64) int64 {
	if ha == api.HARestart {
		return gen
	}
	return 0
}

// setHA sets a VM's HA policy.
func (s *Server) setHA(w http.ResponseWriter, r *http.Request) {
	var req api.VMHASet
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.HA == "" {
		s.writeError(w, r, api.Invalid("ha", "must be restart or none"))
		return
	}
	if err := validHA("ha", req.HA); err != nil {
		s.writeError(w, r, err)
		return
	}
	for range 10 {
		vm, ok := s.vmOf(w, r)
		if !ok {
			return
		}
		if vm.Spec.Deletion != nil {
			s.writeError(w, r, api.Conflict("vm %q is being deleted", vm.Name))
			return
		}
		if req.HA == api.HARestart && vm.Spec.HA != api.HARestart {
			if err := s.haIneligible(vm); err != nil {
				s.writeError(w, r, err)
				return
			}
			if err := s.haHostReachable(vm); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		next := store.Clone(vm)
		next.Spec.HA = req.HA
		if next.Spec.HA != vm.Spec.HA {
			// The host's agent must learn the policy (it kills its HA
			// vms when cut off); the leader restarts a vm of a host
			// fenced on timeout only once its host observed this
			// generation (HASince).
			next.Generation++
			next.Spec.HASince = haSince(next.Spec.HA, next.Generation)
		}
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.vms.Update(r.Context(), vm.Key(), next, vm.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			s.writeError(w, r, fmt.Errorf("setting the ha policy of vm %q: %w", vm.Name, err))
			return
		}
		writeJSON(w, http.StatusOK, next)
		return
	}
	s.writeError(w, r, api.Conflict("vm %q is being changed concurrently", r.PathValue("name")))
}

// haHostReachable refuses restart for a VM whose host is not ready or is
// being fenced: its agent could not learn the policy, so would not kill
// the VM when cut off, and the leader would restart it elsewhere.
func (s *Server) haHostReachable(vm *api.VM) error {
	if vm.Spec.Host == "" {
		return nil
	}
	h, ok := s.hosts.Get(vm.Spec.Host)
	switch {
	case !ok:
		return api.Conflict("vm %q: its host %q is not known: ha restart can be set only while the host is ready", vm.Name, vm.Spec.Host)
	case h.Fence != nil && h.Fence.State != api.FenceReturned:
		return api.Conflict("vm %q: its host %q is being fenced (%s): ha restart can be set only while the host is ready and heartbeating", vm.Name, h.Name, h.Fence.State)
	case h.Status.State != api.HostReady:
		return api.Conflict("vm %q: its host %q is not ready (%s): ha restart can be set only while the host is ready", vm.Name, h.Name, h.Status.State)
	}
	return nil
}

// returnFromFence ends the fencing of a host that heartbeats again: a
// pending fence is dropped (the host was only slow), a fenced one becomes
// returned. It reports whether it changed the host.
func returnFromFence(h *api.Host, now time.Time) bool {
	switch {
	case h.Fence == nil:
		return false
	case h.Fence.State == api.FencePending, h.Fence.State == api.FenceUnknown:
		// Nothing was restarted elsewhere: the host was only slow, or
		// out of reach.
		h.Fence = nil
		return true
	case h.Fence.State == api.FenceFenced:
		h.Fence.State, h.Fence.ReturnedAt = api.FenceReturned, now
		return true
	}
	return false
}

// HAConfig configures HA restarts.
type HAConfig struct {
	// FenceTimeout is T_fence: an agent that has had no heartbeat
	// answered for that long kills its HA VMs (default 20s; negative
	// turns HA restarts off).
	FenceTimeout time.Duration
	// Margin is what the leader waits beyond T_fence before it restarts
	// a silent host's HA VMs elsewhere (default 5s).
	Margin time.Duration
	// Hook is a fence command (argv) run with the host's name once a
	// host is silent for T_fence; its success fences the host at once.
	Hook []string
	// HookTimeout bounds the hook (default 30s).
	HookTimeout time.Duration
	// FenceOnTimeout restarts a silent host's HA VMs on its silence
	// alone, at T_fence and the margin, when the host's last heartbeat
	// said its keeper was armed (`polyvisor server` turns it on by
	// default). Off, only a fence hook that reports the host powered off
	// does. A host whose keeper was not armed is never fenced on timeout:
	// an agent that crashed, hung or was stopped leaves its QEMUs
	// running, and two QEMUs would write one volume.
	FenceOnTimeout bool
	// ClockSkew is the most the servers' wall clocks may differ (default
	// 1s): the heartbeats they share are wall-clock stamps.
	ClockSkew time.Duration
}

// defaults fills in the HA timings and checks the margin: it must be
// above the period at which servers share the heartbeats they received
// (a third of the heartbeat timeout) plus the clock skew allowed, or the
// leader could fence a host whose heartbeats another server answered.
// Unset, the margin is 5s, or that bound and a second when it is more.
func (c *HAConfig) defaults(heartbeatTimeout time.Duration) error {
	switch {
	case c.FenceTimeout == 0:
		c.FenceTimeout = 20 * time.Second
	case c.FenceTimeout < 0:
		c.FenceTimeout = 0
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = time.Second
	}
	bound := liveness.SharePeriod(heartbeatTimeout) + c.ClockSkew
	if c.Margin <= 0 {
		c.Margin = max(5*time.Second, bound+time.Second)
	}
	if c.FenceTimeout > 0 && c.Margin <= bound {
		return fmt.Errorf("ha fence margin %s must be above the heartbeat share period %s (a third of the heartbeat timeout %s) plus the allowed clock skew %s: raise --ha-fence-margin above %s",
			c.Margin, liveness.SharePeriod(heartbeatTimeout), heartbeatTimeout, c.ClockSkew, bound)
	}
	return nil
}

// newHA makes the leader's HA controller.
func (s *Server) newHA() *ha.Controller {
	return ha.New(ha.Config{
		Hosts: s.hosts, VMs: s.vms, VMsOn: s.vmsOn.List, Ops: s.ops, Pools: s.pools, Volumes: s.volumes,
		Placer: s.ctl.Placer, LockVM: s.ctl.Ops.LockVM, LastHeard: s.ctl.Liveness.LastHeard,
		Timings: ha.Timings{FenceTimeout: s.cfg.HA.FenceTimeout, Margin: s.cfg.HA.Margin, OnTimeout: s.cfg.HA.FenceOnTimeout},
		Hook:    s.cfg.HA.Hook, HookTimeout: s.cfg.HA.HookTimeout,
		Audit: s.auditHA, Logger: s.log.With("component", "ha"),
	})
}

// auditHA records what the HA controller did, as the system.
func (s *Server) auditHA(ctx context.Context, action string, target api.Ref, opID, outcome, msg string) {
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: api.AuditActor{Kind: auth.KindSystem, Name: "ha"}, Action: action, Project: target.Project,
		Resource: target, OperationID: opID, Outcome: outcome, Message: msg,
	})
}
