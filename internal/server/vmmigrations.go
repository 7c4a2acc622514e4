package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Bounds of a VM migration record.
const (
	maxMigrationVMs      = api.MaxMigrationVMs
	maxMigrationParallel = 32
	// maxProjectMigrations bounds the records a project keeps, so that a
	// member cannot grow the store without limit: finished ones are
	// deleted (DELETE /v1/migrations/{name}) to make room.
	maxProjectMigrations = 100
)

// vmMigrationRoutes: the records of VMs moved from other hypervisors.
// The copy runs where `polyvisor migration run` runs (it reads the
// sources); it reports here, and the VMs it makes go through the image
// and VM routes like any other.
func (s *Server) vmMigrationRoutes() []route {
	read, create, del := auth.In(auth.PermVMRead), auth.In(auth.PermVMCreate), auth.In(auth.PermVMDelete)
	return []route{
		{method: "GET", path: "/v1/migrations", rule: read, handler: s.listVMMigrations},
		{method: "POST", path: "/v1/migrations", rule: create, handler: s.createVMMigration},
		{method: "GET", path: "/v1/migrations/{name}", rule: read, handler: s.getVMMigration},
		{method: "PUT", path: "/v1/migrations/{name}/status", rule: create, handler: s.putVMMigrationStatus},
		{method: "POST", path: "/v1/migrations/{name}/cancel", rule: create, handler: s.cancelVMMigration},
		{method: "DELETE", path: "/v1/migrations/{name}", rule: del, handler: s.deleteVMMigration},
	}
}

func (s *Server) listVMMigrations(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.vmMigrations, func(q listQuery, m *api.VMMigration) bool {
		return s.inProject(r, m.Project, auth.PermVMRead) && q.sel.Matches(m.Labels) &&
			(q.State == "" || m.Status.State == q.State)
	}, nil)
}

func (s *Server) vmMigrationOf(r *http.Request) (*api.VMMigration, error) {
	m, ok := s.vmMigrations.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		return nil, api.NotFound("migration", r.PathValue("name"))
	}
	return m, nil
}

func (s *Server) getVMMigration(w http.ResponseWriter, r *http.Request) {
	m, err := s.vmMigrationOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// checkVMMigration checks a create; every error names its field.
func (s *Server) checkVMMigration(req *api.VMMigrationCreate) error {
	if err := validateName("name", req.Name); err != nil {
		return err
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		return api.Invalid("labels."+key, "%v", err)
	}
	if req.Source == "" || len(req.Source) > 253 {
		return api.Invalid("source", "is required (at most 253 characters)")
	}
	if req.Host == "" {
		return api.Invalid("host", "is required")
	}
	if _, ok := s.hosts.Get(req.Host); !ok {
		return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q does not exist", req.Host)}
	}
	if req.Parallel < 0 || req.Parallel > maxMigrationParallel {
		return api.Invalid("parallel", "must be from 1 to %d, not %d", maxMigrationParallel, req.Parallel)
	}
	if len(req.VMs) == 0 || len(req.VMs) > maxMigrationVMs {
		return api.Invalid("vms", "must hold 1 to %d VMs, not %d", maxMigrationVMs, len(req.VMs))
	}
	seen := map[string]bool{}
	for i, vm := range req.VMs {
		field := fmt.Sprintf("vms[%d]", i)
		if err := validateName(field+".name", vm.Name); err != nil {
			return err
		}
		if seen[vm.Name] {
			return api.Invalid(field+".name", "VM %q appears twice", vm.Name)
		}
		seen[vm.Name] = true
		if len(vm.SourceName) > 253 {
			return api.Invalid(field+".sourceName", "is over 253 characters")
		}
		if vm.VCPUs < 0 || vm.MemoryMiB < 0 || vm.Disks < 0 || vm.CopyBytes < 0 {
			return api.Invalid(field, "vcpus, memoryMiB, disks and copyBytes must not be negative")
		}
	}
	return nil
}

func (s *Server) createVMMigration(w http.ResponseWriter, r *http.Request) {
	var req api.VMMigrationCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: req.Name, Project: rq.project}
	if err := s.checkVMMigration(&req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Parallel == 0 {
		req.Parallel = 2
	}
	if n := len(listAll(s.vmMigrations, func(m *api.VMMigration) bool { return m.Project == rq.project })); n >= maxProjectMigrations {
		s.writeError(w, r, api.Unprocessable("project %q holds %d migrations, the most it may: delete finished ones first", rq.project, n))
		return
	}
	now := time.Now().UTC()
	m := &api.VMMigration{
		Meta:   api.Meta{Name: req.Name, Project: rq.project, UID: newUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec:   api.VMMigrationSpec{Source: req.Source, Host: req.Host, Parallel: req.Parallel, VMs: req.VMs},
		Status: api.VMMigrationStatus{State: api.VMMigrationPending, RunnerUser: rq.id.Name},
	}
	for _, vm := range req.VMs {
		m.Status.VMs = append(m.Status.VMs, api.VMMigrationVMStatus{Name: vm.Name, State: api.VMMigrationPending})
	}
	key := m.Key()
	p, ok := s.projects.Get(rq.project)
	if !ok {
		s.writeError(w, r, api.NotFound("project", rq.project))
		return
	}
	// Held to the project's version: a record made while its project is
	// deleted fails instead of outliving it.
	if _, err := s.st.Txn(r.Context(), s.projects.OpCheck(p.Name, p.Version), s.vmMigrations.OpCreate(key, m)); err != nil {
		switch {
		case errors.Is(err, store.ErrExists):
			err = api.Conflict("migration %q already exists", req.Name)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			err = api.Conflict("project %q changed meanwhile: try again", rq.project)
		}
		s.writeError(w, r, fmt.Errorf("storing migration %q: %w", req.Name, err))
		return
	}
	m, _ = s.vmMigrations.Get(key)
	writeJSON(w, http.StatusCreated, m)
}

// finalMigration tells whether a migration's state is final.
func finalMigration(state string) bool {
	return state == api.VMMigrationSucceeded || state == api.VMMigrationFailed || state == api.VMMigrationCancelled
}

func validMigrationState(state string) bool {
	return state == api.VMMigrationPending || state == api.VMMigrationRunning || finalMigration(state)
}

// updateVMMigration changes the migration the request names with change,
// again on a conflict.
func (s *Server) updateVMMigration(ctx context.Context, r *http.Request, change func(m *api.VMMigration) error) (*api.VMMigration, error) {
	for attempt := 0; attempt < 10; attempt++ {
		cur, err := s.vmMigrationOf(r)
		if err != nil {
			return nil, err
		}
		next := store.Clone(cur)
		if err := change(next); err != nil {
			return nil, err
		}
		next.UpdatedAt = time.Now().UTC()
		_, err = s.st.Txn(ctx, s.vmMigrations.OpUpdate(next.Key(), next, cur.Version))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storing migration %q: %w", cur.Name, err)
		}
		m, _ := s.vmMigrations.Get(next.Key())
		return m, nil
	}
	return nil, api.Conflict("migration %q keeps changing: try again", r.PathValue("name"))
}

// putVMMigrationStatus is the runner's report. It answers the record, so
// that the runner learns of a cancel.
func (s *Server) putVMMigrationStatus(w http.ResponseWriter, r *http.Request) {
	var st api.VMMigrationStatus
	if err := decodeJSON(w, r, &st, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	if !validMigrationState(st.State) {
		s.writeError(w, r, api.Invalid("state", "%q is not pending, running, succeeded, failed or cancelled", st.State))
		return
	}
	if len(st.Runner) > 253 {
		s.writeError(w, r, api.Invalid("runner", "is over 253 characters"))
		return
	}
	if len(st.Error) > api.MaxMigrationErrorBytes {
		s.writeError(w, r, api.Invalid("error", "is over %d bytes", api.MaxMigrationErrorBytes))
		return
	}
	m, err := s.updateVMMigration(r.Context(), r, func(m *api.VMMigration) error {
		if finalMigration(m.Status.State) {
			return api.Conflict("migration %q has %s", m.Name, m.Status.State)
		}
		// Only the user who recorded it reports, so that no other
		// member ends it with a final state of their choosing; others
		// cancel it.
		if m.Status.RunnerUser != "" && m.Status.RunnerUser != rq.id.Name {
			return api.Conflict("migration %q is run by user %q: only its runner reports to it (cancel it instead)", m.Name, m.Status.RunnerUser)
		}
		st.RunnerUser = m.Status.RunnerUser
		if len(st.VMs) != len(m.Spec.VMs) {
			return api.Invalid("vms", "must report the migration's %d VMs, not %d", len(m.Spec.VMs), len(st.VMs))
		}
		for i, vm := range st.VMs {
			if vm.Name != m.Spec.VMs[i].Name {
				return api.Invalid(fmt.Sprintf("vms[%d].name", i), "is %q, want %q", vm.Name, m.Spec.VMs[i].Name)
			}
			if !validMigrationState(vm.State) || len(vm.Error) > api.MaxMigrationErrorBytes || len(vm.Phase) > 32 || len(vm.Disk) > 253 {
				return api.Invalid(fmt.Sprintf("vms[%d]", i), "state, phase, disk or error is not valid")
			}
		}
		st.ReportedAt = time.Now().UTC()
		m.Status = st
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// cancelVMMigration asks the runner to stop; a migration no runner took
// yet is cancelled at once.
func (s *Server) cancelVMMigration(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	m, err := s.updateVMMigration(r.Context(), r, func(m *api.VMMigration) error {
		if finalMigration(m.Status.State) {
			return api.Conflict("migration %q has %s: nothing to cancel", m.Name, m.Status.State)
		}
		m.Spec.Cancel = true
		m.Generation++
		if m.Status.State == api.VMMigrationPending {
			m.Status.State = api.VMMigrationCancelled
		}
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// deleteVMMigration removes a migration's record. A running one must be
// cancelled first, so that its runner is not left reporting to nothing;
// a runner that died leaves a cancelled-but-running record, which may go.
func (s *Server) deleteVMMigration(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	m, err := s.vmMigrationOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m.Status.State == api.VMMigrationRunning && !m.Spec.Cancel {
		s.writeError(w, r, api.Conflict("migration %q is running: cancel it first", m.Name))
		return
	}
	if _, err := s.st.Txn(r.Context(), s.vmMigrations.OpDelete(m.Key(), m.Version)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			err = api.Conflict("migration %q changed meanwhile: try again", m.Name)
		}
		s.writeError(w, r, fmt.Errorf("deleting migration %q: %w", m.Name, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
