package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
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

// drainWait bounds the wait for one VM's move during a drain.
const drainWait = 16 * time.Minute

// Outcomes of a VM in a drain (api.DrainMove).
const (
	drainPending   = "pending"
	drainMoving    = "moving"
	drainMigrated  = "migrated"
	drainMoved     = "moved"
	drainSkipped   = "skipped"
	drainFailed    = "failed"
	drainCancelled = "cancelled"
)

// drainRuns are the drains this server runs: their cancels by operation.
type drainRuns struct {
	mu      sync.Mutex
	running map[string]context.CancelFunc
	hosts   map[string]string // host -> operation
}

func (d *drainRuns) start(host, op string, cancel context.CancelFunc) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.hosts[host]; ok {
		return cur, false
	}
	if d.running == nil {
		d.running, d.hosts = map[string]context.CancelFunc{}, map[string]string{}
	}
	d.running[op], d.hosts[host] = cancel, op
	return op, true
}

func (d *drainRuns) end(host, op string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.running, op)
	if d.hosts[host] == op {
		delete(d.hosts, host)
	}
}

func (d *drainRuns) cancel(op string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.running[op]
	if ok {
		c()
	}
	return ok
}

// drainHost cordons a host and starts a host.drain operation that moves
// the VMs placed on it away one after another, each to the scheduler's
// choice: running ones live, stopped ones with their disks copied; paused
// ones stay, with why. The operation's result (api.HostDrain) says what
// became of each VM as it goes; cancelling it cancels the move under way.
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
		res.Moves = append(res.Moves, api.DrainMove{VM: vm.Key(), Outcome: drainPending})
	}
	op := ops.NewOperation(api.OpHostDrain, api.Ref{Kind: "host", Name: name, UID: h.UID}, nil)
	op.Status, op.StartedAt = api.OpRunning, time.Now().UTC()
	op.Message = fmt.Sprintf("draining %d vm(s)", len(vms))
	op.Result, _ = json.Marshal(res)
	ctx, cancel := context.WithCancel(s.life)
	if cur, ok := s.drains.start(name, op.ID, cancel); !ok {
		cancel()
		s.writeError(w, r, api.Conflict("host %q is being drained already (operation %s)", name, cur))
		return
	}
	if _, err := s.setUnschedulable(r.Context(), name, true); err != nil {
		s.drains.end(name, op.ID)
		cancel()
		s.writeError(w, r, err)
		return
	}
	if _, err := s.ops.Create(r.Context(), op.ID, op); err != nil {
		s.drains.end(name, op.ID)
		cancel()
		s.writeError(w, r, fmt.Errorf("recording the drain of host %q: %w", name, err))
		return
	}
	created, _ := s.ops.Get(op.ID)
	s.goBG(func() {
		defer s.drains.end(name, op.ID)
		defer cancel()
		s.runDrain(ctx, op.ID, name, vms, res)
	})
	writeOperation(w, created)
}

// runDrain moves each VM in turn and records each step in the
// operation, then ends it: succeeded when every VM left the host.
func (s *Server) runDrain(ctx context.Context, id, host string, vms []*api.VM, res api.HostDrain) {
	log := s.log.With("op", id, "host", host)
	n := len(vms)
	for i, vm := range vms {
		if ctx.Err() != nil {
			for j := i; j < n; j++ {
				res.Moves[j].Outcome = drainCancelled
			}
			break
		}
		res.Moves[i].Outcome = drainMoving
		s.recordDrain(id, res, i*100/max(n, 1), fmt.Sprintf("moving vm %s (%d of %d)", vm.Key(), i+1, n))
		res.Moves[i] = s.drainOne(ctx, vm, host)
		log.Info("drain move", "vm", vm.Key(), "outcome", res.Moves[i].Outcome, "target", res.Moves[i].Target, "err", res.Moves[i].Error)
	}
	status, moved, left := api.OpSucceeded, 0, []string{}
	for _, mv := range res.Moves {
		switch mv.Outcome {
		case drainMigrated, drainMoved:
			moved++
		default:
			left = append(left, mv.VM)
		}
	}
	var cause error
	switch {
	case ctx.Err() != nil:
		status, cause = api.OpCancelled, fmt.Errorf("drain of host %q cancelled: %d of %d vm(s) moved; the host stays cordoned", host, moved, n)
	case len(left) > 0:
		status, cause = api.OpFailed, api.Unprocessable("%d of %d vm(s) did not leave host %q (%s): see each move's error; the host stays cordoned", len(left), n, host, strings.Join(left, ", "))
	}
	s.finishDrain(id, res, status, cause, fmt.Sprintf("%d of %d vm(s) moved", moved, n))
}

// recordDrain writes the drain's result and progress into its operation.
func (s *Server) recordDrain(id string, res api.HostDrain, progress int, msg string) {
	s.updateDrainOp(id, func(op *api.Operation) {
		op.Result, _ = json.Marshal(res)
		op.Progress, op.Message = progress, msg
	})
}

func (s *Server) finishDrain(id string, res api.HostDrain, status string, cause error, msg string) {
	s.updateDrainOp(id, func(op *api.Operation) {
		op.Result, _ = json.Marshal(res)
		op.Status, op.Progress, op.Message, op.FinishedAt = status, 100, msg, time.Now().UTC()
		if cause != nil {
			var ae *api.Error
			if !errors.As(cause, &ae) {
				ae = &api.Error{Code: api.CodeUnprocessable, Message: cause.Error()}
			}
			op.Error = ae
		}
	})
}

// updateDrainOp changes the drain's operation, tried again while another
// write races it; it does not depend on the drain's context.
func (s *Server) updateDrainOp(id string, f func(*api.Operation)) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cur, ok := s.ops.Get(id)
		if !ok {
			return
		}
		op := store.Clone(cur)
		f(op)
		if _, err := s.ops.Update(ctx, id, op, cur.Version); err == nil {
			return
		} else if !errors.Is(err, store.ErrConflict) {
			s.log.Warn("recording a drain's progress", "op", id, "err", err)
			return
		}
	}
}

// cancelDrain cancels a drain this server runs.
func (s *Server) cancelDrain(id string) bool { return s.drains.cancel(id) }

// drainOne moves one VM off a drained host and waits for the outcome. A
// drain cancelled meanwhile cancels the VM's move.
func (s *Server) drainOne(ctx context.Context, vm *api.VM, host string) api.DrainMove {
	mv := api.DrainMove{VM: vm.Key(), Outcome: drainFailed}
	fail := func(err error) api.DrainMove {
		mv.Error = err.Error()
		return mv
	}
	cur, ok := s.vms.Get(vm.Key())
	switch {
	case !ok || cur.Spec.Deletion != nil:
		mv.Outcome, mv.Error = drainSkipped, "the vm was deleted meanwhile"
		return mv
	case cur.Spec.Host != host:
		mv.Outcome, mv.Error, mv.Target = drainSkipped, "the vm left the host meanwhile", cur.Spec.Host
		return mv
	case cur.Spec.PowerState == api.PowerPaused:
		mv.Outcome = drainSkipped
		return fail(s.checkMigration(cur, ""))
	}
	vm = cur
	if err := s.checkMigration(vm, ""); err != nil {
		return fail(err)
	}
	target, _, err := s.ctl.Placer.Migrate(ctx, vm, "")
	if err != nil {
		return fail(err)
	}
	mv.Target = target
	admit := func(ctx context.Context, vm *api.VM) ([]store.Op, error) {
		if err := s.checkMigration(vm, target); err != nil {
			return nil, err
		}
		_, conds, err := s.ctl.Placer.Migrate(ctx, vm, target)
		return conds, err
	}
	op, _, err := s.ctl.Ops.SubmitWith(ctx, vm.Key(), api.OpVMMigrate, api.VMMigrate{Host: target}, ops.SubmitOptions{Admit: admit})
	if err != nil {
		return fail(err)
	}
	mv.Operation = op.ID
	done, err := s.ctl.Ops.Wait(ctx, op.ID, drainWait)
	if err == nil && ctx.Err() != nil && (done == nil || !done.Done()) {
		// The drain was cancelled: so is this VM's move.
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if cur, ok := s.ops.Get(op.ID); ok && !cur.Done() {
			if cerr := s.ctl.Ops.Cancel(cctx, cur); cerr != nil {
				s.log.Warn("cancelling a drained vm's move", "op", op.ID, "err", cerr)
			}
		}
		done, err = s.ctl.Ops.Wait(cctx, op.ID, time.Minute)
	}
	switch {
	case err != nil:
		return fail(err)
	case done == nil || !done.Done():
		return fail(errors.New("the move did not end in time"))
	case done.Status == api.OpCancelled:
		mv.Outcome = drainCancelled
		return mv
	case done.Status != api.OpSucceeded:
		if done.Error != nil {
			return fail(errors.New(done.Error.Message))
		}
		return fail(fmt.Errorf("the move %s", done.Status))
	}
	mv.Outcome = drainMigrated
	if vm.Spec.PowerState == api.PowerStopped {
		mv.Outcome = drainMoved
	}
	return mv
}
