package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// A join token made for no host joins new hosts (and hosts revoked), never
// an existing host that holds credentials, even one whose agent is down:
// that needs a token made for its name, which joins that name only. (Any
// join token re-registered an existing host once it was not ready, and
// got all its VMs' specs and user data.)
func TestJoinTokenCannotTakeOverAHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	anon := e.client("", "")
	st := api.HostStatus{CPUs: 4, MemoryMiB: 4096}
	register := func(token, host string) (*api.AgentCredentials, error) {
		return anon.Register(ctx, api.AgentRegister{JoinToken: token, Host: host, Status: st})
	}
	newToken := func(host string) string {
		jt, err := e.super.CreateJoinToken(ctx, api.JoinTokenCreate{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		if jt.Host != host {
			t.Fatalf("join token for %q says it is for %q", host, jt.Host)
		}
		return jt.Token
	}
	if _, err := register(newToken(""), "h9"); err != nil {
		t.Fatalf("a new host with a token for none: %v", err)
	}
	// Its agent goes away; the host keeps its credentials.
	if _, err := e.s.markHostNotReady(ctx, "h9"); err != nil {
		t.Fatal(err)
	}
	any := newToken("")
	if _, err := register(any, "h9"); statusOfErr(err) != http.StatusConflict {
		t.Fatalf("joining existing host h9 with a token for no host: %v, want 409", err)
	}
	if _, err := register(newToken("h9"), "h10"); statusOfErr(err) != http.StatusForbidden {
		t.Errorf("joining h10 with a token for h9: %v, want 403", err)
	}
	if _, err := register(newToken("h9"), "h9"); err != nil {
		t.Errorf("joining h9 again with a token made for it: %v", err)
	}
	// The refused token was not used up: it joins a new host.
	if _, err := register(any, "h11"); err != nil {
		t.Errorf("the token refused for h9, on a new host: %v", err)
	}
	// Revoked, a host joins again with any token.
	if _, err := e.super.RevokeHost(ctx, "h9"); err != nil {
		t.Fatal(err)
	}
	if _, err := register(newToken(""), "h9"); err != nil {
		t.Errorf("joining revoked host h9 with a token for no host: %v", err)
	}
	// A token bound to a provider's host name, or an invalid one, is refused.
	if _, err := e.super.CreateJoinToken(ctx, api.JoinTokenCreate{Host: "Not_A_Name"}); statusOfErr(err) != http.StatusBadRequest {
		t.Errorf("a join token for an invalid host name: %v, want 400", err)
	}
}

// A registration that fails after taking its join token (the store busy
// or out of reach) gives the token back for the rest of its life: the
// agent joins with it when it asks again. It is given back once only,
// and an expired one not at all.
func TestFailedRegistrationGivesTheJoinTokenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	jt, err := e.super.CreateJoinToken(ctx, api.JoinTokenCreate{})
	if err != nil {
		t.Fatal(err)
	}
	id, rec, err := e.s.checkJoinToken(ctx, jt.Token)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.consumeJoinToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	anon := e.client("", "")
	st := api.HostStatus{CPUs: 4, MemoryMiB: 4096}
	if _, err := anon.Register(ctx, api.AgentRegister{JoinToken: jt.Token, Host: "back1", Status: st}); statusOfErr(err) != http.StatusUnauthorized {
		t.Fatalf("registering with a consumed token: %v, want 401", err)
	}
	e.s.restoreJoinToken(ctx, id, rec)
	e.s.restoreJoinToken(ctx, id, rec) // a second give-back changes nothing
	if _, err := anon.Register(ctx, api.AgentRegister{JoinToken: jt.Token, Host: "back1", Status: st}); err != nil {
		t.Fatalf("registering with the token given back: %v", err)
	}
	if _, err := anon.Register(ctx, api.AgentRegister{JoinToken: jt.Token, Host: "back2", Status: st}); statusOfErr(err) != http.StatusUnauthorized {
		t.Fatalf("the token given back worked twice: %v, want 401", err)
	}
	rec.ExpiresAt = time.Now().Add(-time.Minute)
	e.s.restoreJoinToken(ctx, id, rec)
	if _, _, err := e.s.checkJoinToken(ctx, jt.Token); err == nil {
		t.Error("an expired token was given back")
	}
}
