package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// tokenRecord is a stored token: only the hash of its secret is kept. The
// store key is the token's id.
type tokenRecord struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
	// Kind is api, session or host; records written before users existed
	// say "admin" and belong to the first superadmin.
	Kind string `json:"kind"`
	// Name is the token's name; for a host token, the host's name.
	Name      string    `json:"name"`
	User      string    `json:"user,omitempty"`
	Project   string    `json:"project,omitempty"`
	Role      string    `json:"role,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// Login, on an API token made with a login session, is the user whose
	// session (and password) made it: the token ends when that user's
	// password changes.
	Login   string `json:"login,omitempty"`
	Version int64  `json:"-"`
}

const (
	tokenKindHost   = "host"
	tokenKindLegacy = "admin"
	// bootstrapUser is the first superadmin, made at first start; the
	// token written to <data-dir>/admin.token is one of its API tokens.
	bootstrapUser = "admin"
)

func (rec *tokenRecord) user() string {
	if rec.Kind == tokenKindLegacy {
		return bootstrapUser
	}
	return rec.User
}

func (rec *tokenRecord) view(id string) api.Token {
	kind := rec.Kind
	if kind == tokenKindLegacy {
		kind = api.TokenAPI
	}
	return api.Token{ID: id, Name: rec.Name, Kind: kind, User: rec.user(), Project: rec.Project, Role: rec.Role,
		CreatedAt: rec.CreatedAt, ExpiresAt: rec.ExpiresAt}
}

// prefixOf is the prefix tokens of a kind carry.
func prefixOf(kind string) string {
	switch kind {
	case tokenKindHost:
		return auth.PrefixHost
	case api.TokenSession:
		return auth.PrefixSession
	case tokenKindMetrics:
		return auth.PrefixMetrics
	case tokenKindServer:
		return auth.PrefixPeer
	}
	return auth.PrefixAPI
}

var errBadToken = errors.New("invalid, expired or revoked token")

// identify resolves a bearer token to an identity. Tokens are read from
// the store's index, so a revoked token is refused as soon as its deletion
// returned.
func (s *Server) identify(token string) (auth.Identity, error) {
	prefix, id, ok := auth.ParseToken(token)
	if !ok {
		return auth.Anonymous, errBadToken
	}
	rec, ok := s.tokens.Get(id)
	if !ok || !auth.Verify(token, rec.Hash) {
		return auth.Anonymous, errBadToken
	}
	if !rec.ExpiresAt.IsZero() && time.Now().After(rec.ExpiresAt) {
		return auth.Anonymous, errBadToken
	}
	if prefix != prefixOf(rec.Kind) || s.sessionEnded(rec) {
		return auth.Anonymous, errBadToken
	}
	if rec.Kind == tokenKindHost {
		return auth.Identity{Kind: auth.KindHost, Name: rec.Name, TokenID: id}, nil
	}
	if rec.Kind == tokenKindMetrics {
		return auth.Identity{Kind: auth.KindMetrics, Name: rec.Name, TokenID: id}, nil
	}
	if rec.Kind == tokenKindServer {
		return auth.Identity{Kind: auth.KindServer, Name: rec.Name, TokenID: id}, nil
	}
	u, ok := s.users.Get(rec.user())
	if !ok || u.Disabled {
		return auth.Anonymous, errBadToken
	}
	ident := auth.Identity{Kind: auth.KindUser, Name: u.Name, TokenID: id, Project: rec.Project, Role: rec.Role}
	ident.Superadmin = u.Superadmin
	return ident, nil
}

// mintToken stores a new token and returns its secret.
func (s *Server) mintToken(ctx context.Context, prefix string, rec *tokenRecord) (string, string, error) {
	token, id := auth.NewToken(prefix)
	rec.ID, rec.Hash = id, auth.Hash(token)
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC()
	}
	if _, err := s.tokens.Create(ctx, id, rec); err != nil {
		return "", "", fmt.Errorf("storing token: %w", err)
	}
	return token, id, nil
}

// bootstrap makes, at first start, the default project and the first
// superadmin with an API token written 0600 into the data dir; later
// starts check that token still works and mint a new one if not.
func (s *Server) bootstrap(ctx context.Context) error {
	now := time.Now().UTC()
	if _, ok := s.projects.Get(api.DefaultProject); !ok {
		p := &api.Project{Meta: api.Meta{Name: api.DefaultProject, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec: api.ProjectSpec{Description: "Default project"}}
		if _, err := s.projects.Create(ctx, p.Name, p); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("creating the default project: %w", err)
		}
	}
	if _, ok := s.users.Get(bootstrapUser); !ok {
		u := &api.User{Meta: api.Meta{Name: bootstrapUser, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
			DisplayName: "First superadmin", Superadmin: true}
		if _, err := s.users.Create(ctx, u.Name, u); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("creating the first superadmin: %w", err)
		}
	}
	path := s.AdminTokenFile()
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if id, err := s.identify(tok); err == nil && id.IsSuperadmin() {
			s.adminToken = tok
			return nil
		}
		s.log.Warn("admin token file does not match the store; minting a new one", "path", path)
	}
	tok, _, err := s.mintToken(ctx, auth.PrefixAPI, &tokenRecord{Kind: api.TokenAPI, Name: "bootstrap", User: bootstrapUser})
	if err != nil {
		return fmt.Errorf("creating the admin token: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	s.adminToken = tok
	return nil
}

type connKey struct{}

// connContext marks connections that arrived on the unix socket with the
// peer's uid, so that local root is trusted without a token.
func connContext(local bool) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if !local {
			return ctx
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return ctx
		}
		uid, err := peerUID(uc)
		if err != nil {
			return ctx
		}
		return context.WithValue(ctx, connKey{}, uid)
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

// authenticate finds who makes a request: a bearer token, or local root on
// the unix socket (a superadmin named "uid:<n>", a name no user can
// have). A request with a bad token is refused outright; one with none is
// anonymous and left to the route's rule.
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return auth.Anonymous, &api.Error{Code: api.CodeUnauthorized, Message: "Authorization header must be \"Bearer <token>\""}
		}
		id, err := s.identify(strings.TrimSpace(tok))
		if err != nil {
			return auth.Anonymous, &api.Error{Code: api.CodeUnauthorized, Message: err.Error()}
		}
		return id, nil
	}
	// A browser cannot set headers on a websocket: it offers the token as
	// the subprotocol "bearer.<token>" instead.
	if tok, ok := websocketToken(r); ok {
		id, err := s.identify(tok)
		if err != nil {
			return auth.Anonymous, &api.Error{Code: api.CodeUnauthorized, Message: err.Error()}
		}
		return id, nil
	}
	if part, ok := r.Context().Value(selfKey{}).(string); ok {
		return auth.Identity{Kind: auth.KindUser, Name: selfName(part), Superadmin: true}, nil
	}
	if uid, ok := r.Context().Value(connKey{}).(int); ok && (uid == 0 || uid == os.Getuid()) {
		return auth.Identity{Kind: auth.KindUser, Name: fmt.Sprintf("uid:%d", uid), Superadmin: true}, nil
	}
	return auth.Anonymous, nil
}

// websocketToken finds a token offered as a websocket subprotocol.
func websocketToken(r *http.Request) (string, bool) {
	if r.Header.Get("Upgrade") == "" {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), "bearer."); ok && tok != "" {
				return tok, true
			}
		}
	}
	return "", false
}
