package server

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// maxTokenLife bounds an API token's expiry when one is given.
const maxTokenLife = 10 * 365 * 24 * time.Hour

func (s *Server) tokenRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/tokens", rule: auth.Account, handler: s.listTokens},
		{method: "POST", path: "/v1/tokens", rule: auth.Account, handler: s.createToken},
		{method: "DELETE", path: "/v1/tokens/{id}", rule: auth.User, handler: s.revokeToken},
	}
}

// ownToken tells whether the caller may see and revoke a token: its own,
// or anyone's for a superadmin. Host and server tokens are nobody's to
// manage here (hosts are revoked, servers removed from the cluster).
func ownToken(me auth.Identity, t *tokenRecord) bool {
	return t.Kind != tokenKindHost && t.Kind != tokenKindServer && (me.IsSuperadmin() || t.user() == me.Name)
}

// listTokens lists the caller's tokens (a superadmin's ?user= lists
// another's, and no user lists all).
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	me := auth.FromContext(r.Context())
	user := r.URL.Query().Get("user")
	if user == "" && !me.IsSuperadmin() {
		user = me.Name
	}
	now := time.Now()
	recs := listAll(s.tokens, func(t *tokenRecord) bool {
		return ownToken(me, t) && (user == "" || t.user() == user) && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
	})
	out := api.List[api.Token]{Items: make([]api.Token, 0, len(recs))}
	for _, t := range recs {
		out.Items = append(out.Items, t.view(t.ID))
	}
	slices.SortFunc(out.Items, func(a, b api.Token) int { return a.CreatedAt.Compare(b.CreatedAt) })
	writeJSON(w, http.StatusOK, out)
}

// createToken makes an API token and shows its secret this once. Made
// with a login session, it needs the caller's password (re-authentication,
// as GitHub's sudo mode), and ends when that password changes; where the
// installation sets a maximum lifetime, no token lives longer.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	me := auth.FromContext(r.Context())
	if req.User == "" {
		req.User = me.Name
	}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.User != me.Name && !me.IsSuperadmin() {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: "only a superadmin may make tokens for another user"})
		return
	}
	u, ok := s.users.Get(req.User)
	if !ok {
		s.writeError(w, r, api.NotFound("user", req.User))
		return
	}
	if req.Role != "" && !auth.ValidRole(req.Role) {
		s.writeError(w, r, api.Invalid("role", "must be one of %s, not %q", strings.Join(api.Roles, ", "), req.Role))
		return
	}
	if req.Role != "" && req.Project == "" {
		s.writeError(w, r, api.Invalid("project", "is required with role: a token narrows to a role in one project"))
		return
	}
	if req.Project != "" {
		p, ok := s.projects.Get(req.Project)
		if !ok || (!u.Superadmin && p.Spec.Members[u.Name] == "") {
			s.writeError(w, r, api.Invalid("project", "project %q not found among the projects of user %q", req.Project, u.Name))
			return
		}
	}
	if req.ExpiresInSeconds < 0 || time.Duration(req.ExpiresInSeconds)*time.Second > maxTokenLife {
		s.writeError(w, r, api.Invalid("expiresInSeconds", "must be from 0 (never) to %d, not %d", int64(maxTokenLife.Seconds()), req.ExpiresInSeconds))
		return
	}
	life := time.Duration(req.ExpiresInSeconds) * time.Second
	if most := s.cfg.MaxTokenLifetime; most > 0 {
		if life > most {
			s.writeError(w, r, api.Invalid("expiresInSeconds", "must be at most %d, this installation's maximum token lifetime (--max-token-lifetime), not %d",
				int64(most.Seconds()), req.ExpiresInSeconds))
			return
		}
		if life == 0 {
			life = most
		}
	}
	rec := &tokenRecord{Kind: api.TokenAPI, Name: req.Name, User: u.Name, Project: req.Project, Role: req.Role}
	if life > 0 {
		rec.ExpiresAt = time.Now().UTC().Add(life)
	}
	// A session is not enough to make a lasting credential: the caller
	// gives its password again, and the token ends when that changes.
	if t, ok := s.tokens.Get(me.TokenID); ok && t.Kind == api.TokenSession {
		if !s.reauthenticate(w, r, me.Name, req.Current) {
			return
		}
		rec.Login = me.Name
	} else if req.Current != "" {
		s.writeError(w, r, api.Invalid("current", "is only for requests made with a login session"))
		return
	}
	secret, id, err := s.mintToken(r.Context(), auth.PrefixAPI, rec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource = api.Ref{Kind: "token", Name: id}
	writeJSON(w, http.StatusCreated, api.TokenCreated{Token: rec.view(id), Secret: secret})
}

// revokeToken deletes a token; it is refused from the moment this returns.
// Someone else's token does not exist for the caller.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	me := auth.FromContext(r.Context())
	t, ok := s.tokens.Get(id)
	if !ok || !ownToken(me, t) {
		s.writeError(w, r, api.NotFound("token", id))
		return
	}
	if me.Narrowed() && id != me.TokenID {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: "a narrowed token can revoke only itself"})
		return
	}
	if err := s.tokens.Delete(r.Context(), id, t.Version); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
