package balance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// env is a real store with the collections the controller reads.
type env struct {
	st      *store.Store
	hosts   *store.Collection[api.Host]
	vms     *store.Collection[api.VM]
	ops     *store.Collection[api.Operation]
	records *store.Collection[Record]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st,
		hosts:   store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev }),
		vms:     store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev }),
		ops:     store.NewCollection(st, "operations", func(o *api.Operation, rev int64) { o.Version = rev }),
		records: store.NewCollection(st, "balance", func(r *Record, rev int64) { r.Version = rev }),
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) host(t *testing.T, name string, cpus int) {
	t.Helper()
	h := &api.Host{Status: api.HostStatus{State: api.HostReady, CPUs: cpus, MemoryMiB: 16384}}
	h.Name = name
	if _, err := e.hosts.Create(context.Background(), name, h); err != nil {
		t.Fatal(err)
	}
}

func (e *env) vm(t *testing.T, name, host string) {
	t.Helper()
	v := &api.VM{Spec: api.VMSpec{Host: host, VCPUs: 1, MemoryMiB: 512, PowerState: api.PowerRunning},
		Status: api.VMStatus{PowerState: api.PowerRunning, PID: 100}}
	v.Name, v.Project = name, "p"
	if _, err := e.vms.Create(context.Background(), v.Key(), v); err != nil {
		t.Fatal(err)
	}
}

// fixedDemand is a Demand of fixed figures.
type fixedDemand map[string]api.PlanUsage

func (d fixedDemand) VMDemand(_ context.Context, vms []*api.VM) (map[string]api.PlanUsage, []string, error) {
	out := map[string]api.PlanUsage{}
	for _, v := range vms {
		if u, ok := d[v.Key()]; ok {
			out[v.Key()] = u
		}
	}
	return out, nil, nil
}

// migrations records the migrations asked for and stores their
// operations, running until finish.
type migrations struct {
	e    *env
	mu   sync.Mutex
	asks []string
}

func (m *migrations) migrate(ctx context.Context, w store.Writer, key, target string) (*api.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asks = append(m.asks, key+">"+target)
	project, name := api.SplitKey(key)
	op := &api.Operation{ID: fmt.Sprintf("op%d", len(m.asks)), Kind: api.OpVMMigrate, Status: api.OpRunning,
		Target: api.Ref{Kind: "vm", Name: name, Project: project}}
	if _, err := w.Txn(ctx, m.e.ops.OpCreate(op.ID, op)); err != nil {
		return nil, err
	}
	return op, nil
}

func (m *migrations) asked() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.asks)
}

// finish ends an operation as succeeded and moves its VM.
func (e *env) finish(t *testing.T, id, to string) {
	t.Helper()
	ctx := context.Background()
	op, _ := e.ops.Get(id)
	done := store.Clone(op)
	done.Status, done.FinishedAt = api.OpSucceeded, time.Now()
	vm, _ := e.vms.Get(api.Key(op.Target.Project, op.Target.Name))
	nv := store.Clone(vm)
	nv.Spec.Host = to
	if _, err := e.st.Txn(ctx, e.ops.OpUpdate(id, done, op.Version), e.vms.OpUpdate(vm.Key(), nv, vm.Version)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) set(t *testing.T, s api.BalanceSettings) {
	t.Helper()
	ctx := context.Background()
	if cur, ok := e.records.Get(SettingsKey); ok {
		if _, err := e.records.Update(ctx, SettingsKey, &Record{Settings: &s}, cur.Version); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := e.records.Create(ctx, SettingsKey, &Record{Settings: &s}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestControllerModes: off records nothing to do; advise records one
// move and starts nothing, cycle after cycle; automatic starts it once,
// waits for it, and then, the load even, starts nothing more; off again
// clears the recommendations. Busy VMs stay put.
func TestControllerModes(t *testing.T) {
	e := newEnv(t)
	e.host(t, "a", 4)
	e.host(t, "b", 4)
	for _, n := range []string{"v1", "v2", "v3"} {
		e.vm(t, n, "a")
	}
	e.vm(t, "busy", "b")
	demand := fixedDemand{"p/v1": {CPU: 1, MemoryMiB: 512}, "p/v2": {CPU: 1, MemoryMiB: 512}, "p/v3": {CPU: 1, MemoryMiB: 512}, "p/busy": {CPU: 0.9, MemoryMiB: 512}}
	m := &migrations{e: e}
	c := New(Config{Hosts: e.hosts, VMs: e.vms, Ops: e.ops, Records: e.records, Demand: demand,
		Busy: func(key string) bool {
			if key == "p/busy" {
				return true
			}
			for _, op := range e.ops.Select(func(o *api.Operation) bool { return !o.Done() }) {
				if api.Key(op.Target.Project, op.Target.Name) == key {
					return true
				}
			}
			return false
		},
		Migrate: m.migrate, Tick: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Lead(ctx, e.st) }()
	t.Cleanup(func() { cancel(); <-done })

	status := func() *Record { r, _ := e.records.Get(StatusKey); return r }
	// Off from the start: nothing is written.
	time.Sleep(100 * time.Millisecond)
	if r := status(); r != nil {
		t.Errorf("off from the start wrote %+v", r.Cycle)
	}

	e.set(t, api.BalanceSettings{Mode: api.BalanceAdvise, IntervalSeconds: 1, CooldownSeconds: 60})
	waitFor(t, "an advise cycle", func() bool { r := status(); return r != nil && r.Cycle.Mode == api.BalanceAdvise })
	r := status()
	if len(r.Moves) != 1 || r.Moves[0].VM != "p/v1" || r.Moves[0].To != "b" || r.Moves[0].Reason == "" {
		t.Fatalf("advise: moves %+v, want p/v1 to b with a reason", r.Moves)
	}
	if r.Cycle.Measured != 4 || r.Cycle.VMs != 4 {
		t.Errorf("cycle %+v: want 4 VMs, all measured", r.Cycle)
	}
	first := r.Cycle.At
	waitFor(t, "a second advise cycle", func() bool { return status().Cycle.At.After(first) })
	if got := m.asked(); len(got) != 0 {
		t.Fatalf("advise started migrations: %v", got)
	}

	e.set(t, api.BalanceSettings{Mode: api.BalanceAutomatic, IntervalSeconds: 1, CooldownSeconds: 60})
	waitFor(t, "an automatic migration", func() bool { return len(m.asked()) > 0 })
	if got := m.asked(); !slices.Equal(got, []string{"p/v1>b"}) {
		t.Fatalf("automatic: migrations %v, want p/v1 to b", got)
	}
	// While it runs, cycles wait for it.
	time.Sleep(1500 * time.Millisecond)
	if got := m.asked(); len(got) != 1 {
		t.Fatalf("migrations while the first ran: %v", got)
	}
	e.finish(t, "op1", "b")
	// The load is even now (2 and 1 cores; moving one more only mirrors
	// it): cycles go on and move nothing.
	at := time.Now()
	waitFor(t, "two more cycles", func() bool { return status().Cycle.At.After(at.Add(time.Second)) })
	if got := m.asked(); len(got) != 1 {
		t.Errorf("migrations after the load evened out: %v", got)
	}
	if r := status(); len(r.Moves) != 0 || r.Cycle.Mode != api.BalanceAutomatic {
		t.Errorf("after: %+v %+v", r.Cycle, r.Moves)
	}

	e.set(t, api.BalanceSettings{Mode: api.BalanceOff})
	waitFor(t, "off again", func() bool { return status().Cycle.Mode == api.BalanceOff })
	if r := status(); len(r.Moves) != 0 {
		t.Errorf("off keeps moves %+v", r.Moves)
	}
}

// TestLiveStats: the CPU demand is the difference of CPU seconds over the
// time between two samples of one process; a VM seen first is sampled
// twice; a new process starts afresh; failures are notes.
func TestLiveStats(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	cpu := map[string]float64{"p/a": 10, "p/b": 100}
	clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	l := &LiveStats{Window: time.Millisecond, Sample: func(_ context.Context, v *api.VM) (api.VMStats, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[v.Key()]++
		if v.Name == "bad" {
			return api.VMStats{}, errors.New("host unreachable")
		}
		clock = clock.Add(2 * time.Second)
		cpu[v.Key()] += 1 // one CPU second per sample, two seconds apart: 0.5 core
		return api.VMStats{Time: clock, CPUSeconds: cpu[v.Key()], MemoryBytes: 256 << 20}, nil
	}}
	mk := func(name string, pid int) *api.VM {
		v := &api.VM{Spec: api.VMSpec{Host: "h"}, Status: api.VMStatus{PID: pid}}
		v.Name, v.Project = name, "p"
		return v
	}
	d, notes, err := l.VMDemand(context.Background(), []*api.VM{mk("a", 1), mk("bad", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if u := d["p/a"]; u.CPU <= 0 || u.MemoryMiB != 256 {
		t.Errorf("demand of a: %+v", u)
	}
	if _, ok := d["p/bad"]; ok || len(notes) != 1 || calls["p/a"] != 2 {
		t.Errorf("notes %v, calls %v", notes, calls)
	}
	// Seen before: one sample.
	if _, _, err := l.VMDemand(context.Background(), []*api.VM{mk("a", 1)}); err != nil || calls["p/a"] != 3 {
		t.Errorf("second round: calls %v, %v", calls, err)
	}
	// A new process (it migrated or restarted): two samples again.
	if _, _, err := l.VMDemand(context.Background(), []*api.VM{mk("a", 2)}); err != nil || calls["p/a"] != 5 {
		t.Errorf("new process: calls %v, %v", calls, err)
	}
	if _, _, err := l.VMDemand(context.Background(), []*api.VM{mk("bad", 1)}); err == nil {
		t.Error("no vm sampled, no error")
	}
}

// TestValidate names the field at fault.
func TestValidate(t *testing.T) {
	for _, c := range []struct {
		s     api.BalanceSettings
		field string
	}{
		{api.BalanceSettings{Mode: "on"}, "mode"},
		{api.BalanceSettings{Mode: "off", Aggressiveness: 6}, "aggressiveness"},
		{api.BalanceSettings{Mode: "off", MaxMoves: 65}, "maxMoves"},
		{api.BalanceSettings{Mode: "off", IntervalSeconds: 86401}, "intervalSeconds"},
		{api.BalanceSettings{Mode: "off", CooldownSeconds: -1}, "cooldownSeconds"},
		{api.BalanceSettings{Mode: "off", HotspotThreshold: 1.1}, "hotspotThreshold"},
	} {
		var ae *api.Error
		if err := Validate(c.s); !errors.As(err, &ae) || ae.Field != c.field {
			t.Errorf("%+v: %v, want an error naming %s", c.s, err, c.field)
		}
	}
	if err := Validate(api.BalanceSettings{Mode: "automatic", Aggressiveness: 5, MaxMoves: 64}); err != nil {
		t.Error(err)
	}
}
