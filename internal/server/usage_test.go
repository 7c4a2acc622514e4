package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/usage"
)

// answerUsage plays h1's agent for usage streams: it answers them from a
// real usage store, as the agent does (usage.Answer).
func (e *env) answerUsage(ctx context.Context, st *usage.Store) {
	h1 := e.client(e.tokens["h1"], "")
	msgs, _ := h1.WatchHost(ctx, "h1")
	for m := range msgs {
		if m.Type == api.AgentMsgSynced {
			break
		}
	}
	go func() {
		for m := range msgs {
			if m.Type != api.AgentMsgStream || m.Stream == nil || m.Stream.Console != "usage" {
				continue
			}
			go func(req api.StreamRequest) {
				c, err := h1.DialStream(ctx, req.ID)
				if err != nil {
					return
				}
				defer c.Close()
				_ = json.NewEncoder(c).Encode(usage.Answer(st, "h1", req.Usage))
			}(*m.Stream)
		}
	}()
}

// TestUsageHistoryAPI reads a VM's and a host's history through the API
// from the store of the host's agent: what each caller may see, the
// range and step, bad input named, and plans sized from the history.
func TestUsageHistoryAPI(t *testing.T) {
	e := newEnv(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pa := e.super.WithProject("pa")
	vm, err := pa.GetVM(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := usage.Open(t.TempDir(), usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Two hours of one sample a minute: vm1 at 1.5 cores and 100 MiB,
	// the host at twice that.
	now := time.Now().UTC()
	for m := 120; m > 0; m-- {
		at := now.Add(-time.Duration(m) * time.Minute)
		_ = st.Add(usage.KindVM, vm.UID, at, 1.5, 100<<20)
		_ = st.Add(usage.KindHost, "h1", at, 3, 200<<20)
	}
	// Before them, two weeks of hourly samples growing from 0 to 1.5 cores.
	for hr := 3; hr < 14*24; hr++ {
		_ = st.Add(usage.KindVM, vm.UID, now.Add(-time.Duration(hr)*time.Hour), 1.5*(1-float64(hr)/(14*24)), 100<<20)
	}
	e.answerUsage(ctx, st)

	u, err := pa.VMUsage(ctx, "vm1", client.UsageRange{Since: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if u.StepSeconds != 300 || len(u.Points) < 11 || len(u.Points) > 13 || u.Points[0].CPU != 1.5 || u.Points[0].MemoryBytes != 100<<20 || u.CPUs != 1 {
		t.Fatalf("vm1's last hour: step %d, %d points, %+v", u.StepSeconds, len(u.Points), u)
	}
	u, err = pa.VMUsage(ctx, "vm1", client.UsageRange{Since: "3h", Step: "1h"})
	if err != nil || u.StepSeconds != 3600 || len(u.Points) < 3 || len(u.Points) > 4 {
		t.Fatalf("vm1 hourly: %+v %v", u, err)
	}
	h, err := e.super.HostUsage(ctx, "h1", client.UsageRange{Since: "1h"})
	if err != nil || len(h.Points) < 11 || h.Points[0].CPU != 3 || h.CPUs != 64 {
		t.Fatalf("h1's last hour: %+v %v", h, err)
	}

	// Tenancy: a viewer of pa reads vm1's history; bob (of pb only) finds
	// no vm1 in pa; no project user reads a host's history.
	if _, err := e.client(e.tokens["viewer"], "pa").VMUsage(ctx, "vm1", client.UsageRange{}); err != nil {
		t.Errorf("a viewer reading vm1's usage: %v", err)
	}
	bob := e.client(e.tokens["bob"], "pa")
	if _, err := bob.VMUsage(ctx, "vm1", client.UsageRange{}); client.ErrorCode(err) != api.CodeNotFound {
		t.Errorf("bob reading pa's vm1: %v, want not found", err)
	}
	// bob's own vm1 (in pb) has a history of its own: none.
	if u, err := e.client(e.tokens["bob"], "pb").VMUsage(ctx, "vm1", client.UsageRange{}); err != nil || len(u.Points) != 0 {
		t.Errorf("pb's vm1 shows %v points (%v): another vm's history", u, err)
	}
	for _, who := range []string{"admin", "bob"} {
		if _, err := e.client(e.tokens[who], "").HostUsage(ctx, "h1", client.UsageRange{}); client.ErrorCode(err) != api.CodeForbidden {
			t.Errorf("%s reading h1's usage: %v, want forbidden", who, err)
		}
	}

	// Bad input names the parameter.
	for _, c := range []struct {
		r     client.UsageRange
		field string
	}{
		{client.UsageRange{Since: "yesterday"}, "since"},
		{client.UsageRange{Since: "500d"}, "since"},
		{client.UsageRange{Until: "now"}, "until"},
		{client.UsageRange{Step: "1s"}, "step"},
		{client.UsageRange{Since: "30d", Step: "1m"}, "step"},
	} {
		_, err := pa.VMUsage(ctx, "vm1", c.r)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != c.field {
			t.Errorf("%+v: %v, want invalid %s", c.r, err, c.field)
		}
	}
	// A host whose agent does not answer is unavailable, not empty.
	if _, err := e.super.HostUsage(ctx, "h2", client.UsageRange{}); client.ErrorCode(err) != api.CodeUnavailable {
		t.Errorf("h2 without an agent: %v", err)
	}

	// Plans of the live estate size vm1 from its history (p95 of its
	// hourly means: near 1.5 cores), and pb's vm1, never sampled, by its
	// allocation; the forecast fits the history's growth.
	p, err := e.super.PlanConsolidate(ctx, api.PlanRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var size *api.PlanAssignment
	for i := range p.Placement {
		if p.Placement[i].VM == vm.Key() {
			size = &p.Placement[i]
		}
	}
	if size == nil || size.Size.CPU < 1.3 || size.Size.CPU > 1.5 || size.Source != "history" {
		t.Fatalf("vm1 in the plan: %+v", size)
	}
	if !strings.Contains(strings.Join(p.Warnings, "\n"), "1 of 2 vms have no usage history") {
		t.Errorf("warnings %q", p.Warnings)
	}

	f, err := e.super.PlanForecast(ctx, api.PlanRequest{}, nil)
	if err != nil || len(f.Clusters) != 1 {
		t.Fatalf("forecast %+v: %v", f, err)
	}
	if g := f.Clusters[0].CPU.PerDay; g < 0.05 || g > 0.2 {
		t.Errorf("the forecast's CPU trend %v cores a day, want about 1.5/14", g)
	}

	// The balancer's reader.
	d, err := e.s.UsageDemand().VMDemand(ctx, vm.Key(), time.Hour)
	if err != nil || d.CPU != 1.5 || d.MemoryBytes != 100<<20 || d.Points < 11 {
		t.Errorf("vm1's demand over an hour: %+v %v", d, err)
	}
	d, err = e.s.UsageDemand().HostDemand(ctx, "h1", time.Hour)
	if err != nil || d.CPU != 3 || d.MemoryBytes != 200<<20 {
		t.Errorf("h1's demand over an hour: %+v %v", d, err)
	}
}
