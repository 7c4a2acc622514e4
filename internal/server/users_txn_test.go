package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Creating a user that exists changes nothing: its password still logs
// it in. (The user's password was deleted before the creation failed with
// 409.)
func TestCreateExistingUserKeepsItsPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	for _, req := range []api.UserCreate{{Name: "r-member"}, {Name: "r-member", Password: "another-Secret-9"}} {
		if _, err := e.super.CreateUser(ctx, req); statusOfErr(err) != http.StatusConflict {
			t.Fatalf("creating an existing user: %v, want 409", err)
		}
	}
	if _, err := e.client("", "").Login(ctx, "r-member", "pw-r-member-secret"); err != nil {
		t.Errorf("the user's own password after a creation of its name was refused: %v", err)
	}
}

// Deleting a user is all or nothing: when the store refuses part of it
// (etcd at its quota takes deletions but not the membership updates), the
// user, its password and its memberships all stay; once it can, all go,
// and a new user of the same name inherits no role. (The user, its
// password and tokens were deleted one by one and failed membership
// updates ignored: a user of the same name made later got the old roles.)
func TestDeleteUserAllOrNothing(t *testing.T) {
	t.Parallel()
	s, c := startOn(t, t.TempDir(), Config{StoreQuotaBytes: 16 << 20})
	ctx := context.Background()
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser(ctx, api.UserCreate{Name: "x", Password: "x-Password-long-9"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"p", api.DefaultProject} {
		if err := c.SetMember(ctx, p, "x", api.RoleAdmin); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreateToken(ctx, api.TokenCreate{Name: "t", User: "x"}); err != nil {
		t.Fatal(err)
	}
	s.guards.mu.Lock()
	s.guards.reclaimAt, s.guards.reclaimEvery = time.Now(), time.Hour
	s.guards.mu.Unlock()
	val := strings.Repeat("x", 512<<10)
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		_, full = s.st.Client().Put(ctx, fmt.Sprintf("/test-fill/%04d", i), val)
	}
	if !store.IsNoSpace(full) {
		t.Fatalf("filling the store: %v, want etcd's no-space error", full)
	}

	// The handler itself, as a superadmin's request reaches it.
	req := httptest.NewRequest("DELETE", "/v1/users/x", nil)
	req.SetPathValue("user", "x")
	req = req.WithContext(auth.WithIdentity(ctx, auth.Identity{Kind: auth.KindUser, Name: "root", Superadmin: true}))
	rec := httptest.NewRecorder()
	s.deleteUser(rec, req)
	_, userLeft := s.users.Get("x")
	_, pwLeft := s.passwords.Get("x")
	var memberships []string
	for _, p := range listAll(s.projects, func(p *api.Project) bool { return p.Spec.Members["x"] != "" }) {
		memberships = append(memberships, p.Name)
	}
	whole := userLeft && pwLeft && len(memberships) == 2
	gone := !userLeft && !pwLeft && len(memberships) == 0
	if !whole && !gone {
		t.Fatalf("deleting user x at the store's quota answered %d, and left: user %v, password %v, memberships %v: want all or nothing",
			rec.Code, userLeft, pwLeft, memberships)
	}

	if _, err := s.st.Client().Delete(ctx, "/test-fill/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	s.guards.mu.Lock()
	s.guards.reclaimEvery = 0
	s.guards.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = c.DeleteUser(ctx, "x"); err == nil || statusOfErr(err) == http.StatusNotFound {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil && statusOfErr(err) != http.StatusNotFound {
		t.Fatalf("deleting x once the store takes writes: %v", err)
	}
	if _, err := c.CreateUser(ctx, api.UserCreate{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if u, err := c.GetUser(ctx, "x"); err != nil || len(u.Roles) != 0 || u.HasPassword {
		t.Errorf("a new user x: %+v %v, want no role and no password of the old one", u, err)
	}
	if ts, err := c.ListTokens(ctx, "x"); err != nil || len(ts) != 0 {
		t.Errorf("a new user x has tokens: %v %v", ts, err)
	}
}
