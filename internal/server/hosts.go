package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

func (s *Server) hostRoutes() []route {
	return []route{
		// Hosts are the installation's shared capacity: every user sees
		// them, to place VMs and read allocation.
		{method: "GET", path: "/v1/hosts", rule: auth.User, handler: s.listHosts},
		{method: "GET", path: "/v1/hosts/{name}", rule: auth.User, handler: s.getHost},
		{method: "POST", path: "/v1/hosts/join-tokens", rule: auth.Superadmin, handler: s.createJoinToken},
		// Taking a host out of service is the installation's to decide.
		{method: "POST", path: "/v1/hosts/{name}/cordon", rule: auth.Superadmin, handler: s.cordonHost(true)},
		{method: "POST", path: "/v1/hosts/{name}/uncordon", rule: auth.Superadmin, handler: s.cordonHost(false)},
		{method: "POST", path: "/v1/hosts/{name}/revoke", rule: auth.Superadmin, handler: s.revokeHost},
		{method: "DELETE", path: "/v1/hosts/{name}", rule: auth.Superadmin, handler: s.deleteHost},
	}
}

// withAllocation returns a host with its allocation filled in, and the
// capacity the scheduler offers on it to compare the allocation with.
func (s *Server) withAllocation(h *api.Host) api.Host {
	out := *h
	out.Status.Allocated = s.ctl.Placer.Allocation(h.Name)
	c := scheduler.HostCapacity(s.cfg.Scheduler, scheduler.HostInfo{CPUs: h.Status.CPUs, MemoryMiB: h.Status.MemoryMiB})
	out.Status.Capacity = api.HostCapacity{VCPUs: c.VCPUs, MemoryMiB: c.MemoryMiB}
	if h.Provider == nil {
		out.FenceTimeoutMS = s.cfg.HA.FenceTimeout.Milliseconds()
	}
	return out
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.hosts, func(q listQuery, h *api.Host) bool {
		return (q.State == "" || h.Status.State == q.State) && providerMatches(q.Provider, h.Provider) && q.sel.Matches(h.Labels)
	}, func(h *api.Host) api.Host { return s.hostView(r, h) })
}

// hostView is a host as the caller may see it: a fence hook's output and
// the VMs restarted elsewhere of projects the caller may not read are a
// superadmin's only.
func (s *Server) hostView(r *http.Request, h *api.Host) api.Host {
	out := s.withAllocation(h)
	if out.Fence == nil || auth.FromContext(r.Context()).IsSuperadmin() {
		return out
	}
	f := *out.Fence
	f.Hook, f.VMs = "", nil
	for _, key := range out.Fence.VMs {
		project, _, _ := strings.Cut(key, "/")
		if s.can(r, project, auth.PermVMRead) {
			f.VMs = append(f.VMs, key)
		}
	}
	out.Fence = &f
	return out
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	h, ok := s.hosts.Get(r.PathValue("name"))
	if !ok {
		s.writeError(w, r, api.NotFound("host", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, s.hostView(r, h))
}

// joinRecord is a stored join token: single use, expiring, hash only,
// and bound to one host name when Host is set.
type joinRecord struct {
	Hash      string    `json:"hash"`
	ExpiresAt time.Time `json:"expiresAt"`
	Host      string    `json:"host,omitempty"`
}

func joinKey(id string) string { return "jointokens/" + id }

const (
	defaultJoinTTL = time.Hour
	maxJoinTTL     = 7 * 24 * time.Hour
)

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.JoinTokenCreate
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl := defaultJoinTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
		if ttl < time.Minute || ttl > maxJoinTTL {
			s.writeError(w, r, api.Invalid("ttlSeconds", "must be from 60 to %d, not %d", int(maxJoinTTL.Seconds()), req.TTLSeconds))
			return
		}
	}
	if req.Host != "" {
		if err := validateName("host", req.Host); err != nil {
			s.writeError(w, r, err)
			return
		}
		if h, ok := s.hosts.Get(req.Host); ok && h.Provider != nil {
			s.writeError(w, r, api.Conflict("host %q belongs to provider %q, which manages it; it has no Polyvisor agent", req.Host, h.Provider.Name))
			return
		}
	}
	jt, err := s.mintJoinToken(r.Context(), ttl, req.Host)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, jt)
}

// mintJoinToken stores a new join token. The token handed out carries the
// CA fingerprint after a dot, so an agent can pin the server's CA.
func (s *Server) mintJoinToken(ctx context.Context, ttl time.Duration, host string) (*api.JoinToken, error) {
	tok, id := auth.NewToken(auth.PrefixJoin)
	rec := joinRecord{Hash: auth.Hash(tok), ExpiresAt: time.Now().UTC().Add(ttl), Host: host}
	raw, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if err := s.st.CreateKey(ctx, joinKey(id), raw, ttl); err != nil {
		return nil, fmt.Errorf("storing join token: %w", err)
	}
	fp := pki.Fingerprint(s.caPEM)
	return &api.JoinToken{ID: id, Token: tok + "." + fp, ExpiresAt: rec.ExpiresAt, CAFingerprint: fp, ServerURL: s.advertisedURL(), Host: host}, nil
}

// advertisedURL is the https URL agents reach the server at: its first
// advertised address, else the host of its listen address when that names
// one, else its host name (all of which its certificate holds), with the
// port it listens on. It is "" when the server does not listen on TCP.
func (s *Server) advertisedURL() string {
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	host := "localhost"
	if lh, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && lh != "" && !net.ParseIP(lh).IsUnspecified() {
		host = lh
	} else if hn, err := os.Hostname(); err == nil && hn != "" {
		host = hn
	}
	if len(s.cfg.AdvertiseAddresses) > 0 {
		host = s.cfg.AdvertiseAddresses[0]
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// SplitJoinToken separates a join token from the CA fingerprint it carries.
func SplitJoinToken(t string) (token, caFingerprint string) {
	token, caFingerprint, _ = strings.Cut(strings.TrimSpace(t), ".")
	return token, caFingerprint
}

// errBadJoinToken is the one answer to a join token that is not valid.
var errBadJoinToken = &api.Error{Code: api.CodeUnauthorized, Message: "invalid, used or expired join token"}

// checkJoinToken finds a join token and checks it, without using it up.
func (s *Server) checkJoinToken(ctx context.Context, t string) (id string, rec joinRecord, err error) {
	tok, _ := SplitJoinToken(t)
	_, id, ok := auth.ParseToken(tok)
	if !ok {
		return "", rec, errBadJoinToken
	}
	raw, err := s.st.GetKey(ctx, joinKey(id))
	if err != nil {
		return "", rec, errBadJoinToken
	}
	if err := json.Unmarshal(raw, &rec); err != nil || !auth.Verify(tok, rec.Hash) || time.Now().After(rec.ExpiresAt) {
		return "", rec, errBadJoinToken
	}
	return id, rec, nil
}

// consumeJoinToken deletes a join token checked by checkJoinToken, so it
// works once: of two racing registrations only one deletes the key.
func (s *Server) consumeJoinToken(ctx context.Context, id string) error {
	if err := s.st.DeleteKey(ctx, joinKey(id)); err != nil {
		return errBadJoinToken
	}
	return nil
}

// restoreJoinToken puts back a join token consumed by a registration that
// then failed, for what was left of its life: its agent can ask again. It
// is created only if absent, so it never revives a token twice.
func (s *Server) restoreJoinToken(ctx context.Context, id string, rec joinRecord) {
	ttl := time.Until(rec.ExpiresAt)
	if ttl < time.Second {
		return
	}
	raw, err := json.Marshal(rec)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = s.st.CreateKey(ctx, joinKey(id), raw, ttl)
	}
	if err != nil {
		s.log.Warn("giving back the join token of a failed registration", "token", id, "err", err)
	}
}

// MintJoinToken makes a join token for an agent started next to the
// server (the built-in agent's first start), bound to its host name.
func (s *Server) MintJoinToken(ctx context.Context, host string) (string, error) {
	jt, err := s.mintJoinToken(ctx, 10*time.Minute, host)
	if err != nil {
		return "", err
	}
	return jt.Token, nil
}
