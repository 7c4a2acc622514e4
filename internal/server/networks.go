package server

import (
	"net/http"
	"slices"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

// networkRoutes are the routes of networks, subnets, ports, security
// groups and floating IPs (all project objects), the NICs of VMs, and the
// agent's report of the ports it made.
func (s *Server) networkRoutes() []route {
	read, create := auth.In(auth.PermNetworkRead), auth.In(auth.PermNetworkCreate)
	update, del := auth.In(auth.PermNetworkUpdate), auth.In(auth.PermNetworkDelete)
	return []route{
		{method: "GET", path: "/v1/networks", rule: read, handler: s.listNetworks},
		{method: "POST", path: "/v1/networks", rule: create, handler: s.createNetwork},
		{method: "GET", path: "/v1/networks/{name}", rule: read, handler: s.getNetwork},
		{method: "DELETE", path: "/v1/networks/{name}", rule: del, handler: s.deleteNetwork},

		{method: "GET", path: "/v1/subnets", rule: read, handler: s.listSubnets},
		{method: "POST", path: "/v1/subnets", rule: create, handler: s.createSubnet},
		{method: "GET", path: "/v1/subnets/{name}", rule: read, handler: s.getSubnet},
		{method: "DELETE", path: "/v1/subnets/{name}", rule: del, handler: s.deleteSubnet},

		{method: "GET", path: "/v1/ports", rule: read, handler: s.listPorts},
		{method: "POST", path: "/v1/ports", rule: create, handler: s.createPort},
		{method: "GET", path: "/v1/ports/{name}", rule: read, handler: s.getPort},
		{method: "PATCH", path: "/v1/ports/{name}", rule: update, handler: s.updatePort},
		{method: "DELETE", path: "/v1/ports/{name}", rule: del, handler: s.deletePort},

		{method: "GET", path: "/v1/security-groups", rule: read, handler: s.listGroups},
		{method: "POST", path: "/v1/security-groups", rule: create, handler: s.createGroup},
		{method: "GET", path: "/v1/security-groups/{name}", rule: read, handler: s.getGroup},
		{method: "PATCH", path: "/v1/security-groups/{name}", rule: update, handler: s.updateGroup},
		{method: "DELETE", path: "/v1/security-groups/{name}", rule: del, handler: s.deleteGroup},
		{method: "POST", path: "/v1/security-groups/{name}/rules", rule: update, handler: s.addRules},
		{method: "DELETE", path: "/v1/security-groups/{name}/rules/{id}", rule: update, handler: s.removeRule},

		{method: "GET", path: "/v1/floating-ips", rule: read, handler: s.listFloatingIPs},
		{method: "POST", path: "/v1/floating-ips", rule: create, handler: s.createFloatingIP},
		{method: "GET", path: "/v1/floating-ips/{name}", rule: read, handler: s.getFloatingIP},
		{method: "DELETE", path: "/v1/floating-ips/{name}", rule: del, handler: s.deleteFloatingIP},
		{method: "POST", path: "/v1/floating-ips/{name}/associate", rule: update, handler: s.associateFloatingIP},
		{method: "POST", path: "/v1/floating-ips/{name}/disassociate", rule: update, handler: s.disassociateFloatingIP},

		{method: "POST", path: "/v1/vms/{name}/nics", rule: auth.In(auth.PermVMUpdate), handler: s.addNIC},
		{method: "DELETE", path: "/v1/vms/{name}/nics/{nic}", rule: auth.In(auth.PermVMUpdate), handler: s.removeNIC},

		{method: "PUT", path: "/v1/agent/hosts/{name}/ports", rule: auth.Host, handler: s.reportPorts, hostOf: pathHost},
	}
}

// setResource names the object a request acts on, for its audit record.
func setResource(r *http.Request, kind, name string) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: kind, Name: name, Project: rq.project}
}

// installationsOwn refuses a change to a bridged or external network (or
// its subnets) by anyone but a superadmin: they are the installation's.
func installationsOwn(r *http.Request, n *api.Network) error {
	if n.Spec.Type == api.NetworkBridged || n.Spec.External {
		if !auth.FromContext(r.Context()).IsSuperadmin() {
			return &api.Error{Code: api.CodeForbidden, Message: "network " + n.Name + " is " + n.Spec.Type + ": only a superadmin changes it or its subnets"}
		}
	}
	return nil
}

// listNetworks lists the project's networks and the external networks
// every project may take floating IPs from; then, on the last page, the
// networks of the providers bound to the project (?provider=NAME lists
// only that provider's, ?provider=none none).
func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	prov := r.URL.Query().Get("provider")
	if prov != "" && prov != "none" {
		s.serveProviderNetworks(w, r, prov)
		return
	}
	opts, err := listOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := parseQuery(opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	items, next, err := pageOf(s.net.networks, opts, func(n *api.Network) bool {
		return (s.inProject(r, n.Project, auth.PermNetworkRead) || n.Spec.External) && q.sel.Matches(n.Labels)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.List[api.Network]{Items: make([]api.Network, 0, len(items)), Continue: next}
	for _, n := range items {
		out.Items = append(out.Items, s.net.m.NetworkView(n))
	}
	if next == "" && prov == "" && !requestOf(r).facts.AllProjects && q.Selector == "" {
		out.Items = append(out.Items, s.providerNetworks(requestOf(r).project, "")...)
	}
	writeJSON(w, http.StatusOK, out)
}

// providerNetworks are the networks of the providers bound to project
// (only provider name's when name is not empty), as read-only networks.
func (s *Server) providerNetworks(project, name string) []api.Network {
	var out []api.Network
	for _, p := range listAll(s.providers, func(p *api.Provider) bool { return providerBinding(p) == project }) {
		if name != "" && p.Name != name {
			continue
		}
		inv, ok := s.ctl.Estate.Inventory(p.Name)
		if !ok {
			continue
		}
		for _, it := range inv.Networks {
			out = append(out, api.Network{
				Meta:     api.Meta{Name: it.Name, Project: project, UID: p.UID + "/" + it.ID},
				Spec:     api.NetworkSpec{Type: api.NetworkProvider, Description: "a network of provider " + p.Name},
				Provider: &api.ProviderRef{Name: p.Name, Type: p.Spec.Type, ID: it.ID, Datacenter: it.Datacenter, Stale: p.Status.Stale},
			})
		}
	}
	slices.SortStableFunc(out, func(a, b api.Network) int {
		if c := strings.Compare(a.Provider.Name, b.Provider.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func (s *Server) serveProviderNetworks(w http.ResponseWriter, r *http.Request, name string) {
	project := requestOf(r).project
	p, ok := s.providers.Get(name)
	if !ok || providerBinding(p) != project {
		s.writeError(w, r, api.NotFound("provider", name))
		return
	}
	writeJSON(w, http.StatusOK, api.List[api.Network]{Items: append([]api.Network{}, s.providerNetworks(project, name)...)})
}

// networkOf finds the network a request's path names: the project's, an
// external network, or (with ?provider=, or when no other matches) a
// network of a provider bound to the project.
func (s *Server) networkOf(r *http.Request) (api.Network, bool) {
	project, name := requestOf(r).project, r.PathValue("name")
	prov := r.URL.Query().Get("provider")
	if prov == "" {
		if n, ok := s.net.m.ExternalNetwork(project, name); ok && !strings.Contains(name, "/") {
			return s.net.m.NetworkView(n), true
		}
	}
	for _, n := range s.providerNetworks(project, prov) {
		if n.Name == name || n.Provider.ID == name {
			return n, true
		}
	}
	return api.Network{}, false
}

func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request) {
	n, ok := s.networkOf(r)
	if !ok {
		s.writeError(w, r, api.NotFound("network", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req api.NetworkCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	setResource(r, "network", req.Name)
	n, err := s.net.m.CreateNetwork(r.Context(), requestOf(r).project, req, auth.FromContext(r.Context()).IsSuperadmin())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = n.UID
	writeJSON(w, http.StatusCreated, s.net.m.NetworkView(n))
}

func (s *Server) deleteNetwork(w http.ResponseWriter, r *http.Request) {
	project, name := requestOf(r).project, r.PathValue("name")
	setResource(r, "network", name)
	n, ok := s.net.networks.Get(api.Key(project, name))
	if !ok {
		if pn, ok := s.networkOf(r); ok && pn.Provider != nil {
			s.writeError(w, r, api.Conflict("network %q belongs to provider %q: it is read-only here", name, pn.Provider.Name))
			return
		}
		s.writeError(w, r, api.NotFound("network", name))
		return
	}
	requestOf(r).resource.UID = n.UID
	if err := installationsOwn(r, n); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.net.m.DeleteNetwork(r.Context(), project, name); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listSubnets lists the project's subnets and those of the external
// networks (?network= keeps one network's).
func (s *Server) listSubnets(w http.ResponseWriter, r *http.Request) {
	network := r.URL.Query().Get("network")
	serveList(s, w, r, s.net.subnets, func(q listQuery, sn *api.Subnet) bool {
		visible := s.inProject(r, sn.Project, auth.PermNetworkRead)
		if !visible {
			n, ok := s.net.networks.Get(api.Key(sn.Project, sn.Spec.Network))
			visible = ok && n.Spec.External
		}
		return visible && (network == "" || sn.Spec.Network == network || api.Key(sn.Project, sn.Spec.Network) == network) && q.sel.Matches(sn.Labels)
	}, func(sn *api.Subnet) api.Subnet { return s.net.m.SubnetView(sn) })
}

func (s *Server) getSubnet(w http.ResponseWriter, r *http.Request) {
	sn, ok := s.net.subnets.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		s.writeError(w, r, api.NotFound("subnet", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, s.net.m.SubnetView(sn))
}

func (s *Server) createSubnet(w http.ResponseWriter, r *http.Request) {
	var req api.SubnetCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	project := requestOf(r).project
	setResource(r, "subnet", req.Name)
	if n, ok := s.net.networks.Get(api.Key(project, req.Network)); ok {
		if err := installationsOwn(r, n); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	sn, err := s.net.m.CreateSubnet(r.Context(), project, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource.UID = sn.UID
	writeJSON(w, http.StatusCreated, s.net.m.SubnetView(sn))
}

func (s *Server) deleteSubnet(w http.ResponseWriter, r *http.Request) {
	project, name := requestOf(r).project, r.PathValue("name")
	setResource(r, "subnet", name)
	sn, ok := s.net.subnets.Get(api.Key(project, name))
	if !ok {
		s.writeError(w, r, api.NotFound("subnet", name))
		return
	}
	requestOf(r).resource.UID = sn.UID
	if n, ok := s.net.networks.Get(api.Key(project, sn.Spec.Network)); ok {
		if err := installationsOwn(r, n); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if err := s.net.m.DeleteSubnet(r.Context(), project, name); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseQuery parses a list's label selector.
func parseQuery(opts api.ListOptions) (listQuery, error) {
	q := listQuery{ListOptions: opts}
	var err error
	if q.sel, err = labels.Parse(opts.Selector); err != nil {
		return q, api.Invalid("selector", "%v", err)
	}
	return q, nil
}

// pageOf lists one page of a collection.
func pageOf[T any](c *store.Collection[T], opts api.ListOptions, keep func(*T) bool) ([]*T, string, error) {
	return c.List(store.ListOptions[T]{Limit: opts.Limit, Continue: opts.Continue, Filter: keep})
}
