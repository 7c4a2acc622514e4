package leader

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/store"
)

// TestHoldsFollowsTheStore: whoever etcd names as the leader says it
// holds the term, the other candidate says it does not, and once the
// leader steps down it no longer claims the key while the other takes it.
func TestHoldsFollowsTheStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	defer st.Close()
	if err := st.Start(ctx); err != nil {
		t.Fatalf("starting the store: %v", err)
	}
	prefix := "/test/election/controllers"
	mk := func(name string) *Elector {
		return New(Config{Client: st.Client(), Prefix: prefix, Self: Candidate{ID: name + "-id", Name: name}, TTL: time.Second})
	}
	a, b := mk("a"), mk("b")
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan struct{})
	led := make(chan bool, 1)
	go func() {
		defer close(aDone)
		a.Run(actx, func(lctx context.Context, term Term) {
			cur, ok, err := a.Leader(lctx)
			led <- err == nil && ok && a.Holds(cur) && cur.Fence == term.Fence
			<-lctx.Done()
		})
	}()
	select {
	case ok := <-led:
		if !ok {
			t.Fatal("the leader, while leading, does not hold the term the store names")
		}
	case <-ctx.Done():
		t.Fatal("a lone candidate never led")
	}
	go b.Run(ctx, func(lctx context.Context, term Term) { <-lctx.Done() })
	cur, ok, err := a.Leader(ctx)
	if err != nil || !ok || cur.Name != "a" {
		t.Fatalf("the store names %+v (ok %v, err %v), want a", cur, ok, err)
	}
	if !a.Holds(cur) || b.Holds(cur) {
		t.Fatalf("a holds %v, b holds %v; want only a", a.Holds(cur), b.Holds(cur))
	}
	stopA()
	<-aDone
	if a.Holds(cur) {
		t.Fatal("a still claims the term after it stepped down")
	}
	for {
		now, ok, err := b.Leader(ctx)
		if err != nil {
			t.Fatalf("reading the leader: %v", err)
		}
		if ok && now.Name == "b" && b.Holds(now) {
			if a.Holds(now) {
				t.Fatal("a claims b's term")
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("b never took the lead (store names %+v, ok %v)", now, ok)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
