package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Token records live under the store's "tokens/<id>" keys; only the hash of
// a token is ever stored.
type tokenRecord struct {
	Hash      string    `json:"hash"`
	Kind      string    `json:"kind"` // admin, host
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

func tokenKey(id string) string { return "tokens/" + id }

// tokenCache remembers verified tokens for a short while so that a busy
// client does not cost a store read per request.
type tokenCache struct {
	st *store.Store
	mu sync.Mutex
	m  map[string]cachedIdentity // by token hash
}

type cachedIdentity struct {
	id      auth.Identity
	expires time.Time
}

const tokenCacheTTL = 10 * time.Second

func newTokenCache(st *store.Store) *tokenCache {
	return &tokenCache{st: st, m: map[string]cachedIdentity{}}
}

// identify resolves a bearer token to an identity.
func (c *tokenCache) identify(ctx context.Context, token string) (auth.Identity, error) {
	_, id, ok := auth.ParseToken(token)
	if !ok {
		return auth.Anonymous, errors.New("malformed token")
	}
	h := auth.Hash(token)
	now := time.Now()
	c.mu.Lock()
	ci, hit := c.m[h]
	c.mu.Unlock()
	if hit && now.Before(ci.expires) {
		return ci.id, nil
	}
	raw, err := c.st.GetKey(ctx, tokenKey(id))
	if err != nil {
		return auth.Anonymous, fmt.Errorf("looking up token: %w", err)
	}
	var rec tokenRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return auth.Anonymous, fmt.Errorf("decoding token record: %w", err)
	}
	if !auth.Verify(token, rec.Hash) {
		return auth.Anonymous, errors.New("token does not match")
	}
	if !rec.ExpiresAt.IsZero() && now.After(rec.ExpiresAt) {
		return auth.Anonymous, errors.New("token expired")
	}
	ident := auth.Identity{Kind: rec.Kind, Name: rec.Name}
	exp := now.Add(tokenCacheTTL)
	if !rec.ExpiresAt.IsZero() && rec.ExpiresAt.Before(exp) {
		exp = rec.ExpiresAt
	}
	c.mu.Lock()
	c.m[h] = cachedIdentity{id: ident, expires: exp}
	c.mu.Unlock()
	return ident, nil
}

// mint creates and stores a new token for an identity and returns it.
func (c *tokenCache) mint(ctx context.Context, prefix string, ident auth.Identity, ttl time.Duration) (string, error) {
	token, id := auth.NewToken(prefix)
	rec := tokenRecord{Hash: auth.Hash(token), Kind: ident.Kind, Name: ident.Name, CreatedAt: time.Now().UTC()}
	if ttl > 0 {
		rec.ExpiresAt = rec.CreatedAt.Add(ttl)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	if err := c.st.CreateKey(ctx, tokenKey(id), raw, 0); err != nil {
		return "", fmt.Errorf("storing token: %w", err)
	}
	return token, nil
}

// ensureAdminToken creates the admin token at first start and writes it
// 0600 into the data dir; later starts read it back.
func (s *Server) ensureAdminToken(ctx context.Context) error {
	path := s.AdminTokenFile()
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if _, err := s.tokens.identify(ctx, tok); err == nil {
			s.adminToken = tok
			return nil
		}
		s.log.Warn("admin token file does not match the store; minting a new one", "path", path)
	}
	tok, err := s.tokens.mint(ctx, auth.PrefixAdmin, auth.Identity{Kind: auth.KindAdmin, Name: "admin"}, 0)
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
// the unix socket. A request with a bad token is refused outright; one with
// none is anonymous and left to the route's policy.
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return auth.Anonymous, &api.Error{Code: api.CodeUnauthorized, Message: "Authorization header must be \"Bearer <token>\""}
		}
		id, err := s.tokens.identify(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			s.log.Debug("token refused", "err", err)
			return auth.Anonymous, &api.Error{Code: api.CodeUnauthorized, Message: "invalid or expired token"}
		}
		return id, nil
	}
	if uid, ok := r.Context().Value(connKey{}).(int); ok && (uid == 0 || uid == os.Getuid()) {
		return auth.Identity{Kind: auth.KindAdmin, Name: fmt.Sprintf("uid:%d", uid)}, nil
	}
	return auth.Anonymous, nil
}
