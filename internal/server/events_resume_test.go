package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestEventsResumeAtAnotherServer: events carry the store's revision, the
// same at every server; a stream opened at another server with ?since=
// the last revision seen gives exactly the events missed, in order, then
// the new ones; a revision compacted away is refused as gone, one not
// reached yet as invalid.
func TestEventsResumeAtAnotherServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, _ := e.second(t, Config{})
	onA := e.as(api.RoleMember, "pa")
	onB, err := client.New(client.Config{URL: "https://" + b.Addr().String(), Token: e.tokens[api.RoleMember], CAFile: b.CAFile(), Project: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	mkNet := func(c *client.Client, name string) {
		t.Helper()
		if _, err := c.CreateNetwork(ctx, api.NetworkCreate{Name: name}); err != nil {
			t.Fatalf("creating network %s: %v", name, err)
		}
	}

	sctx, stop := context.WithCancel(ctx)
	events, errc := onA.Events(sctx, api.EventNetwork)
	mkNet(onA, "n1")
	first := nextEvent(t, events, errc)
	if first.Object.Name != "n1" || first.Revision <= 0 {
		t.Fatalf("first event %+v, want n1 with a revision", first)
	}
	stop()
	// Missed while no stream was open, one through each server.
	mkNet(onA, "n2")
	mkNet(onB, "n3")
	rctx, rstop := context.WithCancel(ctx)
	defer rstop()
	resumed, rerrc := onB.FollowEvents(rctx, client.EventOptions{Types: []string{api.EventNetwork}, Since: first.Revision})
	last := first.Revision
	for _, want := range []string{"n2", "n3"} {
		ev := nextEvent(t, resumed, rerrc)
		if ev.Object.Name != want || ev.Action != "created" || ev.Revision <= last {
			t.Fatalf("resumed event %+v (after revision %d), want %s created", ev, last, want)
		}
		last = ev.Revision
	}
	mkNet(onA, "n4")
	if ev := nextEvent(t, resumed, rerrc); ev.Object.Name != "n4" || ev.Revision <= last {
		t.Fatalf("live event %+v, want n4 after %d", ev, last)
	}
	rstop()

	// Out of range: too new, and compacted away.
	_, ferrc := onB.FollowEvents(ctx, client.EventOptions{Since: last + 1_000_000})
	if err := <-ferrc; statusOfErr(err) != http.StatusBadRequest {
		t.Fatalf("a revision not reached yet: %v, want 400", err)
	}
	if _, err := e.s.st.Client().Compact(ctx, e.s.st.Rev()); err != nil {
		t.Fatalf("compacting: %v", err)
	}
	_, gerrc := onB.FollowEvents(ctx, client.EventOptions{Since: first.Revision})
	var ae *api.Error
	if err := <-gerrc; !errors.As(err, &ae) || ae.Code != api.CodeGone || statusOfErr(err) != http.StatusGone {
		t.Fatalf("a compacted revision: %v, want 410 gone", err)
	}
}

// TestFollowEventsThroughServerLoss: a client following events through
// one server, when that server becomes unreachable, goes on at another
// one from the last event it got: nothing missed, nothing twice.
func TestFollowEventsThroughServerLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, _ := e.second(t, Config{})
	// The first server is reached through a proxy the test can cut.
	px := newCutProxy(t, e.s.Addr().String())
	c, err := client.New(client.Config{URL: "https://" + px.addr(), Servers: []string{"https://" + b.Addr().String()},
		Token: e.tokens[api.RoleMember], CAFile: e.s.CAFile(), Project: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	onB, err := client.New(client.Config{URL: "https://" + b.Addr().String(), Token: e.tokens[api.RoleMember], CAFile: b.CAFile(), Project: "pa"})
	if err != nil {
		t.Fatal(err)
	}
	events, errc := c.FollowEvents(ctx, client.EventOptions{Types: []string{api.EventNetwork}})
	seen := map[string]int{}
	var order []string
	wait := func(name string) {
		t.Helper()
		for seen[name] == 0 {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the stream ended: %v", <-errc)
				}
				seen[ev.Object.Name]++
				order = append(order, ev.Object.Name)
			case <-time.After(20 * time.Second):
				t.Fatalf("no event for %s within 20 s (seen %v)", name, order)
			}
		}
	}
	if _, err := onB.CreateNetwork(ctx, api.NetworkCreate{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	wait("before")
	px.cut()
	for _, n := range []string{"during-1", "during-2"} {
		if _, err := onB.CreateNetwork(ctx, api.NetworkCreate{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	wait("during-1")
	wait("during-2")
	for name, n := range seen {
		if n != 1 {
			t.Fatalf("%s delivered %d times (order %v)", name, n, order)
		}
	}
	if len(order) != 3 || order[1] != "during-1" || order[2] != "during-2" {
		t.Fatalf("events %v, want before, during-1, during-2", order)
	}
}

// nextEvent is the next event of a stream; the test fails if the stream
// ends or carries nothing for 15 s.
func nextEvent(t *testing.T, events <-chan api.Event, errc <-chan error) api.Event {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatalf("the stream ended: %v", <-errc)
		}
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no event within 15 s")
	}
	return api.Event{}
}

// cutProxy forwards TCP connections to a target until cut, then closes
// them all and refuses new ones.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(p.cut)
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
