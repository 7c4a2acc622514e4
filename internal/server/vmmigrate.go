package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/drain"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/store"
)

// The routes of live migration and host drain. The agents' routes let
// the target of a migration record where it listens, and its source read
// it; users never see those records.
func (s *Server) migrationRoutes() []route {
	return []route{
		{method: "POST", path: "/v1/vms/{name}/migrate", rule: auth.In(auth.PermVMUpdate), handler: s.migrateVM},
		{method: "POST", path: "/v1/hosts/{name}/drain", rule: auth.Superadmin, handler: s.drainHost},
		{method: "PUT", path: "/v1/agent/migrations/{id}", rule: auth.Host, handler: s.putAgentMigration, hostOf: s.migrationTarget},
		{method: "GET", path: "/v1/agent/migrations/{id}", rule: auth.Host, handler: s.getAgentMigration, hostOf: s.migrationParty},
	}
}

// migratingVM is the VM a migration operation moves, while it moves it.
func (s *Server) migratingVM(id string) (*api.VM, bool) {
	op, ok := s.ops.Get(id)
	if !ok || op.Kind != api.OpVMMigrate || op.Done() {
		return nil, false
	}
	vm, ok := s.vms.Get(ops.TargetKey(op.Target))
	if !ok || vm.Spec.Migration == nil || vm.Spec.Migration.Operation != id {
		return nil, false
	}
	return vm, true
}

// migrationTarget is the host a migration under way moves its VM to: only
// its agent records the migration's incoming side. A migration that is
// not under way concerns no host.
func (s *Server) migrationTarget(r *http.Request, id auth.Identity) string {
	if vm, ok := s.migratingVM(r.PathValue("id")); ok && vm.Spec.Migration.Target == id.Name {
		return id.Name
	}
	return ""
}

// migrationParty is the source or the target of a migration under way.
func (s *Server) migrationParty(r *http.Request, id auth.Identity) string {
	if vm, ok := s.migratingVM(r.PathValue("id")); ok && (vm.Spec.Host == id.Name || vm.Spec.Migration.Target == id.Name) {
		return id.Name
	}
	return ""
}

func (s *Server) putAgentMigration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var m api.AgentMigration
	if err := decodeJSON(w, r, &m, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	vm, ok := s.migratingVM(id)
	if !ok {
		s.writeError(w, r, api.NotFound("migration", id))
		return
	}
	switch m.State {
	case api.IncomingListening, api.IncomingRunning, api.IncomingFailed:
	default:
		s.writeError(w, r, api.Invalid("state", "must be %s, %s or %s, not %q", api.IncomingListening, api.IncomingRunning, api.IncomingFailed, m.State))
		return
	}
	m.Operation, m.VM, m.Source, m.Target = id, vm.Key(), vm.Spec.Host, vm.Spec.Migration.Target
	var err error
	if cur, ok := s.migrations.Get(id); ok {
		_, err = s.migrations.Update(r.Context(), id, &m, cur.Version)
	} else {
		_, err = s.migrations.Create(r.Context(), id, &m)
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("recording migration %s: %w", id, err))
		return
	}
	out, _ := s.migrations.Get(id)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAgentMigration(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, ok := s.migrations.Get(id)
	if _, migrating := s.migratingVM(id); !ok || !migrating {
		s.writeError(w, r, api.NotFound("migration", id))
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// migrateVM queues a live migration of a running VM, or the move of a
// stopped one: to the host the request names, or to the scheduler's
// choice. The target's room is
// admitted as a create's, and held until the migration ends.
func (s *Server) migrateVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMMigrate
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	if err := s.checkMigration(vm, req.Host); err != nil {
		s.writeError(w, r, err)
		return
	}
	target, _, err := s.ctl.Placer.Migrate(r.Context(), vm, req.Host)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	admit := func(ctx context.Context, vm *api.VM) ([]store.Op, error) {
		if err := s.checkMigration(vm, target); err != nil {
			return nil, err
		}
		_, conds, err := s.ctl.Placer.Migrate(ctx, vm, target)
		return conds, err
	}
	op, _, err := s.ctl.Ops.SubmitWith(r.Context(), vm.Key(), api.OpVMMigrate, api.VMMigrate{Host: target}, ops.SubmitOptions{Admit: admit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

// checkMigration refuses, with what to do instead, a migration that
// cannot be: a VM paused or not Polyvisor's, one already migrating, one
// with a volume that cannot follow it (checkVolumesMove), a target that
// is unknown, the VM's own host, a provider's, cordoned or not ready.
// Room is the placer's to judge. A running VM migrates live, a stopped
// one is moved with its disks copied.
func (s *Server) checkMigration(vm *api.VM, target string) error {
	switch {
	case vm.Spec.Provider != nil:
		return api.Unprocessable("vm %q belongs to provider %q, which decides where it runs", vm.Name, vm.Spec.Provider.Name)
	case vm.Spec.Migration != nil:
		return api.Conflict("vm %q is already migrating to host %q (operation %s)", vm.Name, vm.Spec.Migration.Target, vm.Spec.Migration.Operation)
	case vm.Spec.PowerState == api.PowerPaused:
		return api.Unprocessable("vm %q is paused: the qemu driver migrates running vms live and moves stopped ones, not paused ones; resume or stop it first", vm.Name)
	}
	if err := s.checkVolumesMove(vm, target); err != nil {
		return err
	}
	if target == "" {
		return nil
	}
	h, ok := s.hosts.Get(target)
	switch {
	case !ok:
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q does not exist", target)}
	case h.Provider != nil:
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q belongs to provider %q: vms migrate only between Polyvisor's own hosts", target, h.Provider.Name)}
	case target == vm.Spec.Host:
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("vm %q already runs on host %q", vm.Name, target)}
	case h.Spec.Unschedulable:
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q is cordoned: no vm is placed or migrated onto it (uncordon it first)", target)}
	case h.Status.State != api.HostReady:
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q is not ready", target)}
	}
	return nil
}

// checkVolumesMove refuses to move a VM whose volumes cannot follow it:
// a volume still being plugged in or out, one in a dir pool (its file is
// on the VM's host alone), one in a shared pool the target does not see.
// A shared or nbd pool's volume is not copied: the target opens the same
// file or export.
func (s *Server) checkVolumesMove(vm *api.VM, target string) error {
	for _, name := range volumeNames(vm) {
		if !slices.ContainsFunc(vm.Spec.Volumes, func(a api.VolumeAttachment) bool { return a.Volume == name }) {
			return api.Conflict("vm %q is unplugging volume %q: migrate it once its host has let the volume go", vm.Name, name)
		}
		v, ok := s.volumes.Get(api.Key(vm.Project, name))
		if !ok {
			return api.Conflict("vm %q names volume %q, which no longer exists", vm.Name, name)
		}
		pool, ok := s.pools.Get(v.Spec.Pool)
		switch {
		case !ok:
			return api.Unprocessable("vm %q has volume %q in pool %q, which no longer exists", vm.Name, name, v.Spec.Pool)
		case !api.SharedStorage(pool.Spec.Kind):
			return &api.Error{Code: api.CodeUnprocessable, Field: "volumes", Message: fmt.Sprintf(
				"vm %q has volume %q in %s pool %q, whose file is on host %q alone: it cannot follow the vm to another host (detach it first, or use a shared pool)",
				vm.Name, name, pool.Spec.Kind, pool.Name, v.Spec.Host)}
		case target != "" && !slices.Contains(pool.Spec.Hosts, target):
			return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf(
				"host %q does not see pool %q of vm %q's volume %q", target, pool.Name, vm.Name, name)}
		}
	}
	return nil
}

// volumeNames are the volumes in a VM's spec or still plugged in.
func volumeNames(vm *api.VM) []string {
	var names []string
	for _, a := range vm.Spec.Volumes {
		names = append(names, a.Volume)
	}
	for _, a := range vm.Status.Volumes {
		if !slices.Contains(names, a.Volume) {
			names = append(names, a.Volume)
		}
	}
	return names
}

// drainHost cordons a host and records a host.drain operation whose
// result lists the VMs placed on it, each pending. The leader's drain
// controller (package drain) then moves them away one after another,
// each to the scheduler's choice: running ones live, stopped ones with
// their disks copied; paused ones stay, with why. The operation's result
// (api.HostDrain) says what became of each VM as it goes; cancelling it,
// through any server, cancels the move under way.
func (s *Server) drainHost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	requestOf(r).resource = api.Ref{Kind: "host", Name: name}
	h, err := s.agentHost(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = h.UID
	if running := s.ops.Select(func(o *api.Operation) bool {
		return o.Kind == api.OpHostDrain && !o.Done() && o.Target.Name == name
	}); len(running) > 0 {
		s.writeError(w, r, api.Conflict("host %q is being drained already (operation %s)", name, running[0].ID))
		return
	}
	vms := listAll(s.vms, func(vm *api.VM) bool { return vm.Spec.Host == name && vm.Spec.Deletion == nil })
	slices.SortFunc(vms, func(a, b *api.VM) int { return cmpString(a.Key(), b.Key()) })
	res := api.HostDrain{Host: name, Moves: []api.DrainMove{}}
	for _, vm := range vms {
		res.Moves = append(res.Moves, api.DrainMove{VM: vm.Key(), Outcome: drain.Pending})
	}
	op := ops.NewOperation(api.OpHostDrain, api.Ref{Kind: "host", Name: name, UID: h.UID}, nil)
	op.Status, op.StartedAt = api.OpRunning, time.Now().UTC()
	op.Message = fmt.Sprintf("draining %d vm(s)", len(vms))
	op.Result, _ = json.Marshal(res)
	if _, err := s.setUnschedulable(r.Context(), name, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.ops.Create(r.Context(), op.ID, op); err != nil {
		s.writeError(w, r, fmt.Errorf("recording the drain of host %q: %w", name, err))
		return
	}
	created, _ := s.ops.Get(op.ID)
	writeOperation(w, created)
}

// newDrain makes the leader's drain controller.
func (s *Server) newDrain() *drain.Controller {
	return drain.New(drain.Config{Ops: s.ops, VMs: s.vms, Mover: drainMover{s}, Logger: s.log})
}

// drainMover moves a drained host's VMs as `vm migrate` without a host
// does, its operation stored through the leader's writer.
type drainMover struct{ s *Server }

func (m drainMover) Check(vm *api.VM) error { return m.s.checkMigration(vm, "") }

func (m drainMover) Start(ctx context.Context, w store.Writer, vm *api.VM) (string, *api.Operation, error) {
	s := m.s
	target, _, err := s.ctl.Placer.Migrate(ctx, vm, "")
	if err != nil {
		return "", nil, err
	}
	admit := func(ctx context.Context, vm *api.VM) ([]store.Op, error) {
		if err := s.checkMigration(vm, target); err != nil {
			return nil, err
		}
		_, conds, err := s.ctl.Placer.Migrate(ctx, vm, target)
		return conds, err
	}
	op, _, err := s.ctl.Ops.SubmitWith(ctx, vm.Key(), api.OpVMMigrate, api.VMMigrate{Host: target}, ops.SubmitOptions{Admit: admit, Writer: w})
	if err != nil {
		return "", nil, err
	}
	return target, op, nil
}

func (m drainMover) Wait(ctx context.Context, id string, d time.Duration) (*api.Operation, error) {
	return m.s.ctl.Ops.Wait(ctx, id, d)
}

func (m drainMover) Cancel(ctx context.Context, op *api.Operation) error {
	return m.s.ctl.Ops.Cancel(ctx, op)
}
