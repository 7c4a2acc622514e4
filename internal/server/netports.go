package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/network"
	"github.com/polyvisor/polyvisor/internal/store"
)

// listPorts lists the project's ports (?network=, ?vm= and ?host= keep
// those of one network, VM or host).
func (s *Server) listPorts(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	network, vm := v.Get("network"), v.Get("vm")
	serveList(s, w, r, s.net.ports, func(q listQuery, p *api.Port) bool {
		if !s.inProject(r, p.Project, auth.PermNetworkRead) || !q.sel.Matches(p.Labels) {
			return false
		}
		if network != "" && p.Spec.Network != network {
			return false
		}
		if vm != "" && p.Spec.VM != api.Key(p.Project, vm) {
			return false
		}
		return q.Host == "" || s.net.m.PortView(p).Status.Host == q.Host
	}, func(p *api.Port) api.Port { return s.net.m.PortView(p) })
}

func (s *Server) getPort(w http.ResponseWriter, r *http.Request) {
	p, ok := s.net.ports.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		s.writeError(w, r, api.NotFound("port", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, s.net.m.PortView(p))
}

func (s *Server) createPort(w http.ResponseWriter, r *http.Request) {
	var req api.PortCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "port", req.Name)
	if err := s.portSecurityOff(r, req.Network, req.PortSecurity); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.net.m.CreatePort(r.Context(), requestOf(r).project, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = p.UID
	writeJSON(w, http.StatusCreated, s.net.m.PortView(p))
}

func (s *Server) updatePort(w http.ResponseWriter, r *http.Request) {
	var req api.PortUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "port", r.PathValue("name"))
	if cur, ok := s.net.ports.Get(api.Key(requestOf(r).project, r.PathValue("name"))); ok {
		if err := s.portSecurityOff(r, cur.Spec.Network, req.PortSecurity); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	p, err := s.net.m.UpdatePort(r.Context(), requestOf(r).project, r.PathValue("name"), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = p.UID
	writeJSON(w, http.StatusOK, s.net.m.PortView(p))
}

func (s *Server) deletePort(w http.ResponseWriter, r *http.Request) {
	setResource(r, "port", r.PathValue("name"))
	if err := s.net.m.DeletePort(r.Context(), requestOf(r).project, r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// portSecurityOff refuses to turn port security off on a port of a
// bridged network to anyone but a superadmin: without it the port could
// send as any address on the hosts' own network.
func (s *Server) portSecurityOff(r *http.Request, network string, on *bool) error {
	if on == nil || *on {
		return nil
	}
	n, ok := s.net.networks.Get(api.Key(requestOf(r).project, network))
	if !ok || n.Spec.Type != api.NetworkBridged || auth.FromContext(r.Context()).IsSuperadmin() {
		return nil
	}
	return &api.Error{Code: api.CodeForbidden, Message: "network " + n.Name + " is bridged: only a superadmin turns port security off on its ports"}
}

// reportPorts records which of its ports a host's agent made.
func (s *Server) reportPorts(w http.ResponseWriter, r *http.Request) {
	var rep api.PortReport
	if err := decodeJSON(w, r, &rep, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	host := r.PathValue("name")
	if h, ok := s.hosts.Get(host); !ok || h.Provider != nil {
		s.writeError(w, r, api.NotFound("host", host))
		return
	}
	n, err := s.net.m.ReportPorts(r.Context(), host, rep)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PortReportResult{Changed: n})
}

// nicDeadline bounds a NIC's hot plug or unplug.
const nicDeadline = 3 * time.Minute

// changeNICs starts a NIC operation on a VM: change makes the VM's new
// NICs and the writes of their ports; the VM's spec, the operation
// (running, done when the host has carried out the new generation) and
// the ports are written in one transaction, under the VM's lock, and the
// operation queued on the VM by the store's watch, as a create's is.
func (s *Server) changeNICs(ctx context.Context, key, kind string, params any, change func(vm *api.VM, nv *api.VM) (commit func(build func(*network.VMPlan) ([]store.Op, error)) error, err error)) (*api.Operation, error) {
	_, name := api.SplitKey(key)
	unlock := s.ctl.Ops.LockVM(key)
	defer unlock()
	for range 10 {
		vm, ok := s.vms.Get(key)
		if !ok {
			return nil, api.NotFound("vm", name)
		}
		switch {
		case vm.Spec.Provider != nil:
			return nil, api.Unprocessable("vm %q belongs to provider %q, which keeps its NICs", name, vm.Spec.Provider.Name)
		case vm.Spec.Deletion != nil:
			return nil, api.Conflict("vm %q is being deleted", name)
		case len(s.ctl.Ops.ActiveOf(key)) > 0:
			return nil, api.Conflict("vm %q has an operation under way; change its NICs once it is done", name)
		}
		nv := store.Clone(vm)
		commit, err := change(vm, nv)
		if err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		nv.Generation++
		nv.UpdatedAt = now
		op := ops.NewOperation(kind, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}, params)
		op.Status, op.StartedAt, op.TargetGeneration, op.Progress = api.OpRunning, now, nv.Generation, 10
		op.Deadline = now.Add(nicDeadline)
		err = commit(func(plan *network.VMPlan) ([]store.Op, error) {
			if plan != nil {
				nv.Spec.NICs = plan.NICs
			}
			return []store.Op{s.vms.OpUpdate(key, nv, vm.Version), s.ops.OpCreate(op.ID, op)}, nil
		})
		if err == nil {
			s.metrics.OpStarted(kind)
			return op, nil
		}
		var ke *store.KeyError
		if errors.As(err, &ke) {
			continue // the VM or a port changed (its host reported): read again
		}
		return nil, err
	}
	return nil, api.Conflict("vm %q is being changed concurrently; try again", name)
}

// addNIC adds a NIC on a network (or an existing port) to a VM: hot
// plugged by its host while it runs.
func (s *Server) addNIC(w http.ResponseWriter, r *http.Request) {
	var nic api.NIC
	if err := decodeJSON(w, r, &nic, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	setResource(r, "vm", r.PathValue("name"))
	key := s.vmKey(r)
	switch {
	case nic.Network == "" && nic.Port == "":
		s.writeError(w, r, api.Invalid("network", "is required: a network of the project, or give port"))
		return
	case nic.Network == api.NetworkUser:
		s.writeError(w, r, api.Invalid("network", "a NIC added to a VM is on a network of the project, not %q", api.NetworkUser))
		return
	case nic.Model != "" && nic.Model != api.NICModelVirtio:
		s.writeError(w, r, api.Invalid("model", "a NIC added to a running VM is virtio; %s is chosen when the VM is made", nic.Model))
		return
	}
	op, err := s.changeNICs(r.Context(), key, api.OpVMNICAdd, nil, func(vm, nv *api.VM) (func(func(*network.VMPlan) ([]store.Op, error)) error, error) {
		if len(vm.Spec.NICs) >= maxNICs {
			return nil, api.Invalid("nics", "vm %q has %d NICs, the most a VM may have", vm.Name, len(vm.Spec.NICs))
		}
		nics := append(slices.Clone(vm.Spec.NICs), nic)
		nv.Spec.NICs = nics
		// The port it makes counts against the project's quota, admitted
		// in the NIC's own transaction.
		asks := api.Usage{Ports: network.PortsMade(nics, len(vm.Spec.NICs))}
		return func(build func(*network.VMPlan) ([]store.Op, error)) error {
			return s.txnWithPorts(r.Context(), rq.project, key, nics, len(vm.Spec.NICs), func(int) string { return "" }, func(plan *network.VMPlan) ([]store.Op, error) {
				conds, err := s.ctl.Quota.Admit(r.Context(), rq.project, asks)
				if err != nil {
					return nil, err
				}
				txn, err := build(plan)
				return append(txn, conds...), err
			})
		}, nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rq.resource.UID, rq.operationID = op.Target.UID, op.ID
	writeOperation(w, op)
}

// removeNIC takes NIC {nic} (its index) off a VM, hot unplugged while it
// runs; its port is deleted if made for the VM, released otherwise.
func (s *Server) removeNIC(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	setResource(r, "vm", r.PathValue("name"))
	i, err := strconv.Atoi(r.PathValue("nic"))
	if err != nil || i < 0 {
		s.writeError(w, r, api.Invalid("nic", "must be the index of a NIC of the VM (0, 1, ...), not %q", r.PathValue("nic")))
		return
	}
	op, err := s.changeNICs(r.Context(), s.vmKey(r), api.OpVMNICRemove, map[string]int{"nic": i}, func(vm, nv *api.VM) (func(func(*network.VMPlan) ([]store.Op, error)) error, error) {
		if i >= len(vm.Spec.NICs) {
			return nil, api.NotFound("nic", strconv.Itoa(i))
		}
		nv.Spec.NICs = slices.Delete(slices.Clone(vm.Spec.NICs), i, i+1)
		release := s.net.m.RemoveNICOps(vm, i)
		return func(build func(*network.VMPlan) ([]store.Op, error)) error {
			txn, err := build(nil)
			if err != nil {
				return err
			}
			_, err = s.st.Txn(r.Context(), append(txn, release...)...)
			return err
		}, nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rq.resource.UID, rq.operationID = op.Target.UID, op.ID
	writeOperation(w, op)
}
