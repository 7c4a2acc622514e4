package server

import (
	"errors"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// poolRoutes: superadmins define pools; users see the pools granted to
// projects they belong to; agents report each pool's capacity.
func (s *Server) poolRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/pools", rule: auth.User, handler: s.listPools},
		{method: "POST", path: "/v1/pools", rule: auth.Superadmin, handler: s.createPool},
		{method: "GET", path: "/v1/pools/{name}", rule: auth.User, handler: s.getPool},
		{method: "PATCH", path: "/v1/pools/{name}", rule: auth.Superadmin, handler: s.updatePool},
		{method: "DELETE", path: "/v1/pools/{name}", rule: auth.Superadmin, handler: s.deletePool},
		{method: "PUT", path: "/v1/agent/hosts/{name}/pools/{pool}", rule: auth.Host, handler: s.putPoolStatus, hostOf: pathHost},
	}
}

// poolVisible tells whether the caller may see a pool: superadmins see
// every pool, others those granted to a project they may read volumes in.
func (s *Server) poolVisible(r *http.Request, p *api.Pool) bool {
	if auth.FromContext(r.Context()).IsSuperadmin() {
		return true
	}
	return slices.ContainsFunc(p.Spec.Projects, func(pr string) bool { return s.can(r, pr, auth.PermVolumeRead) })
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.pools, func(q listQuery, p *api.Pool) bool {
		return s.poolVisible(r, p) && q.sel.Matches(p.Labels)
	}, nil)
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, ok := s.pools.Get(name)
	if !ok || !s.poolVisible(r, p) {
		s.writeError(w, r, api.NotFound("pool", name))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// validatePool checks a pool's spec; every error names its field.
func (s *Server) validatePool(spec *api.PoolSpec) error {
	switch spec.Kind {
	case api.PoolDir, api.PoolShared, api.PoolNBD:
	case "":
		return api.Invalid("kind", "is required: dir, shared or nbd")
	default:
		return api.Invalid("kind", "%q is not a pool kind: use dir, shared or nbd", spec.Kind)
	}
	if spec.Kind == api.PoolNBD {
		ap, err := netip.ParseAddrPort(spec.Address)
		if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			return api.Invalid("address", "%q is not the IP:port the nbd pool's serving host listens on (e.g. 10.0.0.5:10809)", spec.Address)
		}
		spec.Address = ap.String()
	} else if spec.Address != "" {
		return api.Invalid("address", "is for nbd pools only")
	}
	if spec.Images && spec.Kind != api.PoolShared {
		return api.Invalid("images", "images live in shared pools only, which every host of the pool sees")
	}
	if !filepath.IsAbs(spec.Path) || filepath.Clean(spec.Path) != spec.Path || spec.Path == "/" {
		return api.Invalid("path", "%q must be a clean absolute path other than /", spec.Path)
	}
	if len(spec.Hosts) == 0 {
		return api.Invalid("hosts", "name at least one host")
	}
	if spec.Kind == api.PoolDir && len(spec.Hosts) != 1 {
		return api.Invalid("hosts", "a dir pool is on exactly one host, not %d", len(spec.Hosts))
	}
	for i, h := range spec.Hosts {
		if _, ok := s.hosts.Get(h); !ok {
			return api.Invalid("hosts", "host %q is not known", h)
		}
		if slices.Contains(spec.Hosts[:i], h) {
			return api.Invalid("hosts", "host %q is named twice", h)
		}
	}
	return s.validatePoolProjects(spec.Projects)
}

func (s *Server) validatePoolProjects(projects []string) error {
	for _, p := range projects {
		if _, ok := s.projects.Get(p); !ok {
			return api.Invalid("projects", "project %q does not exist", p)
		}
	}
	return nil
}

func (s *Server) createPool(w http.ResponseWriter, r *http.Request) {
	var req api.PoolCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	spec := api.PoolSpec{Kind: req.Kind, Path: req.Path, Hosts: req.Hosts, Projects: req.Projects, Address: req.Address, Images: req.Images}
	if err := s.validatePool(&spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource = api.Ref{Kind: "pool", Name: req.Name}
	now := time.Now().UTC()
	p := &api.Pool{Meta: api.Meta{Name: req.Name, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now}, Spec: spec}
	if _, err := s.pools.Create(r.Context(), req.Name, p); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = api.Conflict("pool %q already exists", req.Name)
		}
		s.writeError(w, r, err)
		return
	}
	p, _ = s.pools.Get(req.Name)
	writeJSON(w, http.StatusCreated, p)
}

// updatePool changes which projects a pool is granted to. A project that
// loses the grant keeps its volumes there but makes no new ones.
func (s *Server) updatePool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.PoolUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource = api.Ref{Kind: "pool", Name: name}
	for range 20 {
		cur, ok := s.pools.Get(name)
		if !ok {
			s.writeError(w, r, api.NotFound("pool", name))
			return
		}
		next := store.Clone(cur)
		if req.Projects != nil {
			if err := s.validatePoolProjects(*req.Projects); err != nil {
				s.writeError(w, r, err)
				return
			}
			next.Spec.Projects = *req.Projects
		}
		if req.Images != nil {
			if *req.Images && next.Spec.Kind != api.PoolShared {
				s.writeError(w, r, api.Invalid("images", "images live in shared pools only, which every host of the pool sees"))
				return
			}
			next.Spec.Images = *req.Images
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.pools.Update(r.Context(), name, next, cur.Version); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
		next, _ = s.pools.Get(name)
		writeJSON(w, http.StatusOK, next)
		return
	}
	s.writeError(w, r, api.Conflict("pool %q is being updated concurrently", name))
}

// deletePool removes a pool that holds no volumes. Its hosts' reports
// change it meanwhile: a conflict checks again.
func (s *Server) deletePool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	requestOf(r).resource = api.Ref{Kind: "pool", Name: name}
	for range 20 {
		p, ok := s.pools.Get(name)
		if !ok {
			s.writeError(w, r, api.NotFound("pool", name))
			return
		}
		if p.Spec.Images {
			s.writeError(w, r, api.Conflict("pool %q holds the images of its hosts' vms: turn images off first (vms made since keep their disks' backing files there)", name))
			return
		}
		if vs := s.volumes.Select(func(v *api.Volume) bool { return v.Spec.Pool == name }); len(vs) > 0 {
			s.writeError(w, r, api.Conflict("pool %q holds %d volumes (%s first): delete them first", name, len(vs), vs[0].Key()))
			return
		}
		// A volume create writes its pool in its transaction: one made
		// since the check above makes this delete a conflict.
		err := s.pools.Delete(r.Context(), name, p.Version)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeError(w, r, api.Conflict("pool %q is being updated concurrently", name))
}

// putPoolStatus records one host's report on a pool.
func (s *Server) putPoolStatus(w http.ResponseWriter, r *http.Request) {
	host, name := r.PathValue("name"), r.PathValue("pool")
	var st api.PoolHostStatus
	if err := decodeJSON(w, r, &st, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	st.Host = host
	st.UpdatedAt = time.Now().UTC()
	for range 20 {
		cur, ok := s.pools.Get(name)
		if !ok || !slices.Contains(cur.Spec.Hosts, host) {
			s.writeError(w, r, api.NotFound("pool", name))
			return
		}
		next := store.Clone(cur)
		i := slices.IndexFunc(next.Status.Hosts, func(h api.PoolHostStatus) bool { return h.Host == host })
		if i < 0 {
			next.Status.Hosts = append(next.Status.Hosts, st)
		} else {
			next.Status.Hosts[i] = st
		}
		if _, err := s.pools.Update(r.Context(), name, next, cur.Version); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeError(w, r, api.Conflict("pool %q is being updated concurrently", name))
}
