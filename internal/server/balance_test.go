package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/balancer"
	"github.com/polyvisor/polyvisor/internal/controller/balance"
)

// TestBalanceAPI: settings are checked and stored, the leader records a
// cycle at once, recommendations show only while the mode is not off, and
// applying one is refused when it is unknown or out of date.
func TestBalanceAPI(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	b, err := e.super.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Settings.Mode != api.BalanceOff || b.Settings.Aggressiveness != 3 || len(b.Recommendations) != 0 {
		t.Errorf("default balance %+v", b)
	}
	for _, c := range []struct {
		set   api.BalanceSettings
		field string
	}{
		{api.BalanceSettings{}, "mode"},
		{api.BalanceSettings{Mode: "on"}, "mode"},
		{api.BalanceSettings{Mode: "advise", IntervalSeconds: -5}, "intervalSeconds"},
	} {
		_, err := e.super.SetBalance(ctx, c.set)
		var se *client.StatusError
		if client.HTTPStatus(err) != 400 || !errors.As(err, &se) || se.Err.Field != c.field {
			t.Errorf("setting %+v: %v, want 400 naming %s", c.set, err, c.field)
		}
	}
	if _, err := e.super.SetBalance(ctx, api.BalanceSettings{Mode: api.BalanceAdvise, IntervalSeconds: 86400}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err = e.super.Balance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b.LastCycle != nil && b.LastCycle.Mode == api.BalanceAdvise {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no advise cycle: %+v", b.LastCycle)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(b.LastCycle.Hosts) != 2 || b.LastCycle.VMs != 2 {
		t.Errorf("cycle %+v: want the env's 2 hosts and 2 vms", b.LastCycle)
	}
	// A recommendation as a cycle would record it (the next cycle is a
	// day away), and one whose vm has left its source since.
	fresh := api.BalanceMove{ID: balancer.MoveID("pa/vm1", "h1", "h2"), VM: "pa/vm1", From: "h1", To: "h2", Kind: api.BalanceImbalance, Reason: "test"}
	stale := api.BalanceMove{ID: balancer.MoveID("pb/vm1", "h2", "h1"), VM: "pb/vm1", From: "h2", To: "h1", Kind: api.BalanceImbalance, Reason: "test"}
	cur, _ := e.s.balanceRecs.Get(balance.StatusKey)
	if _, err := e.s.balanceRecs.Update(ctx, balance.StatusKey, &balance.Record{Cycle: cur.Cycle, Moves: []api.BalanceMove{fresh, stale}}, cur.Version); err != nil {
		t.Fatal(err)
	}
	if b, err = e.super.Balance(ctx); err != nil || len(b.Recommendations) != 2 {
		t.Fatalf("recommendations %+v, %v", b, err)
	}
	if _, err := e.super.ApplyBalanceRecommendation(ctx, "000000000000"); client.HTTPStatus(err) != 404 {
		t.Errorf("applying an unknown recommendation: %v, want 404", err)
	}
	if _, err := e.super.ApplyBalanceRecommendation(ctx, stale.ID); client.HTTPStatus(err) != 409 || !strings.Contains(err.Error(), "out of date") {
		t.Errorf("applying a stale recommendation: %v, want 409 saying it is out of date", err)
	}
	// The env's hosts run no agent: the vm's create is still in flight,
	// and a recommendation waits for a vm that is busy.
	if _, err := e.super.ApplyBalanceRecommendation(ctx, fresh.ID); client.HTTPStatus(err) != 409 || !strings.Contains(err.Error(), "in flight") {
		t.Errorf("applying the recommendation of a busy vm: %v, want 409 saying it has operations in flight", err)
	}
	// Off: no recommendations shown.
	if b, err = e.super.SetBalance(ctx, api.BalanceSettings{Mode: api.BalanceOff}); err != nil || len(b.Recommendations) != 0 {
		t.Errorf("off: %+v, %v", b, err)
	}
}
