package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/balance"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) balanceRoutes() []route {
	// The balancer sees every host and every project's VMs, and moves
	// them between hosts: it belongs to the installation's superadmins.
	return []route{
		{method: "GET", path: "/v1/balance", rule: auth.Superadmin, handler: s.getBalance},
		{method: "PUT", path: "/v1/balance", rule: auth.Superadmin, handler: s.setBalance},
		{method: "POST", path: "/v1/balance/recommendations/{id}/apply", rule: auth.Superadmin, handler: s.applyBalanceMove},
	}
}

// newBalance makes the leader's balancing controller, reading demand from
// the hosts' utilization history (a VM's mean over the last minutes), or
// from the stats the agents serve for a VM with no history yet.
func (s *Server) newBalance() *balance.Controller {
	return balance.New(balance.Config{
		Hosts: s.hosts, VMs: s.vms, Ops: s.ops, Records: s.balanceRecs,
		Demand: &balance.Recent{
			Read:     s.hostVMsHistory,
			Fallback: &balance.LiveStats{Sample: s.sampleVM},
		},
		Busy:      s.ctl.Ops.Busy,
		Migrate:   s.startMigration,
		Scheduler: s.cfg.Scheduler, Audit: s.auditBalance,
		Tick:   s.cfg.BalanceTick,
		Logger: s.log.With("component", "balance"),
	})
}

// auditBalance records what the balancer did, as the system.
func (s *Server) auditBalance(ctx context.Context, action string, target api.Ref, opID, outcome, msg string) {
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: api.AuditActor{Kind: auth.KindSystem, Name: "balance"}, Action: action, Project: target.Project,
		Resource: target, OperationID: opID, Outcome: outcome, Message: msg,
	})
}

// sampleVM reads one sample of what a running VM uses from its host's
// agent, as GET /v1/vms/{name}/stats does.
func (s *Server) sampleVM(ctx context.Context, vm *api.VM) (api.VMStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, release, err := s.streams.open(ctx, vm.Spec.Host, api.StreamRequest{VM: vm.Key(), Console: "stats"}, s.forwardStream)
	if err != nil {
		return api.VMStats{}, err
	}
	defer release()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var st api.VMStats
	if err := json.NewDecoder(io.LimitReader(conn, 4096)).Decode(&st); err != nil {
		return api.VMStats{}, fmt.Errorf("reading a sample from host %s: %w", strconv.Quote(vm.Spec.Host), err)
	}
	return st, nil
}

// startMigration queues a live migration of the VM with key to target,
// with the checks and admission of POST /v1/vms/{name}/migrate, stored
// through w (nil: the server's writer).
func (s *Server) startMigration(ctx context.Context, w store.Writer, key, target string) (*api.Operation, error) {
	vm, ok := s.vms.Get(key)
	if !ok {
		_, name := api.SplitKey(key)
		return nil, api.NotFound("vm", name)
	}
	if err := s.checkMigration(vm, target); err != nil {
		return nil, err
	}
	if _, _, err := s.ctl.Placer.Migrate(ctx, vm, target); err != nil {
		return nil, err
	}
	admit := func(ctx context.Context, vm *api.VM) ([]store.Op, error) {
		if err := s.checkMigration(vm, target); err != nil {
			return nil, err
		}
		_, conds, err := s.ctl.Placer.Migrate(ctx, vm, target)
		return conds, err
	}
	op, _, err := s.ctl.Ops.SubmitWith(ctx, key, api.OpVMMigrate, api.VMMigrate{Host: target}, ops.SubmitOptions{Admit: admit, Writer: w})
	return op, err
}

// balanceState is the balancer's settings and its last cycle, as stored.
func (s *Server) balanceState() api.Balance {
	out := api.Balance{Settings: balance.Settings(s.balanceRecs), Recommendations: []api.BalanceMove{}}
	if rec, ok := s.balanceRecs.Get(balance.StatusKey); ok {
		out.LastCycle = rec.Cycle
		if rec.Moves != nil && out.Settings.Mode != api.BalanceOff {
			out.Recommendations = rec.Moves
		}
	}
	return out
}

func (s *Server) getBalance(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.balanceState())
}

// setBalance replaces the balance settings; the leader's controller runs
// a cycle with them at once. The audit record says what they became.
func (s *Server) setBalance(w http.ResponseWriter, r *http.Request) {
	var req api.BalanceSettings
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Mode == "" {
		s.writeError(w, r, api.Invalid("mode", "is required: %s, %s or %s", api.BalanceOff, api.BalanceAdvise, api.BalanceAutomatic))
		return
	}
	if err := balance.Validate(req); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "balance", Name: balance.SettingsKey}
	for range 10 {
		cur, ok := s.balanceRecs.Get(balance.SettingsKey)
		var err error
		if ok {
			_, err = s.balanceRecs.Update(r.Context(), balance.SettingsKey, &balance.Record{Settings: &req}, cur.Version)
		} else {
			_, err = s.balanceRecs.Create(r.Context(), balance.SettingsKey, &balance.Record{Settings: &req})
		}
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			s.writeError(w, r, fmt.Errorf("storing the balance settings: %w", err))
			return
		}
		set := balance.Settings(s.balanceRecs)
		rq.message = fmt.Sprintf("mode=%s aggressiveness=%d maxMoves=%d intervalSeconds=%d cooldownSeconds=%d hotspotThreshold=%v powerSaving=%v",
			set.Mode, set.Aggressiveness, set.MaxMoves, set.IntervalSeconds, set.CooldownSeconds, set.HotspotThreshold, set.PowerSaving)
		s.log.Info("balance settings changed", "by", rq.id.Name, "settings", rq.message)
		writeJSON(w, http.StatusOK, s.balanceState())
		return
	}
	s.writeError(w, r, api.Conflict("the balance settings are being changed concurrently"))
}

// applyBalanceMove carries out one current recommendation as a migrate
// operation. A recommendation the VM has since left behind (it moved or
// is busy) is refused with 409, nothing started.
func (s *Server) applyBalanceMove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "balance-recommendation", Name: id}
	var mv *api.BalanceMove
	for _, m := range s.balanceState().Recommendations {
		if m.ID == id {
			mv = &m
			break
		}
	}
	if mv == nil {
		s.writeError(w, r, api.NotFound("balance recommendation", id))
		return
	}
	project, name := api.SplitKey(mv.VM)
	rq.resource = api.Ref{Kind: "vm", Name: name, Project: project}
	vm, ok := s.vms.Get(mv.VM)
	switch {
	case !ok:
		s.writeError(w, r, api.Conflict("vm %q of the recommendation no longer exists", mv.VM))
		return
	case vm.Spec.Host != mv.From:
		s.writeError(w, r, api.Conflict("vm %q runs on host %q now, not %q: the recommendation is out of date", mv.VM, vm.Spec.Host, mv.From))
		return
	case s.ctl.Ops.Busy(mv.VM):
		s.writeError(w, r, api.Conflict("vm %q has operations in flight: the recommendation waits for the next cycle", mv.VM))
		return
	}
	rq.resource.UID = vm.UID
	op, err := s.startMigration(r.Context(), nil, mv.VM, mv.To)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rq.message = "balancing: " + mv.Reason
	writeOperation(w, op)
}
