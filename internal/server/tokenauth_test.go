package server

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// A login session cannot make a lasting credential on its own: making an
// API token with it needs the user's password again, and the token ends
// when that password changes, as the sessions do. A token made with an
// API token needs neither. (A stolen session minted a never-expiring
// token that outlived a password change.)
func TestTokenFromSessionNeedsPasswordAndEndsWithIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	sess, err := e.client("", "").Login(ctx, "r-member", "pw-r-member-secret")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client(sess.Token, "pa")
	_, err = c.CreateToken(ctx, api.TokenCreate{Name: "stolen"})
	var ae *api.Error
	if statusOfErr(err) != http.StatusBadRequest || !errors.As(err, &ae) || ae.Field != "current" {
		t.Fatalf("a token made with a session and no password: %v, want 400 naming current", err)
	}
	if _, err := c.CreateToken(ctx, api.TokenCreate{Name: "stolen", Current: "wrong-password"}); statusOfErr(err) != http.StatusBadRequest {
		t.Errorf("a token made with a session and a wrong password: %v, want 400", err)
	}
	made, err := c.CreateToken(ctx, api.TokenCreate{Name: "ok", Current: "pw-r-member-secret"})
	if err != nil {
		t.Fatalf("a token made with a session and the password: %v", err)
	}
	fromToken, err := e.as(api.RoleMember, "pa").CreateToken(ctx, api.TokenCreate{Name: "ci"})
	if err != nil {
		t.Fatalf("a token made with an API token: %v", err)
	}
	for _, tok := range []string{made.Secret, fromToken.Secret} {
		if _, err := e.client(tok, "pa").WhoAmI(ctx); err != nil {
			t.Fatalf("the new token: %v", err)
		}
	}
	if err := c.SetPassword(ctx, "r-member", "pw-r-member-secret", "a-New-password-42"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(made.Secret, "pa").WhoAmI(ctx); statusOfErr(err) != http.StatusUnauthorized {
		t.Errorf("the token made with the session after the password changed: %v, want 401", err)
	}
	if _, err := e.client(fromToken.Secret, "pa").WhoAmI(ctx); err != nil {
		t.Errorf("the token made with an API token after the password changed: %v", err)
	}
	ts, err := e.super.ListTokens(ctx, "r-member")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == made.ID {
			t.Errorf("the ended token is still listed")
		}
	}
}

// With a maximum token lifetime, a token asked never to expire lives that
// long, and a longer one is refused naming the field.
func TestMaxTokenLifetime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxTokenLifetime: time.Hour})
	ctx := context.Background()
	tok, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "forever", User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.ExpiresAt); tok.ExpiresAt.IsZero() || d > time.Hour || d < 59*time.Minute {
		t.Errorf("a token asked never to expire expires at %v, want in an hour", tok.ExpiresAt)
	}
	_, err = e.super.CreateToken(ctx, api.TokenCreate{Name: "long", User: "bob", ExpiresInSeconds: 7200})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Field != "expiresInSeconds" {
		t.Errorf("a token of 2h past a 1h maximum: %v, want invalid naming expiresInSeconds", err)
	}
}
