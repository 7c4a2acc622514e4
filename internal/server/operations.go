package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/drain"
)

const maxWait = 5 * time.Minute

func (s *Server) operationRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/operations", rule: auth.In(auth.PermOperationRead), handler: s.listOperations},
		{method: "GET", path: "/v1/operations/{id}", rule: auth.In(auth.PermOperationRead), handler: s.getOperation, projectOf: s.operationProject, notFound: notFoundAs("operation", "id")},
		{method: "DELETE", path: "/v1/operations/{id}", rule: auth.In(auth.PermOperationCancel), handler: s.cancelOperation, projectOf: s.operationProject, notFound: notFoundAs("operation", "id")},
	}
}

var opStatuses = []string{api.OpPending, api.OpRunning, api.OpSucceeded, api.OpFailed, api.OpCancelled}

func (s *Server) listOperations(w http.ResponseWriter, r *http.Request) {
	if st := r.URL.Query().Get("state"); st != "" && !slices.Contains(opStatuses, st) {
		s.writeError(w, r, api.Invalid("state", "must be one of %s, not %q", strings.Join(opStatuses, ", "), st))
		return
	}
	serveList(s, w, r, s.ops, func(q listQuery, o *api.Operation) bool {
		return s.inProject(r, o.Target.Project, auth.PermOperationRead) && (q.State == "" || o.Status == q.State)
	}, nil)
}

func (s *Server) getOperation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	op, err := s.ctl.Ops.Lookup(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if hiddenOp(r, op) {
		s.writeError(w, r, api.NotFound("operation", id))
		return
	}
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxWait {
			s.writeError(w, r, api.Invalid("wait", "must be a duration up to %s such as 30s, not %q", maxWait, v))
			return
		}
		op, err := s.ctl.Ops.Wait(r.Context(), id, d)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, op)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

// cancelOperation cancels a pending VM operation or a running image import.
func (s *Server) cancelOperation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	op, ok := s.ops.Get(id)
	if !ok || hiddenOp(r, op) {
		s.writeError(w, r, api.NotFound("operation", id))
		return
	}
	if op.Done() {
		s.writeError(w, r, api.Conflict("operation %s already %s", id, op.Status))
		return
	}
	switch {
	case op.Kind == api.OpImageImport:
		if !s.ctl.Imports.Cancel(id) {
			s.writeError(w, r, api.Conflict("operation %s is not running here", id))
			return
		}
		op, _ = s.ctl.Ops.Wait(r.Context(), id, 30*time.Second)
	case op.Kind == api.OpHostDrain:
		// The leader runs the drain: it sees the cancel in the store,
		// whichever server took it.
		if err := drain.RequestCancel(r.Context(), s.ops, s.st, id); err != nil {
			s.writeError(w, r, fmt.Errorf("cancelling drain %s: %w", id, err))
			return
		}
		op, _ = s.ctl.Ops.Wait(r.Context(), id, 2*time.Minute)
	case op.Target.Kind == "vm":
		if err := s.ctl.Ops.Cancel(r.Context(), op); err != nil {
			s.writeError(w, r, err)
			return
		}
		op, _ = s.ctl.Ops.Wait(r.Context(), id, 0)
	default:
		s.writeError(w, r, api.Conflict("operation %s cannot be cancelled", id))
		return
	}
	writeJSON(w, http.StatusOK, op)
}

// hiddenOp tells whether the operation is a host's (a drain), which only
// superadmins see: it belongs to no project.
func hiddenOp(r *http.Request, op *api.Operation) bool {
	return op.Target.Kind == "host" && op.Target.Project == "" && !auth.FromContext(r.Context()).IsSuperadmin()
}

// operationProject is the project of the operation a route names: an
// operation is seen and acted on in its target's project, whatever the
// request's ?project= says. An unknown id is left to the handler (404).
func (s *Server) operationProject(r *http.Request) string {
	if op, ok := s.ops.Get(r.PathValue("id")); ok && op.Target.Project != "" {
		return op.Target.Project
	}
	return ""
}
