package server

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) projectRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/projects", rule: auth.User, handler: s.listProjects},
		{method: "POST", path: "/v1/projects", rule: auth.Superadmin, handler: s.createProject},
		{method: "GET", path: "/v1/projects/{project}", rule: auth.In(auth.PermProjectRead), handler: s.getProject},
		{method: "PATCH", path: "/v1/projects/{project}", rule: auth.In(auth.PermProjectUpdate), handler: s.updateProject},
		{method: "DELETE", path: "/v1/projects/{project}", rule: auth.Superadmin, handler: s.deleteProject},
		{method: "GET", path: "/v1/projects/{project}/members", rule: auth.In(auth.PermProjectRead), handler: s.listMembers},
		{method: "PUT", path: "/v1/projects/{project}/members/{user}", rule: auth.In(auth.PermMemberManage), handler: s.setMember},
		{method: "DELETE", path: "/v1/projects/{project}/members/{user}", rule: auth.In(auth.PermMemberManage), handler: s.removeMember},
		{method: "GET", path: "/v1/projects/{project}/quota", rule: auth.In(auth.PermProjectRead), handler: s.getQuota},
		{method: "PUT", path: "/v1/projects/{project}/quota", rule: auth.Superadmin, handler: s.setQuota},
	}
}

// projectView is a project as the API shows it: with its usage.
func (s *Server) projectView(p *api.Project) api.Project {
	out := *p
	out.Status.Usage = s.projectUsage(p.Name)
	return out
}

// listProjects lists the projects the caller belongs to (all of them for a
// superadmin).
func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.projects, func(q listQuery, p *api.Project) bool {
		return s.can(r, p.Name, auth.PermProjectRead) && q.sel.Matches(p.Labels)
	}, s.projectView)
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projects.Get(r.PathValue("project"))
	if !ok {
		s.writeError(w, r, api.NotFound("project", r.PathValue("project")))
		return
	}
	writeJSON(w, http.StatusOK, s.projectView(p))
}

func validateLeaseSettings(maxLease, grace int64) error {
	if maxLease < 0 || maxLease > maxLeaseSeconds {
		return api.Invalid("maxLeaseSeconds", "must be from 0 (no maximum) to %d, not %d", maxLeaseSeconds, maxLease)
	}
	if grace < 0 || grace > maxLeaseSeconds {
		return api.Invalid("leaseGraceSeconds", "must be from 0 (the default, one day) to %d, not %d", maxLeaseSeconds, grace)
	}
	return nil
}

func validateQuota(q api.Quota) error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"quota.vcpus", q.VCPUs}, {"quota.memoryMiB", q.MemoryMiB}, {"quota.diskMiB", q.DiskMiB}, {"quota.vms", q.VMs},
		{"quota.imageStorageMiB", q.ImageStorageMiB},
		{"quota.networks", q.Networks}, {"quota.ports", q.Ports}, {"quota.floatingIPs", q.FloatingIPs}} {
		if f.v != nil && *f.v < 0 {
			return api.Invalid(f.name, "must be 0 or more (leave it out for no limit), not %d", *f.v)
		}
	}
	return nil
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	var req api.ProjectCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource = api.Ref{Kind: "project", Name: req.Name}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		s.writeError(w, r, api.Invalid("labels."+key, "%v", err))
		return
	}
	if err := validateQuota(req.Quota); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateLeaseSettings(req.MaxLeaseSeconds, req.LeaseGraceSeconds); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validHA("haDefault", req.HADefault); err != nil {
		s.writeError(w, r, err)
		return
	}
	now := time.Now().UTC()
	p := &api.Project{
		Meta: api.Meta{Name: req.Name, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.ProjectSpec{Description: req.Description, Quota: req.Quota,
			MaxLeaseSeconds: req.MaxLeaseSeconds, LeaseGraceSeconds: req.LeaseGraceSeconds, HADefault: req.HADefault},
	}
	if err := s.createProjectWithGroup(r.Context(), p); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = api.Conflict("project %q already exists", p.Name)
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.projectView(p))
}

// updateProject changes a project's settings through fn, retrying on a
// concurrent change.
func (s *Server) updateProject(w http.ResponseWriter, r *http.Request) {
	var req api.ProjectUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Like the quota, the lease policy binds the project's own admins.
	if (req.MaxLeaseSeconds != nil || req.LeaseGraceSeconds != nil) && !auth.FromContext(r.Context()).IsSuperadmin() {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: "only a superadmin changes a project's lease settings"})
		return
	}
	p, err := s.changeProject(r, func(p *api.Project) error {
		if req.Description != nil {
			p.Spec.Description = *req.Description
		}
		if req.MaxLeaseSeconds != nil {
			p.Spec.MaxLeaseSeconds = *req.MaxLeaseSeconds
		}
		if req.LeaseGraceSeconds != nil {
			p.Spec.LeaseGraceSeconds = *req.LeaseGraceSeconds
		}
		if req.HADefault != nil {
			if err := validHA("haDefault", *req.HADefault); err != nil {
				return err
			}
			p.Spec.HADefault = *req.HADefault
		}
		return validateLeaseSettings(p.Spec.MaxLeaseSeconds, p.Spec.LeaseGraceSeconds)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.projectView(p))
}

// changeProject applies fn to the project the path names and stores it.
func (s *Server) changeProject(r *http.Request, fn func(*api.Project) error) (*api.Project, error) {
	name := r.PathValue("project")
	for range 10 {
		cur, ok := s.projects.Get(name)
		if !ok {
			return nil, api.NotFound("project", name)
		}
		next := store.Clone(cur)
		if err := fn(next); err != nil {
			return nil, err
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.projects.Update(r.Context(), name, next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			return nil, fmt.Errorf("updating project %q: %w", name, err)
		}
		return next, nil
	}
	return nil, api.Conflict("project %q is being changed concurrently", name)
}

// deleteProject removes an empty project. The default project stays.
func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("project")
	p, ok := s.projects.Get(name)
	if !ok {
		s.writeError(w, r, api.NotFound("project", name))
		return
	}
	if name == api.DefaultProject {
		s.writeError(w, r, api.Conflict("the default project cannot be deleted"))
		return
	}
	var holds []string
	if n := len(listAll(s.vms, func(vm *api.VM) bool { return vm.Project == name })); n > 0 {
		holds = append(holds, fmt.Sprintf("%d vms", n))
	}
	if n := len(listAll(s.images, func(img *api.Image) bool { return img.Project == name })); n > 0 {
		holds = append(holds, fmt.Sprintf("%d images", n))
	}
	if n := len(listAll(s.providers, func(pr *api.Provider) bool { return pr.Project == name })); n > 0 {
		holds = append(holds, fmt.Sprintf("%d providers", n))
	}
	if n := len(listAll(s.vmMigrations, func(m *api.VMMigration) bool { return m.Project == name })); n > 0 {
		holds = append(holds, fmt.Sprintf("%d migrations", n))
	}
	holds = append(holds, s.net.m.ProjectHolds(name)...)
	if len(holds) > 0 {
		s.writeError(w, r, api.Conflict("project %q still holds %s: delete them first", name, strings.Join(holds, ", ")))
		return
	}
	// A migration recorded since the check above fails the delete, so
	// that no record outlives its project for a new one of its name.
	if err := s.deleteProjectWithGroup(r.Context(), p, s.vmMigrations.OpNoneUnder(name+"/")); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = api.Conflict("project %q still holds migrations: delete them first", name)
		}
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func membersOf(p *api.Project) []api.Member {
	out := make([]api.Member, 0, len(p.Spec.Members))
	for u, role := range p.Spec.Members {
		out = append(out, api.Member{User: u, Role: role})
	}
	slices.SortFunc(out, func(a, b api.Member) int { return strings.Compare(a.User, b.User) })
	return out
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projects.Get(r.PathValue("project"))
	if !ok {
		s.writeError(w, r, api.NotFound("project", r.PathValue("project")))
		return
	}
	writeJSON(w, http.StatusOK, api.List[api.Member]{Items: membersOf(p)})
}

// setMember gives a user a role in the project. Its answer tells a project
// admin whether a user name exists (404 for an unknown one): adding a
// member names a user, and hiding that would mean accepting members for
// names nobody holds, which a later user of the name would inherit. User
// names are not secrets here (member lists and audit records show them);
// each try needs member.manage, is rate limited and audited.
func (s *Server) setMember(w http.ResponseWriter, r *http.Request) {
	var req api.MemberSet
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	user := r.PathValue("user")
	if !auth.ValidRole(req.Role) {
		s.writeError(w, r, api.Invalid("role", "must be one of %s, not %q", strings.Join(api.Roles, ", "), req.Role))
		return
	}
	if _, ok := s.users.Get(user); !ok {
		s.writeError(w, r, api.NotFound("user", user))
		return
	}
	p, err := s.changeProject(r, func(p *api.Project) error {
		if p.Spec.Members == nil {
			p.Spec.Members = map[string]string{}
		}
		p.Spec.Members[user] = req.Role
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Member{User: user, Role: p.Spec.Members[user]})
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	_, err := s.changeProject(r, func(p *api.Project) error {
		if _, ok := p.Spec.Members[user]; !ok {
			return api.NotFound("member", user)
		}
		delete(p.Spec.Members, user)
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getQuota(w http.ResponseWriter, r *http.Request) {
	p, ok := s.projects.Get(r.PathValue("project"))
	if !ok {
		s.writeError(w, r, api.NotFound("project", r.PathValue("project")))
		return
	}
	writeJSON(w, http.StatusOK, api.QuotaReport{Project: p.Name, Limits: p.Spec.Quota, Usage: s.projectUsage(p.Name)})
}

// setQuota replaces a project's limits. A limit below the current usage is
// allowed: nothing is taken away, but nothing more can be added.
func (s *Server) setQuota(w http.ResponseWriter, r *http.Request) {
	var q api.Quota
	if err := decodeJSON(w, r, &q, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateQuota(q); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A create or resize deciding from the old quota meanwhile fails on
	// the project's version and decides again.
	p, err := s.changeProject(r, func(p *api.Project) error {
		p.Spec.Quota = q
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.QuotaReport{Project: p.Name, Limits: p.Spec.Quota, Usage: s.projectUsage(p.Name)})
}
