package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) providerRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/providers", rule: auth.In(auth.PermProviderRead), handler: s.listProviders},
		{method: "POST", path: "/v1/providers", rule: auth.Superadmin, handler: s.createProvider},
		{method: "GET", path: "/v1/providers/{name}", rule: auth.In(auth.PermProviderRead), handler: s.getProvider, projectOf: s.providerProject, notFound: notFoundAs("provider", "name")},
		{method: "DELETE", path: "/v1/providers/{name}", rule: auth.Superadmin, handler: s.deleteProvider},
		{method: "POST", path: "/v1/providers/{name}/refresh", rule: auth.Superadmin, handler: s.refreshProvider},
		{method: "GET", path: "/v1/providers/{name}/inventory", rule: auth.In(auth.PermProviderRead), handler: s.providerInventory, projectOf: s.providerProject, notFound: notFoundAs("provider", "name")},
	}
}

func (s *Server) listProviders(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.providers, func(q listQuery, p *api.Provider) bool {
		return s.inProject(r, providerBinding(p), auth.PermProviderRead) &&
			(q.State == "" || p.Status.State == q.State) && q.sel.Matches(p.Labels)
	}, nil)
}

func (s *Server) getProvider(w http.ResponseWriter, r *http.Request) {
	p, ok := s.providers.Get(r.PathValue("name"))
	if !ok {
		s.writeError(w, r, api.NotFound("provider", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func validateProviderCreate(req *api.ProviderCreate) error {
	if err := validateName("name", req.Name); err != nil {
		return err
	}
	if u, err := url.Parse(req.URL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return api.Invalid("url", "holds a password: give it as password, which is kept encrypted, not in the URL")
		}
	}
	switch req.Type {
	case api.ProviderVSphere:
		u, err := url.Parse(req.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return api.Invalid("url", "a vsphere provider needs an https URL such as https://vcenter.example.com/sdk, not %q", req.URL)
		}
		if req.Username == "" {
			return api.Invalid("username", "is required for a vsphere provider")
		}
	case api.ProviderLibvirt:
		u, err := url.Parse(req.URL)
		if err != nil || u.Scheme == "" || !strings.Contains(req.URL, ":/") {
			return api.Invalid("url", "a libvirt provider needs a libvirt URI such as qemu:///system, not %q", req.URL)
		}
	default:
		return api.Invalid("type", "must be vsphere or libvirt, not %q", req.Type)
	}
	if req.CACert != "" && !strings.Contains(req.CACert, "BEGIN CERTIFICATE") {
		return api.Invalid("caCert", "is not a PEM certificate")
	}
	return nil
}

// providerError names why a provider could not be added.
func providerError(err error) error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, provider.ErrAuth):
		return api.Invalid("password", "the provider refused the credentials: %v", err)
	case errors.Is(err, provider.ErrCertificate):
		return api.Invalid("caCert", "the provider's certificate is not trusted (give caCert, or insecure): %v", err)
	case errors.Is(err, provider.ErrUnreachable):
		return api.Invalid("url", "the provider cannot be reached: %v", err)
	case errors.Is(err, provider.ErrUnsupported):
		return api.Invalid("url", "%v", err)
	}
	return api.Unprocessable("connecting to the provider failed: %v", err)
}

// createProvider verifies the connection first and stores nothing when it
// fails. The password is sealed and stored apart from the provider.
func (s *Server) createProvider(w http.ResponseWriter, r *http.Request) {
	var req api.ProviderCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateProviderCreate(&req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Project == "" {
		req.Project = api.DefaultProject
	}
	if _, ok := s.projects.Get(req.Project); !ok {
		s.writeError(w, r, api.Invalid("project", "project %q not found", req.Project))
		return
	}
	if _, ok := s.providers.Get(req.Name); ok {
		s.writeError(w, r, api.Conflict("provider %q already exists", req.Name))
		return
	}
	caps, err := s.ctl.Estate.Verify(r.Context(), req.Type, provider.Config{
		Name: req.Name, URL: req.URL, Username: req.Username, Password: req.Password,
		CACert: []byte(req.CACert), Insecure: req.Insecure,
	})
	if err != nil {
		s.log.Info("provider refused", "provider", req.Name, "url", req.URL, "err", err)
		s.writeError(w, r, providerError(err))
		return
	}
	sealed, err := s.secrets.Seal(req.Password, estate.SecretContext(req.Name))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := time.Now().UTC()
	p := &api.Provider{
		Meta:   api.Meta{Name: req.Name, Project: req.Project, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec:   api.ProviderSpec{Type: req.Type, URL: req.URL, Username: req.Username, CACert: req.CACert, Insecure: req.Insecure},
		Status: api.ProviderStatus{State: api.ProviderConnecting, Capabilities: api.ProviderCapabilities(caps)},
	}
	if _, err := s.st.Txn(r.Context(), s.providers.OpCreate(p.Name, p), s.creds.OpCreate(p.Name, &estate.Credential{Name: p.Name, Sealed: sealed})); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = api.Conflict("provider %q already exists", p.Name)
		}
		s.writeError(w, r, err)
		return
	}
	s.log.Info("provider added", "provider", p.Name, "type", p.Spec.Type, "url", p.Spec.URL)
	writeJSON(w, http.StatusCreated, p)
}

// deleteProvider removes a provider and, with it, its inventory from
// Polyvisor; nothing on the hypervisor is touched.
func (s *Server) deleteProvider(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, ok := s.providers.Get(name)
	if !ok {
		s.writeError(w, r, api.NotFound("provider", name))
		return
	}
	txn := []store.Op{s.providers.OpDelete(name, 0)} // its status changes all the time
	if _, ok := s.creds.Get(name); ok {
		txn = append(txn, s.creds.OpDelete(name, 0))
	}
	if _, err := s.st.Txn(r.Context(), txn...); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// refreshProvider asks for a full resync now.
func (s *Server) refreshProvider(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.providers.Get(name); !ok {
		s.writeError(w, r, api.NotFound("provider", name))
		return
	}
	if err := s.ctl.Estate.Refresh(r.Context(), name); err != nil {
		s.writeError(w, r, estate.MapError(err))
		return
	}
	p, _ := s.providers.Get(name)
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) providerInventory(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.providers.Get(name); !ok {
		s.writeError(w, r, api.NotFound("provider", name))
		return
	}
	inv, ok := s.ctl.Estate.Inventory(name)
	if !ok {
		s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("provider %q has not synced yet", name)})
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// providerProject is the project a provider is bound to: its VMs belong
// there, and its members may read it.
func (s *Server) providerProject(r *http.Request) string {
	if p, ok := s.providers.Get(r.PathValue("name")); ok {
		return providerBinding(p)
	}
	return ""
}

func providerBinding(p *api.Provider) string {
	if p.Project == "" {
		return api.DefaultProject
	}
	return p.Project
}
