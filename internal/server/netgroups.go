package server

import (
	"net/http"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.net.groups, func(q listQuery, g *api.SecurityGroup) bool {
		return s.inProject(r, g.Project, auth.PermNetworkRead) && q.sel.Matches(g.Labels)
	}, nil)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	g, ok := s.net.groups.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		s.writeError(w, r, api.NotFound("security group", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	var req api.SecurityGroupCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "security-group", req.Name)
	g, err := s.net.m.CreateSecurityGroup(r.Context(), requestOf(r).project, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = g.UID
	writeJSON(w, http.StatusCreated, g)
}

// groupChanged answers a change to a security group.
func (s *Server) groupChanged(w http.ResponseWriter, r *http.Request, g *api.SecurityGroup, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = g.UID
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request) {
	var req api.SecurityGroupUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "security-group", r.PathValue("name"))
	g, err := s.net.m.UpdateSecurityGroup(r.Context(), requestOf(r).project, r.PathValue("name"), req)
	s.groupChanged(w, r, g, err)
}

func (s *Server) addRules(w http.ResponseWriter, r *http.Request) {
	var req api.SecurityGroupRules
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "security-group", r.PathValue("name"))
	g, err := s.net.m.AddRules(r.Context(), requestOf(r).project, r.PathValue("name"), req.Rules)
	s.groupChanged(w, r, g, err)
}

func (s *Server) removeRule(w http.ResponseWriter, r *http.Request) {
	setResource(r, "security-group", r.PathValue("name"))
	requestOf(r).message = "rule " + r.PathValue("id")
	g, err := s.net.m.RemoveRule(r.Context(), requestOf(r).project, r.PathValue("name"), r.PathValue("id"))
	s.groupChanged(w, r, g, err)
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	setResource(r, "security-group", r.PathValue("name"))
	if err := s.net.m.DeleteSecurityGroup(r.Context(), requestOf(r).project, r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listFloatingIPs(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.net.fips, func(q listQuery, f *api.FloatingIP) bool {
		return s.inProject(r, f.Project, auth.PermNetworkRead) && q.sel.Matches(f.Labels)
	}, func(f *api.FloatingIP) api.FloatingIP { return s.net.m.FloatingIPView(f) })
}

func (s *Server) getFloatingIP(w http.ResponseWriter, r *http.Request) {
	f, ok := s.net.fips.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		s.writeError(w, r, api.NotFound("floating IP", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, s.net.m.FloatingIPView(f))
}

func (s *Server) createFloatingIP(w http.ResponseWriter, r *http.Request) {
	var req api.FloatingIPCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "floating-ip", req.Name)
	f, err := s.net.m.CreateFloatingIP(r.Context(), requestOf(r).project, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = f.UID
	writeJSON(w, http.StatusCreated, s.net.m.FloatingIPView(f))
}

func (s *Server) associateFloatingIP(w http.ResponseWriter, r *http.Request) {
	var req api.FloatingIPAssociate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "floating-ip", r.PathValue("name"))
	f, err := s.net.m.AssociateFloatingIP(r.Context(), requestOf(r).project, r.PathValue("name"), req.Port)
	s.floatingIPChanged(w, r, f, err)
}

func (s *Server) disassociateFloatingIP(w http.ResponseWriter, r *http.Request) {
	if err := decodeJSON(w, r, new(struct{}), true); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "floating-ip", r.PathValue("name"))
	f, err := s.net.m.DisassociateFloatingIP(r.Context(), requestOf(r).project, r.PathValue("name"))
	s.floatingIPChanged(w, r, f, err)
}

func (s *Server) floatingIPChanged(w http.ResponseWriter, r *http.Request, f *api.FloatingIP, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = f.UID
	writeJSON(w, http.StatusOK, s.net.m.FloatingIPView(f))
}

func (s *Server) deleteFloatingIP(w http.ResponseWriter, r *http.Request) {
	setResource(r, "floating-ip", r.PathValue("name"))
	if err := s.net.m.DeleteFloatingIP(r.Context(), requestOf(r).project, r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
