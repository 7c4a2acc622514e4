package server

import (
	"context"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Routes for what some VMs' drivers or providers offer beyond the power
// actions: reconfiguration, snapshots, provider consoles.
func (s *Server) vmExtraRoutes() []route {
	return []route{
		{method: "POST", path: "/v1/vms/{name}/reconfigure", rule: auth.In(auth.PermVMUpdate), handler: s.reconfigureVM},
		{method: "GET", path: "/v1/vms/{name}/snapshots", rule: auth.In(auth.PermVMRead), handler: s.listSnapshots},
		{method: "POST", path: "/v1/vms/{name}/snapshots", rule: auth.In(auth.PermVMUpdate), handler: s.createSnapshot},
		{method: "POST", path: "/v1/vms/{name}/snapshots/{snapshot}/revert", rule: auth.In(auth.PermVMUpdate), handler: s.snapshotAction(api.OpVMSnapshotRevert)},
		{method: "DELETE", path: "/v1/vms/{name}/snapshots/{snapshot}", rule: auth.In(auth.PermVMUpdate), handler: s.snapshotAction(api.OpVMSnapshotDelete)},
		{method: "GET", path: "/v1/vms/{name}/console/ticket", rule: auth.In(auth.PermVMConsole), handler: s.consoleTicket},
	}
}

func (s *Server) reconfigureVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMReconfigure
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	filter := placement.Filter(placement.OwnHosts)
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	limits := s.ownLimits()
	if vm.Spec.Provider != nil {
		filter = placement.ProviderHosts(vm.Spec.Provider.Name, "")
		limits = s.limits(filter)
	}
	switch {
	case req.VCPUs == 0 && req.MemoryMiB == 0:
		s.writeError(w, r, api.Invalid("vcpus", "give vcpus, memoryMiB or both"))
		return
	case req.VCPUs < 0 || (limits.maxVCPUs > 0 && req.VCPUs > limits.maxVCPUs):
		s.writeError(w, r, api.Invalid("vcpus", "must be from 1 to %d, not %d", limits.maxVCPUs, req.VCPUs))
		return
	case req.MemoryMiB != 0 && (req.MemoryMiB < minMemoryMiB || (limits.maxMemoryMiB > 0 && req.MemoryMiB > limits.maxMemoryMiB)):
		s.writeError(w, r, api.Invalid("memoryMiB", "must be from %d to %d, not %d", minMemoryMiB, limits.maxMemoryMiB, req.MemoryMiB))
		return
	}
	ifMatch, err := ifMatchVersion(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// As for a create: the project's quota, then the room on the VM's
	// host, each held in the transaction that queues the resize.
	admit := func(ctx context.Context, vm *api.VM) ([]store.Op, error) {
		conds, err := s.ctl.Quota.AdmitResize(ctx, vm, req)
		if err != nil {
			return nil, err
		}
		placed, err := s.ctl.Placer.Resize(ctx, vm, req)
		if err != nil {
			return nil, err
		}
		return append(conds, placed...), nil
	}
	op, _, err := s.ctl.Ops.SubmitWith(r.Context(), vm.Key(), api.OpVMReconfigure, req, ops.SubmitOptions{IfMatch: ifMatch, Admit: admit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

func (s *Server) providerVM(w http.ResponseWriter, r *http.Request) (*api.VM, bool) {
	return s.vmOf(w, r)
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.providerVM(w, r)
	if !ok {
		return
	}
	if err := s.ctl.Ops.Capable(vm, api.OpVMSnapshotCreate); err != nil {
		s.writeError(w, r, err)
		return
	}
	snaps, err := s.ctl.Estate.Snapshots(r.Context(), vm)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.List[api.Snapshot]{Items: snaps})
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var req api.SnapshotCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Description) > 1024 {
		s.writeError(w, r, api.Invalid("description", "is longer than 1024 bytes"))
		return
	}
	op, err := s.ctl.Ops.Submit(r.Context(), s.vmKey(r), api.OpVMSnapshotCreate, req, 0)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

func (s *Server) snapshotAction(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		snap := r.PathValue("snapshot")
		if err := validateName("snapshot", snap); err != nil {
			s.writeError(w, r, err)
			return
		}
		op, err := s.ctl.Ops.Submit(r.Context(), s.vmKey(r), kind, api.SnapshotCreate{Name: snap}, 0)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeOperation(w, op)
	}
}

// consoleTicket says how to reach the console of a VM whose provider
// serves it (vSphere WebMKS); the console websocket proxies VNC itself.
func (s *Server) consoleTicket(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.providerVM(w, r)
	if !ok {
		return
	}
	if vm.Spec.Provider == nil {
		s.writeError(w, r, api.Unprocessable("vm %q runs on a Polyvisor host: open its console at /v1/vms/%s/console", vm.Name, vm.Name))
		return
	}
	if caps, _ := s.ctl.Estate.Capabilities(vm.Spec.Provider.Name); !caps.Console {
		s.writeError(w, r, api.Unprocessable("provider %q lacks the capability \"console\"", vm.Spec.Provider.Name))
		return
	}
	con, err := s.ctl.Estate.Console(r.Context(), vm)
	if err != nil {
		s.writeError(w, r, estate.MapError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.ConsoleTicket{Type: con.Type, Host: con.Host, Port: con.Port, Ticket: con.Ticket, URL: con.URL})
}
