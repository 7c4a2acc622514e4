package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/cluster"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/store"
)

// The servers of the control plane: who they are (GET
// /v1/cluster/servers), how one joins (a server join token, then POST
// /v1/cluster/join from the new server) and how one leaves (DELETE
// /v1/cluster/servers/{name}, which also removes its etcd member).
func (s *Server) serverRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/cluster/servers", rule: auth.Superadmin, handler: s.listServers},
		{method: "DELETE", path: "/v1/cluster/servers/{name}", rule: auth.Superadmin, handler: s.removeServer},
		{method: "POST", path: "/v1/cluster/join-tokens", rule: auth.Superadmin, handler: s.createServerJoinToken},
		// A joining server proves itself with the join token it holds.
		{method: "POST", path: "/v1/cluster/join", rule: auth.Public, handler: s.joinCluster},
		// Agents learn every server's address, to fail over.
		{method: "GET", path: "/v1/agent/servers", rule: auth.AnyHost, handler: s.agentServers},
	}
}

// listServers shows each server: its addresses, etcd member, health, and
// who leads.
func (s *Server) listServers(w http.ResponseWriter, r *http.Request) {
	out, err := s.serverList(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.List[api.Server]{Items: out})
}

func (s *Server) serverList(ctx context.Context) ([]api.Server, error) {
	present, err := cluster.Present(ctx, s.st.Client(), s.st.Prefix())
	if err != nil {
		return nil, &api.Error{Code: api.CodeUnavailable, Message: "the store cannot say which servers are up: " + err.Error()}
	}
	lead := ""
	if term, ok, err := s.ctl.Leader(ctx); err == nil && ok {
		lead = term.Name
	}
	members := map[uint64]store.Member{}
	if s.st.Embedded() {
		ms, err := s.st.Members(ctx)
		if err != nil {
			return nil, &api.Error{Code: api.CodeUnavailable, Message: "the store cannot list its members: " + err.Error()}
		}
		for _, m := range ms {
			members[m.ID] = m
		}
	}
	etcdLeader := s.st.EtcdLeader()
	var out []api.Server
	listed := map[uint64]bool{}
	for _, rec := range listAll(s.servers, nil) {
		p, up := present[rec.Name]
		sv := api.Server{Name: rec.Name, URL: rec.URL, PeerURL: rec.PeerURL, MemberID: cluster.FormatMemberID(rec.MemberID),
			Healthy: up, Leader: rec.Name == lead, JoinedAt: rec.JoinedAt}
		if up {
			sv.Version = p.Version
			if p.URL != "" {
				sv.URL = p.URL
			}
		}
		if m, ok := members[rec.MemberID]; ok {
			sv.Learner = m.Learner
			sv.EtcdLeader = rec.MemberID == etcdLeader
			listed[m.ID] = true
		} else if rec.MemberID != 0 {
			// Its member is gone: it cannot reach the store.
			sv.Healthy = false
		}
		out = append(out, sv)
	}
	// A member no server stands for (a join that never finished): shown
	// so that it can be removed.
	for id, m := range members {
		if listed[id] {
			continue
		}
		name := m.Name
		if name == "" {
			name = "pending-" + m.IDString()
		}
		out = append(out, api.Server{Name: name, MemberID: m.IDString(), Learner: m.Learner, EtcdLeader: id == etcdLeader,
			PeerURL: firstOf(m.PeerURLs), Healthy: present[name].Name != ""})
	}
	slices.SortFunc(out, func(a, b api.Server) int { return cmpString(a.Name, b.Name) })
	return out, nil
}

func firstOf(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// removeServer takes a server out of the control plane: its etcd member
// leaves the store's cluster (the server stops), its token ends and its
// record goes. The last server, the one answering, and one whose going
// would cost the store its quorum are refused.
func (s *Server) removeServer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	requestOf(r).resource = api.Ref{Kind: "server", Name: name}
	if err := s.removeServerNamed(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Warn("server removed from the control plane", "server", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) removeServerNamed(ctx context.Context, name string) error {
	list, err := s.serverList(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(list, func(sv api.Server) bool { return sv.Name == name })
	if i < 0 {
		return api.NotFound("server", name)
	}
	target := list[i]
	if name == s.cfg.Name {
		return api.Conflict("server %q is the one answering: ask another server to remove it", name)
	}
	if len(list) == 1 {
		return api.Conflict("server %q is the last server: a control plane needs one", name)
	}
	rec, hasRec := s.servers.Get(name)
	var memberID uint64
	if target.MemberID != "" {
		if _, err := fmt.Sscanf(target.MemberID, "%x", &memberID); err != nil {
			return fmt.Errorf("reading the member id of server %q: %w", name, err)
		}
	}
	if !s.st.Embedded() && target.Healthy {
		return api.Conflict("server %q runs: stop it first (the servers share an external etcd, which it would go on using)", name)
	}
	if s.st.Embedded() && memberID != 0 {
		ms, err := s.st.Members(ctx)
		if err != nil {
			return &api.Error{Code: api.CodeUnavailable, Message: err.Error()}
		}
		healthy := map[uint64]bool{}
		for _, sv := range list {
			if sv.Healthy && sv.MemberID != "" {
				var id uint64
				if _, err := fmt.Sscanf(sv.MemberID, "%x", &id); err == nil {
					healthy[id] = true
				}
			}
		}
		if err := cluster.CheckRemoval(ms, healthy, memberID, name); err != nil {
			return err
		}
		if err := s.st.RemoveMember(ctx, memberID); err != nil {
			if errors.Is(err, store.ErrMemberBusy) {
				return api.Conflict("etcd refuses to remove the member of server %q now (it would leave too few started members for a quorum): %v", name, err)
			}
			return fmt.Errorf("removing the etcd member of server %q: %w", name, err)
		}
	}
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindServer && t.Name == name }) {
		s.deleteToken(ctx, t)
	}
	if hasRec {
		if err := s.servers.Delete(ctx, name, rec.Version); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("deleting the record of server %q: %w", name, err)
		}
	}
	if _, err := s.st.Client().Delete(ctx, s.st.Prefix()+"cluster/beats/"+name); err != nil {
		s.log.Debug("deleting a removed server's heartbeats", "err", err)
	}
	s.ctl.Imports.FailServer(ctx, name)
	return nil
}

// serverJoinKey is where a server join token is kept: apart from host join
// tokens, so that neither joins as the other.
func serverJoinKey(id string) string { return "cluster/jointokens/" + id }

const (
	defaultServerJoinTTL = 30 * time.Minute
	maxServerJoinTTL     = 24 * time.Hour
)

// createServerJoinToken mints a single-use, expiring token a new server
// joins with. Like a host join token it carries the CA's fingerprint, so
// the new server can trust this one before it has the CA.
func (s *Server) createServerJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.JoinTokenCreate
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl := defaultServerJoinTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
		if ttl < time.Minute || ttl > maxServerJoinTTL {
			s.writeError(w, r, api.Invalid("ttlSeconds", "must be from 60 to %d, not %d", int(maxServerJoinTTL.Seconds()), req.TTLSeconds))
			return
		}
	}
	tok, id := auth.NewToken(auth.PrefixServerJoin)
	rec := joinRecord{Hash: auth.Hash(tok), ExpiresAt: time.Now().UTC().Add(ttl)}
	if err := s.st.CreateKey(r.Context(), serverJoinKey(id), marshalJSON(rec), ttl); err != nil {
		s.writeError(w, r, fmt.Errorf("storing the server join token: %w", err))
		return
	}
	requestOf(r).resource = api.Ref{Kind: "server-join-token", Name: id}
	fp := pki.Fingerprint(s.caPEM)
	writeJSON(w, http.StatusCreated, api.JoinToken{ID: id, Token: tok + "." + fp, ExpiresAt: rec.ExpiresAt, CAFingerprint: fp, ServerURL: s.advertisedURL()})
}

// badServerJoin is the one answer to a join token that does not work.
var badServerJoin = &api.Error{Code: api.CodeUnauthorized, Message: "invalid, used or expired server join token"}

// checkServerJoinToken checks a server join token without using it up.
func (s *Server) checkServerJoinToken(ctx context.Context, t string) (id string, err error) {
	tok, _ := SplitJoinToken(t)
	prefix, id, ok := auth.ParseToken(tok)
	if !ok || prefix != auth.PrefixServerJoin {
		return "", badServerJoin
	}
	raw, err := s.st.GetKey(ctx, serverJoinKey(id))
	if err != nil {
		return "", badServerJoin
	}
	var rec joinRecord
	if err := json.Unmarshal(raw, &rec); err != nil || !auth.Verify(tok, rec.Hash) || time.Now().After(rec.ExpiresAt) {
		return "", badServerJoin
	}
	return id, nil
}

// joinCluster adds a server: its etcd member joins the store's cluster as
// a learner, it gets a token and a record, and the servers' shared
// material goes back to it sealed for the holder of the join token.
// Anything done is undone when a later step fails.
func (s *Server) joinCluster(w http.ResponseWriter, r *http.Request) {
	var req api.ClusterJoin
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "server", Name: req.Name}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq.actor = &api.AuditActor{Kind: auth.KindServer, Name: req.Name}
	if err := validateServerURL(req.URL); err != nil {
		s.writeError(w, r, err)
		return
	}
	switch {
	case s.st.Embedded() && req.PeerURL == "":
		s.writeError(w, r, api.Invalid("peerURL", "is required: the servers embed their etcd, and the new server's member must be reached at it (start it with --peer-listen)"))
		return
	case s.st.Embedded():
		if _, err := store.ParsePeerURL(req.PeerURL); err != nil {
			s.writeError(w, r, api.Invalid("peerURL", "%v", err))
			return
		}
	case req.PeerURL != "":
		s.writeError(w, r, api.Invalid("peerURL", "must be empty: the servers share an external etcd (start the new server with --etcd-endpoints, without --peer-listen)"))
		return
	}
	ctx := r.Context()
	tokID, err := s.checkServerJoinToken(ctx, req.JoinToken)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, ok := s.servers.Get(req.Name); ok {
		s.writeError(w, r, api.Conflict("server %q is already a server of this control plane: join under another name, or remove it first (polyvisor cluster remove %s)", req.Name, req.Name))
		return
	}
	bundle, err := s.admitServer(ctx, req, tokID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tok, _ := SplitJoinToken(req.JoinToken)
	sealed, err := cluster.Seal(bundle, tok)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("server joined", "server", req.Name, "url", req.URL, "peerURL", req.PeerURL, "member", cluster.FormatMemberID(bundle.MemberID))
	writeJSON(w, http.StatusOK, api.ClusterJoined{Sealed: sealed, CAFingerprint: pki.Fingerprint(s.caPEM)})
}

// admitServer makes the joining server a member, uses the join token up,
// and gathers its bundle, undoing what it did when a step fails.
func (s *Server) admitServer(ctx context.Context, req api.ClusterJoin, tokID string) (b *cluster.Bundle, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	// Undoing runs even when the request's context ended.
	bg := context.WithoutCancel(ctx)
	b = &cluster.Bundle{Version: cluster.BundleVersion, Name: req.Name, AdminToken: s.adminToken, MetricsToken: s.metricsToken}
	if b.CACert, b.CAKey, err = pki.ReadCA(filepath.Join(s.cfg.DataDir, "pki")); err != nil {
		return nil, err
	}
	if b.SecretKey, err = secrets.ReadKey(filepath.Join(s.cfg.DataDir, "secret.key")); err != nil {
		return nil, err
	}
	if s.st.Embedded() {
		id, members, err := s.st.AddLearner(ctx, req.Name, req.PeerURL)
		if err != nil {
			if errors.Is(err, store.ErrMemberBusy) {
				return nil, &api.Error{Code: api.CodeUnavailable, Message: "the store takes no new member now (another server is still joining, or the cluster is unhealthy); try again in a moment: " + err.Error()}
			}
			return nil, &api.Error{Code: api.CodeConflict, Message: "adding the new server's etcd member: " + err.Error()}
		}
		undo = append(undo, func() {
			if rerr := s.st.RemoveMember(bg, id); rerr != nil {
				s.log.Error("removing the etcd member of a join that failed", "member", cluster.FormatMemberID(id), "err", rerr)
			}
		})
		b.MemberID, b.InitialCluster = id, store.InitialCluster(members)
	}
	// Using the token up is the single use: of two joins racing with one
	// token only one deletes it.
	if err := s.st.DeleteKey(ctx, serverJoinKey(tokID)); err != nil {
		return nil, badServerJoin
	}
	if b.PeerToken, err = s.mintServerToken(ctx, req.Name); err != nil {
		return nil, err
	}
	undo = append(undo, func() {
		for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindServer && t.Name == req.Name }) {
			s.deleteToken(bg, t)
		}
	})
	rec := &serverRecord{Name: req.Name, URL: req.URL, PeerURL: req.PeerURL, MemberID: b.MemberID, JoinedAt: time.Now().UTC()}
	if _, err := s.servers.Create(ctx, req.Name, rec); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Conflict("server %q joined meanwhile", req.Name)
		}
		return nil, fmt.Errorf("recording server %q: %w", req.Name, err)
	}
	return b, nil
}

// validateServerURL checks the API URL a joining server gives.
func validateServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return api.Invalid("url", "must be the https://host:port the new server's API is reached at, not %q", s)
	}
	return nil
}

// agentServers tells an agent every server's URL, to fail over to.
func (s *Server) agentServers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.AgentServers{URLs: s.serverURLs()})
}

// serverURLs are the URLs of every server, this one first.
func (s *Server) serverURLs() []string {
	self := s.advertisedURL()
	var out []string
	if self != "" {
		out = append(out, self)
	}
	for _, rec := range listAll(s.servers, nil) {
		if rec.URL != "" && !slices.Contains(out, rec.URL) {
			out = append(out, rec.URL)
		}
	}
	return out
}
