package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/auth/password"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

// passwordRecord holds a user's password hash, apart from the user so
// that no user object can carry it out through the API.
type passwordRecord struct {
	Hash string `json:"hash"`
	// KeepSession is the login session that set this password, which
	// stays valid; the user's other sessions made before it end.
	KeepSession string `json:"keepSession,omitempty"`
	Version     int64  `json:"-"`
}

func (s *Server) userRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/users", rule: auth.Superadmin, handler: s.listUsers},
		{method: "POST", path: "/v1/users", rule: auth.Superadmin, handler: s.createUser},
		{method: "GET", path: "/v1/users/{user}", rule: auth.Self, handler: s.getUser},
		{method: "PATCH", path: "/v1/users/{user}", rule: auth.Superadmin, handler: s.updateUser},
		{method: "DELETE", path: "/v1/users/{user}", rule: auth.Superadmin, handler: s.deleteUser},
		{method: "PUT", path: "/v1/users/{user}/password", rule: auth.Self, handler: s.setPassword},
		{method: "POST", path: "/v1/login", rule: auth.Public, handler: s.login},
		{method: "POST", path: "/v1/logout", rule: auth.User, handler: s.logout},
		{method: "GET", path: "/v1/whoami", rule: auth.User, handler: s.whoami},
		{method: "GET", path: "/v1/roles", rule: auth.User, handler: s.listRoles},
	}
}

// rolesOf maps the projects a user belongs to to its role there.
func (s *Server) rolesOf(user string) map[string]string {
	out := map[string]string{}
	for _, p := range listAll(s.projects, func(p *api.Project) bool { return p.Spec.Members[user] != "" }) {
		out[p.Name] = p.Spec.Members[user]
	}
	return out
}

func (s *Server) userView(u *api.User) api.User {
	out := *u
	_, out.HasPassword = s.passwords.Get(u.Name)
	out.Roles = s.rolesOf(u.Name)
	return out
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.users, func(q listQuery, u *api.User) bool { return q.sel.Matches(u.Labels) }, s.userView)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.users.Get(r.PathValue("user"))
	if !ok {
		s.writeError(w, r, api.NotFound("user", r.PathValue("user")))
		return
	}
	writeJSON(w, http.StatusOK, s.userView(u))
}

// createUser makes a user, with its first password if given, in one
// transaction: a user that exists is left as it was, password included.
func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	requestOf(r).resource = api.Ref{Kind: "user", Name: req.Name}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, ok := s.users.Get(req.Name); ok {
		s.writeError(w, r, api.Conflict("user %q already exists", req.Name))
		return
	}
	// A password left by a user deleted half-way (before deletions were
	// one transaction) is replaced or removed, in the same transaction as
	// the user's creation: if the user exists by then, nothing changes.
	old, hasOld := s.passwords.Get(req.Name)
	var ops []store.Op
	if req.Password != "" {
		if err := password.Validate(req.Name, req.Password); err != nil {
			s.writeError(w, r, api.Invalid("password", "%v", err))
			return
		}
		release, ok := s.hashSlot(w, r)
		if !ok {
			return
		}
		h, err := password.Hash(req.Password)
		release()
		if err != nil {
			s.writeError(w, r, fmt.Errorf("hashing the password: %w", err))
			return
		}
		if hasOld {
			ops = append(ops, s.passwords.OpUpdate(req.Name, &passwordRecord{Hash: h}, old.Version))
		} else {
			ops = append(ops, s.passwords.OpCreate(req.Name, &passwordRecord{Hash: h}))
		}
	} else if hasOld {
		ops = append(ops, s.passwords.OpDelete(req.Name, old.Version))
	}
	now := time.Now().UTC()
	u := &api.User{Meta: api.Meta{Name: req.Name, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		DisplayName: req.DisplayName, Superadmin: req.Superadmin}
	ops = append(ops, s.users.OpCreate(u.Name, u))
	if _, err := s.st.Txn(r.Context(), ops...); err != nil {
		var ke *store.KeyError
		if errors.As(err, &ke) && (errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict)) {
			err = api.Conflict("user %q already exists or is being created", u.Name)
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.userView(u))
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserUpdate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	name := r.PathValue("user")
	me := auth.FromContext(r.Context())
	// While changes are refused, a user may still be disabled or demoted.
	if rq := requestOf(r); rq.restricted != nil &&
		(req.DisplayName != nil || (req.Superadmin != nil && *req.Superadmin) || (req.Disabled != nil && !*req.Disabled)) {
		s.writeError(w, r, rq.restricted)
		return
	}
	for range 10 {
		cur, ok := s.users.Get(name)
		if !ok {
			s.writeError(w, r, api.NotFound("user", name))
			return
		}
		next := store.Clone(cur)
		if req.DisplayName != nil {
			next.DisplayName = *req.DisplayName
		}
		if req.Superadmin != nil {
			next.Superadmin = *req.Superadmin
		}
		if req.Disabled != nil {
			next.Disabled = *req.Disabled
		}
		if name == me.Name && (!next.Superadmin || next.Disabled) {
			s.writeError(w, r, api.Conflict("a superadmin cannot demote or disable itself; ask another superadmin"))
			return
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		if _, err := s.users.Update(r.Context(), name, next, cur.Version); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, s.userView(next))
		return
	}
	s.writeError(w, r, api.Conflict("user %q is being changed concurrently", name))
}

// maxTxnOps bounds the operations of one transaction: etcd takes at most
// 128. A user's deletion removes up to maxUserTxnProjects memberships in
// its transaction, and its tokens there too while they fit.
const (
	maxTxnOps          = 120
	maxUserTxnProjects = 100
)

// deleteUser removes a user, its password, its memberships and its tokens
// in one transaction, all or nothing; tokens past what one transaction
// takes are deleted after it (those of a user that no longer exists are
// refused already, and are deleted so that a new user of the same name
// does not inherit them; the answer says so when one could not be).
func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("user")
	if name == auth.FromContext(r.Context()).Name {
		s.writeError(w, r, api.Conflict("a user cannot delete itself"))
		return
	}
	var err error
	var tokens []*tokenRecord // left to delete after the transaction
	for range 10 {
		u, ok := s.users.Get(name)
		if !ok {
			s.writeError(w, r, api.NotFound("user", name))
			return
		}
		ops := []store.Op{s.users.OpDelete(name, u.Version)}
		if pw, ok := s.passwords.Get(name); ok {
			ops = append(ops, s.passwords.OpDelete(name, pw.Version))
		}
		member := listAll(s.projects, func(p *api.Project) bool { return p.Spec.Members[name] != "" })
		if len(member) > maxUserTxnProjects {
			s.writeError(w, r, api.Conflict("user %q is a member of %d projects, more than the %d a deletion removes at once: remove some memberships first",
				name, len(member), maxUserTxnProjects))
			return
		}
		for _, p := range member {
			next := store.Clone(p)
			delete(next.Spec.Members, name)
			next.Generation++
			next.UpdatedAt = time.Now().UTC()
			ops = append(ops, s.projects.OpUpdate(p.Name, next, p.Version))
		}
		// Its tokens too, when they fit.
		tokens = listAll(s.tokens, func(t *tokenRecord) bool { return t.user() == name && t.Kind != tokenKindHost && t.ID != "" })
		if len(ops)+len(tokens) <= maxTxnOps {
			for _, t := range tokens {
				ops = append(ops, s.tokens.OpDelete(t.ID, 0))
			}
			tokens = nil
		}
		if _, err = s.st.Txn(r.Context(), ops...); !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			err = api.Conflict("user %q or its projects are being changed concurrently; try again", name)
		}
		s.writeError(w, r, fmt.Errorf("deleting user %q: %w", name, err))
		return
	}
	for _, t := range tokens {
		if err := s.tokens.Delete(r.Context(), t.ID, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.writeError(w, r, fmt.Errorf("user %q deleted, but revoking its token %s failed (revoke it with DELETE /v1/tokens/%s): %w", name, t.ID, t.ID, err))
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// setPassword sets a password. Users changing their own give the current
// one, superadmins included; a superadmin may set anyone else's. A user
// without a password gets the first one from a superadmin: a token of its
// own is not enough, for a password opens sessions with every right the
// user has, and the token may have fewer. The route's rule already refuses
// narrowed tokens. Setting a password ends the user's other login
// sessions and the API tokens made with them; its other API tokens stay.
func (s *Server) setPassword(w http.ResponseWriter, r *http.Request) {
	var req api.PasswordSet
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	name := r.PathValue("user")
	me := auth.FromContext(r.Context())
	if _, ok := s.users.Get(name); !ok {
		s.writeError(w, r, api.NotFound("user", name))
		return
	}
	cur, has := s.passwords.Get(name)
	own := me.IsUser() && me.Name == name
	if !has && !me.IsSuperadmin() {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: fmt.Sprintf(
			"user %q has no password yet: a superadmin sets the first one; until then the user works with tokens made for it", name)})
		return
	}
	if err := password.Validate(name, req.Password); err != nil {
		s.writeError(w, r, api.Invalid("password", "%v", err))
		return
	}
	if has && own && req.Current == "" {
		s.writeError(w, r, api.Invalid("current", "is required to change your own password"))
		return
	}
	var pair, addr *throttle.Attempt
	if has && own {
		// Guesses of the current password are throttled like logins.
		var ok bool
		if pair, addr, ok = s.beginLogin(w, r, name); !ok {
			return
		}
	}
	release, ok := s.hashSlot(w, r)
	if !ok {
		pair.Abandon()
		addr.Abandon()
		return
	}
	if pair != nil {
		good, _ := password.Verify(req.Current, cur.Hash)
		if !good {
			release()
			pair.Fail()
			addr.Fail()
			s.writeError(w, r, api.Invalid("current", "is not the current password"))
			return
		}
		pair.Succeed()
		addr.Abandon()
	}
	h, err := password.Hash(req.Password)
	release()
	if err != nil {
		s.writeError(w, r, fmt.Errorf("hashing the password: %w", err))
		return
	}
	rec := &passwordRecord{Hash: h}
	if t, ok := s.tokens.Get(me.TokenID); ok && own && t.Kind == api.TokenSession {
		rec.KeepSession = t.ID
	}
	if has {
		_, err = s.passwords.Update(r.Context(), name, rec, cur.Version)
	} else {
		_, err = s.passwords.Create(r.Context(), name, rec)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.endSessions(r.Context(), name, rec.Version, rec.KeepSession)
	w.WriteHeader(http.StatusNoContent)
}

// errLogin is the one answer to a failed login, whatever failed.
var errLogin = &api.Error{Code: api.CodeUnauthorized, Message: "invalid user name or password"}

// login exchanges a user name and password for a session token. An
// unknown user and a wrong password take the same path and answer; failed
// attempts are throttled per address and user name together, and per
// address, counting attempts from their start so that concurrent ones get
// no further than consecutive ones; password hashing is bounded.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req api.Login
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.actor = &api.AuditActor{Kind: auth.KindUser, Name: req.User}
	rq.resource = api.Ref{Kind: "user", Name: req.User}
	if len(req.User) > 253 {
		req.User = req.User[:253]
	}
	pair, addr, ok := s.beginLogin(w, r, req.User)
	if !ok {
		rq.outcome = api.AuditDenied
		return
	}
	release, ok := s.hashSlot(w, r)
	if !ok {
		pair.Abandon()
		addr.Abandon()
		return
	}
	u, uok := s.users.Get(req.User)
	pw, pok := s.passwords.Get(req.User)
	good := false
	if uok && pok {
		good, _ = password.Verify(req.Password, pw.Hash)
	} else {
		password.VerifyDummy(req.Password)
	}
	release()
	if !good || u.Disabled {
		pair.Fail()
		addr.Fail()
		rq.outcome = api.AuditDenied
		s.writeError(w, r, errLogin)
		return
	}
	// A success clears the pair's failures, not the address's: logging in
	// to one's own account must not buy more guesses at others.
	pair.Succeed()
	addr.Abandon()
	ttl := s.cfg.SessionTTL
	tok, id, err := s.mintToken(r.Context(), auth.PrefixSession, &tokenRecord{
		Kind: api.TokenSession, Name: "login", User: u.Name, ExpiresAt: time.Now().UTC().Add(ttl)})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rq.actor.Token = id
	writeJSON(w, http.StatusOK, api.Session{Token: tok, User: u.Name, ExpiresAt: time.Now().UTC().Add(ttl)})
}

// logout ends the session whose token made the request.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	me := auth.FromContext(r.Context())
	if t, ok := s.tokens.Get(me.TokenID); ok && t.Kind == api.TokenSession {
		s.deleteToken(r.Context(), t)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	me := auth.FromContext(r.Context())
	out := api.WhoAmI{Kind: me.Kind, Name: me.Name, Superadmin: me.IsSuperadmin(), TokenID: me.TokenID,
		Project: me.Project, Role: me.Role, Roles: map[string]string{}}
	for _, p := range listAll(s.projects, nil) {
		if role := auth.EffectiveRole(me, p.Name, p.Spec.Members[me.Name]); role != "" {
			out.Roles[p.Name] = role
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	out := api.List[api.Role]{}
	for _, name := range api.Roles {
		role := api.Role{Name: name}
		for _, p := range auth.RolePermissions(name) {
			role.Permissions = append(role.Permissions, string(p))
		}
		out.Items = append(out.Items, role)
	}
	writeJSON(w, http.StatusOK, out)
}

func writeRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(roundUp(d).Seconds())))
}

// roundUp rounds a wait up to whole seconds, at least one.
func roundUp(d time.Duration) time.Duration {
	s := (d + time.Second - 1) / time.Second * time.Second
	if s < time.Second {
		s = time.Second
	}
	return s
}

// deleteToken removes a token record.
func (s *Server) deleteToken(ctx context.Context, t *tokenRecord) {
	if t.ID == "" {
		return // written before tokens recorded their id; revoke by deleting the user
	}
	if err := s.tokens.Delete(ctx, t.ID, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("revoking token", "token", t.ID, "err", err)
	}
}

// revokeHostTokens removes the tokens of a host's earlier registrations.
func (s *Server) revokeHostTokens(ctx context.Context, host string) {
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindHost && t.Name == host }) {
		s.deleteToken(ctx, t)
	}
}
