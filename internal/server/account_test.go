package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// errField returns the field an API error names.
func errField(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Field
	}
	return ""
}

// TestNarrowedTokenCannotTakeTheAccount: a token narrowed to viewer of one
// project, belonging to the password-less first superadmin, cannot give
// that superadmin a password (and so log in as a full superadmin), nor
// read or manage the account in any other way.
func TestNarrowedTokenCannotTakeTheAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if u, err := e.super.GetUser(ctx, bootstrapUser); err != nil || u.HasPassword {
		t.Fatalf("the first superadmin: %+v %v; want one without a password", u, err)
	}
	tok, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "ro", Project: "pa", Role: api.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	narrow := e.client(tok.Secret, "pa")
	const pw = "a narrowed token's passphrase"
	if err := narrow.SetPassword(ctx, bootstrapUser, "", pw); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed token setting its superadmin's first password: %v, want 403", err)
	}
	if _, err := e.client("", "").Login(ctx, bootstrapUser, pw); statusOfErr(err) != http.StatusUnauthorized {
		t.Fatalf("login with the password a narrowed token tried to set: %v, want 401", err)
	}
	if u, _ := e.super.GetUser(ctx, bootstrapUser); u == nil || u.HasPassword {
		t.Errorf("the first superadmin has a password after the narrowed token's attempt: %+v", u)
	}
	// Every other account route refuses it too.
	_, errGet := narrow.GetUser(ctx, bootstrapUser)
	_, errList := narrow.ListTokens(ctx, "")
	_, errMake := narrow.CreateToken(ctx, api.TokenCreate{Name: "more"})
	for what, err := range map[string]error{"reading the user": errGet, "listing tokens": errList, "making a token": errMake} {
		if statusOfErr(err) != http.StatusForbidden {
			t.Errorf("narrowed token %s: %v, want 403", what, err)
		}
	}
	// A narrowed token of an ordinary user with a password is refused too,
	// even with the right current password.
	mt, err := e.as(api.RoleMember, "").CreateToken(ctx, api.TokenCreate{Name: "ro", Project: "pa", Role: api.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client(mt.Secret, "pa").SetPassword(ctx, "r-member", "pw-r-member-secret", "another long passphrase"); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("narrowed token changing its user's password: %v, want 403", err)
	}
	// What a narrowed token may still do about itself: say who it is,
	// and revoke itself.
	if w, err := narrow.WhoAmI(ctx); err != nil || w.Superadmin || w.Project != "pa" {
		t.Errorf("whoami with the narrowed token: %+v %v", w, err)
	}
	if err := narrow.RevokeToken(ctx, tok.ID); err != nil {
		t.Errorf("narrowed token revoking itself: %v", err)
	}
}

// TestFirstPassword: a user without a password gets the first one from a
// superadmin, not from a token of its own; a superadmin changing its own
// password gives the current one like everyone else.
func TestFirstPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.CreateUser(ctx, api.UserCreate{Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	ct, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "t", User: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	carol := e.client(ct.Secret, "")
	err = carol.SetPassword(ctx, "carol", "", "carol's own passphrase")
	if statusOfErr(err) != http.StatusForbidden || !strings.Contains(err.Error(), "superadmin") {
		t.Errorf("password-less user setting its first password with a token: %v, want 403 saying a superadmin sets it", err)
	}
	if err := e.super.SetPassword(ctx, "carol", "", "a passphrase from the admin"); err != nil {
		t.Fatalf("superadmin setting carol's first password: %v", err)
	}
	if err := carol.SetPassword(ctx, "carol", "a passphrase from the admin", "carol's own passphrase"); err != nil {
		t.Errorf("carol changing the password she now has: %v", err)
	}

	// The first superadmin, with its full token, sets its own first
	// password; changing it later needs the current one.
	if err := e.super.SetPassword(ctx, bootstrapUser, "", "the first admin passphrase"); err != nil {
		t.Fatalf("first superadmin setting its first password: %v", err)
	}
	err = e.super.SetPassword(ctx, bootstrapUser, "", "a second admin passphrase")
	if statusOfErr(err) != http.StatusBadRequest || errField(err) != "current" {
		t.Errorf("superadmin changing its own password without the current one: %v, want 400 naming current", err)
	}
	if err := e.super.SetPassword(ctx, bootstrapUser, "the first admin passphrase", "a second admin passphrase"); err != nil {
		t.Errorf("superadmin changing its own password with the current one: %v", err)
	}
}

// TestPasswordChangeEndsOtherSessions: changing a password ends the user's
// other login sessions, but not the session that changed it nor the
// user's API tokens; a superadmin's reset ends them all.
func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	anon := e.client("", "")
	login := func(user, pw string) *client.Client {
		t.Helper()
		s, err := anon.Login(ctx, user, pw)
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		return e.client(s.Token, "pa")
	}
	alive := func(c *client.Client) bool {
		_, err := c.WhoAmI(ctx)
		if err != nil && statusOfErr(err) != http.StatusUnauthorized {
			t.Fatalf("whoami: %v", err)
		}
		return err == nil
	}
	a := login("r-member", "pw-r-member-secret")
	b := login("r-member", "pw-r-member-secret")
	other := login("r-viewer", "pw-r-viewer-secret")
	if err := a.SetPassword(ctx, "r-member", "pw-r-member-secret", "a fresh member passphrase"); err != nil {
		t.Fatal(err)
	}
	if !alive(a) {
		t.Error("the session that changed the password was ended")
	}
	if alive(b) {
		t.Error("another session of the user survived the password change")
	}
	if !alive(e.as(api.RoleMember, "pa")) {
		t.Error("the user's API token was revoked by the password change")
	}
	if !alive(other) {
		t.Error("another user's session was ended")
	}

	// A superadmin's reset ends every session of the user.
	if err := e.super.SetPassword(ctx, "r-member", "", "a reset member passphrase"); err != nil {
		t.Fatal(err)
	}
	if alive(a) {
		t.Error("a session survived a superadmin's password reset")
	}
	if !alive(e.as(api.RoleMember, "pa")) {
		t.Error("the user's API token was revoked by a reset")
	}
	if _, err := anon.Login(ctx, "r-member", "a reset member passphrase"); err != nil {
		t.Errorf("login with the reset password: %v", err)
	}
}
