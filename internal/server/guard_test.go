package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// endWithin is how long a stream may go on after its access ended before
// a test gives up on it: far above the second or two it takes on a busy
// machine under the race detector, far below forever, which is what it
// took before streams were guarded. A liveness bound, not a speed one.
const endWithin = 15 * time.Second

// streamEnds waits for an NDJSON stream to end and reports how long it took.
func streamEnds[T any](t *testing.T, what string, items <-chan T, errs <-chan error, since time.Time) {
	t.Helper()
	timeout := time.After(endWithin)
	for {
		select {
		case _, ok := <-items:
			if !ok {
				err := <-errs
				t.Logf("%s ended %s after the change (%v)", what, time.Since(since).Round(time.Millisecond), err)
				return
			}
		case <-timeout:
			t.Fatalf("%s still open %s after the change", what, endWithin)
		}
	}
}

// openEvents opens an event stream and waits until the server serves it.
func openEvents(t *testing.T, c *client.Client) (<-chan api.Event, <-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	items, errs := c.Events(ctx)
	// A request that answered proves the stream is open: its handler
	// wrote the headers before the client returned.
	select {
	case err := <-errs:
		cancel()
		t.Fatalf("opening an event stream: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	return items, errs, cancel
}

// member makes a user with role in project pa and returns an API token.
func (e *env) member(ctx context.Context, name, role string) string {
	tok := e.newUser(ctx, name)
	if role != "" {
		if err := e.super.SetMember(ctx, "pa", name, role); err != nil {
			e.t.Fatal(err)
		}
	}
	return tok
}

// runningOnFakeAgent reports vm1 of project pa running on h1 and answers
// its console requests as h1's agent would, echoing what it is sent. It
// returns the agent's watch, to see when it ends.
func (e *env) runningOnFakeAgent(ctx context.Context) (<-chan api.AgentMessage, <-chan error) {
	h1 := e.client(e.tokens["h1"], "")
	vm, err := e.super.WithProject("pa").GetVM(ctx, "vm1")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := h1.PutVMStatus(ctx, vm.Key(), api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: vm.Generation}); err != nil {
		e.t.Fatal(err)
	}
	msgs, errs := h1.WatchHost(ctx, "h1")
	// Once synced, the watch is the one console requests go to.
	for m := range msgs {
		if m.Type == api.AgentMsgSynced {
			break
		}
	}
	out := make(chan api.AgentMessage, 16)
	go func() {
		defer close(out)
		for m := range msgs {
			if m.Type == api.AgentMsgStream && m.Stream != nil {
				go func(id string) {
					c, err := h1.DialStream(ctx, id)
					if err != nil {
						return
					}
					defer c.Close()
					_, _ = io.Copy(c, c)
				}(m.Stream.ID)
			}
			select {
			case out <- m:
			default:
			}
		}
	}()
	return out, errs
}

// openConsole opens vm1's serial console and checks it echoes.
func openConsole(t *testing.T, c *client.Client) net.Conn {
	t.Helper()
	conn, err := c.Console(context.Background(), "vm1", "serial")
	if err != nil {
		t.Fatalf("opening the console: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("console echo: %q %v", buf, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// consoleEnds waits for a console to be closed by the server and returns
// the error its read ended with.
func consoleEnds(t *testing.T, conn net.Conn, since time.Time) error {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(endWithin))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("console still open %s after the change", endWithin)
	}
	t.Logf("console ended %s after the change: %v", time.Since(since).Round(time.Millisecond), err)
	return err
}

// TestStreamsEndWhenAccessEnds: event streams, consoles and an agent's
// watch end promptly when the token they opened with is revoked or
// expires, their user is disabled, deleted or demoted, or they lose the
// role or host they need; streams of others keep flowing.
func TestStreamsEndWhenAccessEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	// The superadmin's own stream sees everything below and must survive it.
	superEvents, superErrs, _ := openEvents(t, e.super)

	t.Run("api token revoked", func(t *testing.T) {
		tok := e.member(ctx, "u-api", "viewer")
		items, errs, _ := openEvents(t, e.client(tok, "pa"))
		me, err := e.client(tok, "").WhoAmI(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := e.super.RevokeToken(ctx, me.TokenID); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})
	t.Run("session logged out", func(t *testing.T) {
		e.member(ctx, "u-session", "viewer")
		sess, err := e.client("", "").Login(ctx, "u-session", "pw-u-session-secret")
		if err != nil {
			t.Fatal(err)
		}
		c := e.client(sess.Token, "pa")
		items, errs, _ := openEvents(t, c)
		start := time.Now()
		if err := c.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})
	t.Run("session expired", func(t *testing.T) {
		e.member(ctx, "u-expiry", "viewer")
		sess, err := e.client("", "").Login(ctx, "u-expiry", "pw-u-expiry-secret")
		if err != nil {
			t.Fatal(err)
		}
		items, errs, _ := openEvents(t, e.client(sess.Token, "pa"))
		// Sessions last the server's session TTL (12h here); shorten this
		// one in the store, as time would.
		rec := e.sessionRecord(t, sess.Token)
		rec.ExpiresAt = time.Now().Add(time.Second)
		if _, err := e.s.tokens.Update(ctx, rec.ID, rec, rec.Version); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, rec.ExpiresAt)
	})
	t.Run("narrowed token, user leaves the project", func(t *testing.T) {
		e.member(ctx, "u-narrow", "member")
		tc, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "narrow", User: "u-narrow", Project: "pa", Role: "viewer"})
		if err != nil {
			t.Fatal(err)
		}
		items, errs, _ := openEvents(t, e.client(tc.Secret, "pa"))
		start := time.Now()
		if err := e.super.RemoveMember(ctx, "pa", "u-narrow"); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})
	t.Run("user disabled", func(t *testing.T) {
		tok := e.member(ctx, "u-disabled", "viewer")
		items, errs, _ := openEvents(t, e.client(tok, "pa"))
		start := time.Now()
		yes := true
		if _, err := e.super.UpdateUser(ctx, "u-disabled", api.UserUpdate{Disabled: &yes}); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})
	t.Run("user deleted", func(t *testing.T) {
		tok := e.member(ctx, "u-deleted", "viewer")
		items, errs, _ := openEvents(t, e.client(tok, "pa"))
		start := time.Now()
		if err := e.super.DeleteUser(ctx, "u-deleted"); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})
	t.Run("superadmin demoted", func(t *testing.T) {
		if _, err := e.super.CreateUser(ctx, api.UserCreate{Name: "u-super", Password: "pw-u-super-secret", Superadmin: true}); err != nil {
			t.Fatal(err)
		}
		tc, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "t", User: "u-super"})
		if err != nil {
			t.Fatal(err)
		}
		items, errs, _ := openEvents(t, e.client(tc.Secret, ""))
		start := time.Now()
		no := false
		if _, err := e.super.UpdateUser(ctx, "u-super", api.UserUpdate{Superadmin: &no}); err != nil {
			t.Fatal(err)
		}
		streamEnds(t, "event stream", items, errs, start)
	})

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	e.runningOnFakeAgent(agentCtx)
	t.Run("console, role lowered", func(t *testing.T) {
		tok := e.member(ctx, "u-console", "operator")
		conn := openConsole(t, e.client(tok, "pa"))
		start := time.Now()
		if err := e.super.SetMember(ctx, "pa", "u-console", "viewer"); err != nil {
			t.Fatal(err)
		}
		if err := consoleEnds(t, conn, start); err == nil || !strings.Contains(err.Error(), "vm.console") {
			t.Errorf("the console ended with %v, want the reason (no longer holds vm.console)", err)
		}
	})
	t.Run("console, narrowed token revoked", func(t *testing.T) {
		e.member(ctx, "u-console2", "admin")
		tc, err := e.super.CreateToken(ctx, api.TokenCreate{Name: "narrow", User: "u-console2", Project: "pa", Role: "operator"})
		if err != nil {
			t.Fatal(err)
		}
		conn := openConsole(t, e.client(tc.Secret, "pa"))
		start := time.Now()
		if err := e.super.RevokeToken(ctx, tc.Token.ID); err != nil {
			t.Fatal(err)
		}
		consoleEnds(t, conn, start)
	})
	stopAgent()

	t.Run("host revoked ends its agent's watch", func(t *testing.T) {
		h2 := e.client(e.tokens["h2"], "")
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		msgs, errs := h2.WatchHost(wctx, "h2")
		// A host with nothing is told what its guests must not reach,
		// then that it has been sent everything.
		for _, want := range []string{api.AgentMsgGuestDeny, api.AgentMsgSynced} {
			if m := <-msgs; m.Type != want {
				t.Fatalf("watch message %+v, want %s", m, want)
			}
		}
		start := time.Now()
		h, err := e.super.RevokeHost(ctx, "h2")
		if err != nil {
			t.Fatal(err)
		}
		if h.Status.State != api.HostNotReady {
			t.Errorf("revoked host is %s, want %s", h.Status.State, api.HostNotReady)
		}
		streamEnds(t, "agent watch", msgs, errs, start)
		// Its token acts for it no more.
		var se *client.StatusError
		if _, err := h2.PutHostStatus(ctx, "h2", api.HostStatus{CPUs: 1, MemoryMiB: 1}); !errors.As(err, &se) || se.Status != 401 {
			t.Errorf("heartbeat with the revoked host token: %v, want 401", err)
		}
		// It joins again, under the same name.
		e.tokens["h2"] = e.registerHost(ctx, "h2")
		if h, err := e.super.GetHost(ctx, "h2"); err != nil || h.Status.State != api.HostReady {
			t.Errorf("h2 after joining again: %+v %v", h, err)
		}
	})

	// The superadmin's stream saw all of it and is still open.
	select {
	case err := <-superErrs:
		t.Fatalf("the superadmin's event stream ended: %v", err)
	default:
	}
	n := 0
	for {
		select {
		case _, ok := <-superEvents:
			if !ok {
				t.Fatal("the superadmin's event stream ended")
			}
			n++
			continue
		default:
		}
		break
	}
	if n == 0 {
		t.Error("the superadmin's event stream carried no event")
	}
}

// sessionRecord finds the stored record of a session token.
func (e *env) sessionRecord(t *testing.T, token string) *tokenRecord {
	t.Helper()
	id, err := e.s.identify(token)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := e.s.tokens.Get(id.TokenID)
	if !ok {
		t.Fatal("no record of the session")
	}
	return rec
}

// TestStreamCapsPerUser: one user holds at most the configured number of
// event streams and consoles; one more answers 429 naming the limit,
// others are not affected, and a closed stream frees its place.
func TestStreamCapsPerUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Edge: EdgeConfig{MaxEventStreamsPerUser: 2, MaxConsolesPerUser: 1}})
	ctx := context.Background()
	viewer := e.as(api.RoleViewer, "pa")
	_, _, cancel1 := openEvents(t, viewer)
	openEvents(t, viewer)
	tooMany := func(err error) bool {
		var se *client.StatusError
		return errors.As(err, &se) && se.Status == 429 && strings.Contains(se.Error(), "2 event streams open")
	}
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	_, errs := viewer.Events(tctx)
	select {
	case err := <-errs:
		if !tooMany(err) {
			t.Fatalf("a third event stream: %v, want 429 naming the limit of 2", err)
		}
	case <-time.After(endWithin):
		t.Fatal("a third event stream was opened, want 429 naming the limit of 2")
	}
	// Another user is not counted with the viewer.
	openEvents(t, e.as(api.RoleOperator, "pa"))
	// A stream that ends gives its place back.
	cancel1()
	deadline := time.Now().Add(endWithin)
	for {
		sctx, scancel := context.WithCancel(ctx)
		_, errs := viewer.Events(sctx)
		select {
		case err := <-errs:
			scancel()
			if !tooMany(err) {
				t.Fatalf("reopening: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatal("the closed stream's place was not given back")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		case <-time.After(300 * time.Millisecond):
		}
		scancel()
		break
	}

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	e.runningOnFakeAgent(agentCtx)
	op := e.as(api.RoleOperator, "pa")
	first := openConsole(t, op)
	_, err := op.Console(ctx, "vm1", "serial")
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != 429 || !strings.Contains(se.Error(), "1 consoles open") {
		t.Fatalf("a second console: %v, want 429 naming the limit of 1", err)
	}
	first.Close()
	deadline = time.Now().Add(endWithin)
	for {
		c, err := op.Console(ctx, "vm1", "serial")
		if err == nil {
			c.Close()
			break
		}
		if !errors.As(err, &se) || se.Status != 429 || time.Now().After(deadline) {
			t.Fatalf("a console after closing the first: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkGuardCheckAll measures one re-check of 1000 open event streams
// of 10 users, the work each change to tokens, users or projects costs.
func BenchmarkGuardCheckAll(b *testing.B) {
	e := newEnv(b, Config{})
	ctx := context.Background()
	var streams []*guardedStream
	for u := range 10 {
		name := "bench" + string(rune('a'+u))
		tok := e.member(ctx, name, api.RoleViewer)
		id, err := e.s.identify(tok)
		if err != nil {
			b.Fatal(err)
		}
		for range 100 {
			streams = append(streams, &guardedStream{kind: streamEvents, token: tok, id: id,
				still: e.s.rolesAccess(id), end: func(string) {}, released: make(chan struct{})})
		}
	}
	e.s.guard.mu.Lock()
	for _, gs := range streams {
		e.s.guard.streams[gs] = struct{}{}
	}
	e.s.guard.mu.Unlock()
	b.ResetTimer()
	for b.Loop() {
		e.s.guard.checkAll()
	}
	b.StopTimer()
	for _, gs := range streams {
		if gs.ended.Load() {
			b.Fatal("a valid stream was ended")
		}
	}
}
