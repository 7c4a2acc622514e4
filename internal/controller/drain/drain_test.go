package drain

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// fakeRecords holds operations in memory.
type fakeRecords struct {
	mu  sync.Mutex
	ops map[string]*api.Operation
}

func clone(op *api.Operation) *api.Operation {
	c := *op
	c.Result = append(json.RawMessage(nil), op.Result...)
	return &c
}

func (f *fakeRecords) Running() []*api.Operation {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*api.Operation
	for _, op := range f.ops {
		if op.Kind == api.OpHostDrain && !op.Done() {
			out = append(out, clone(op))
		}
	}
	return out
}

func (f *fakeRecords) Get(id string) (*api.Operation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op, ok := f.ops[id]
	if !ok {
		return nil, false
	}
	return clone(op), true
}

func (f *fakeRecords) Update(_ context.Context, id string, change func(*api.Operation)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	op, ok := f.ops[id]
	if !ok || op.Done() {
		return errGone
	}
	c := clone(op)
	change(c)
	f.ops[id] = c
	return nil
}

func (f *fakeRecords) result(t *testing.T, id string) (*api.Operation, api.HostDrain) {
	t.Helper()
	op, _ := f.Get(id)
	var res api.HostDrain
	if err := json.Unmarshal(op.Result, &res); err != nil {
		t.Fatal(err)
	}
	return op, res
}

// fakeVMs holds VMs in memory.
type fakeVMs struct {
	mu  sync.Mutex
	vms map[string]*api.VM
}

func (f *fakeVMs) Get(key string) (*api.VM, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm, ok := f.vms[key]
	if !ok {
		return nil, false
	}
	c := *vm
	return &c, true
}

func (f *fakeVMs) set(vm *api.VM) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms[vm.Key()] = vm
}

// fakeMover starts moves to "h2"; a move ends as end says (succeeded
// when it is not set) once release is closed, or when cancelled.
type fakeMover struct {
	vms     *fakeVMs
	mu      sync.Mutex
	ops     map[string]*api.Operation
	started []string // VM keys
	cancels []string // operation IDs
	release chan struct{}
}

func newFakeMover(vms *fakeVMs) *fakeMover {
	m := &fakeMover{vms: vms, ops: map[string]*api.Operation{}, release: make(chan struct{})}
	close(m.release)
	return m
}

func (m *fakeMover) Check(vm *api.VM) error {
	if vm.Spec.PowerState == api.PowerPaused {
		return fmt.Errorf("vm %q is paused", vm.Name)
	}
	return nil
}

func (m *fakeMover) Start(_ context.Context, _ store.Writer, vm *api.VM) (string, *api.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := fmt.Sprintf("mig-%d", len(m.ops)+1)
	op := &api.Operation{ID: id, Kind: api.OpVMMigrate, Status: api.OpRunning, Target: api.Ref{Kind: "vm", Name: vm.Name, Project: vm.Project}}
	m.ops[id] = op
	m.started = append(m.started, vm.Key())
	return "h2", op, nil
}

// running records a move under way, as one started before a restart.
func (m *fakeMover) running(id, vm string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, n := api.SplitKey(vm)
	m.ops[id] = &api.Operation{ID: id, Kind: api.OpVMMigrate, Status: api.OpRunning, Target: api.Ref{Kind: "vm", Name: n, Project: p}}
}

func (m *fakeMover) Wait(ctx context.Context, id string, d time.Duration) (*api.Operation, error) {
	m.mu.Lock()
	op, ok := m.ops[id]
	if ok && op.Done() {
		c := *op
		m.mu.Unlock()
		return &c, nil
	}
	m.mu.Unlock()
	select {
	case <-m.release:
	case <-ctx.Done():
	case <-time.After(d):
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	op, ok = m.ops[id]
	if !ok {
		return nil, fmt.Errorf("operation %s not found", id)
	}
	select {
	case <-m.release:
		if !op.Done() {
			op.Status = api.OpSucceeded
			vm, _ := m.vms.Get(api.Key(op.Target.Project, op.Target.Name))
			vm.Spec.Host = "h2"
			m.vms.set(vm)
		}
	default:
	}
	c := *op
	return &c, nil
}

func (m *fakeMover) Cancel(_ context.Context, op *api.Operation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cancels = append(m.cancels, op.ID)
	m.ops[op.ID].Status = api.OpCancelled
	return nil
}

func (m *fakeMover) startedVMs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.started...)
}

func vmOn(name, host, power string) *api.VM {
	vm := &api.VM{Meta: api.Meta{Project: "p", Name: name}}
	vm.Spec.Host, vm.Spec.PowerState = host, power
	return vm
}

// drainOp is a running drain of h1 with these moves.
func drainOp(moves ...api.DrainMove) *api.Operation {
	res, _ := json.Marshal(api.HostDrain{Host: "h1", Moves: moves})
	return &api.Operation{ID: "d1", Kind: api.OpHostDrain, Status: api.OpRunning, Target: api.Ref{Kind: "host", Name: "h1"}, Result: res}
}

func setup(op *api.Operation, vms ...*api.VM) (*Controller, *fakeRecords, *fakeVMs, *fakeMover) {
	fv := &fakeVMs{vms: map[string]*api.VM{}}
	for _, vm := range vms {
		fv.set(vm)
	}
	fm := newFakeMover(fv)
	recs := &fakeRecords{ops: map[string]*api.Operation{op.ID: op}}
	c := New(Config{VMs: fv, Mover: fm, Poll: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	return c, recs, fv, fm
}

// lead runs the controller's loop over the fakes until ctx ends.
func lead(ctx context.Context, c *Controller, recs Records) {
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		c.tick(ctx, recs, nil)
		select {
		case <-ctx.Done():
			c.wg.Wait()
			return
		case <-t.C:
		}
	}
}

func waitDone(t *testing.T, recs *fakeRecords, id string) *api.Operation {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if op, _ := recs.Get(id); op.Done() {
			return op
		}
		if time.Now().After(deadline) {
			op, _ := recs.Get(id)
			t.Fatalf("drain not done: %s %s", op.Status, op.Result)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDrainMovesEachVM: a running VM migrates, a stopped one moves, a
// paused one is skipped with why, and the drain fails naming it.
func TestDrainMovesEachVM(t *testing.T) {
	op := drainOp(api.DrainMove{VM: "p/a", Outcome: Pending}, api.DrainMove{VM: "p/b", Outcome: Pending}, api.DrainMove{VM: "p/c", Outcome: Pending})
	c, recs, _, fm := setup(op, vmOn("a", "h1", api.PowerRunning), vmOn("b", "h1", api.PowerStopped), vmOn("c", "h1", api.PowerPaused))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lead(ctx, c, recs)
	done := waitDone(t, recs, "d1")
	_, res := recs.result(t, "d1")
	want := []string{Migrated, Moved, Skipped}
	for i, mv := range res.Moves {
		if mv.Outcome != want[i] {
			t.Errorf("move %d: %+v, want %s", i, mv, want[i])
		}
	}
	if !strings.Contains(res.Moves[2].Error, "paused") {
		t.Errorf("paused vm's move: %+v", res.Moves[2])
	}
	if done.Status != api.OpFailed || done.Error == nil || !strings.Contains(done.Error.Message, "p/c") {
		t.Errorf("drain with a paused vm: %s %+v", done.Status, done.Error)
	}
	if got := fm.startedVMs(); len(got) != 2 {
		t.Errorf("moves started for %v, want p/a and p/b", got)
	}
}

// TestDrainResumes: a drain left by a server that stopped carries on
// from its result, re-checking each VM: the move under way is waited
// for, not made again; a VM the stopped server had moved counts as
// migrated; a VM whose move started without its operation being
// recorded is waited for through the VM's migration; a VM that left the
// host by other means is skipped but not left behind; the rest move.
func TestDrainResumes(t *testing.T) {
	op := drainOp(
		api.DrainMove{VM: "p/a", Outcome: Migrated, Target: "h2", Operation: "old-1"},
		api.DrainMove{VM: "p/b", Outcome: Moving, Target: "h2", Operation: "old-2"},
		api.DrainMove{VM: "p/c", Outcome: Moving},
		api.DrainMove{VM: "p/d", Outcome: Moving},
		api.DrainMove{VM: "p/e", Outcome: Pending},
		api.DrainMove{VM: "p/f", Outcome: Pending},
	)
	d := vmOn("d", "h1", api.PowerRunning)
	d.Spec.Migration = &api.Migration{Operation: "old-4", Target: "h2"}
	c, recs, _, fm := setup(op, vmOn("a", "h2", api.PowerRunning), vmOn("b", "h1", api.PowerRunning), vmOn("c", "h2", api.PowerStopped),
		d, vmOn("e", "h3", api.PowerRunning), vmOn("f", "h1", api.PowerRunning))
	fm.running("old-2", "p/b")
	fm.running("old-4", "p/d")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lead(ctx, c, recs)
	done := waitDone(t, recs, "d1")
	_, res := recs.result(t, "d1")
	if done.Status != api.OpSucceeded {
		t.Errorf("resumed drain: %s %+v", done.Status, done.Error)
	}
	want := []struct{ outcome, op string }{{Migrated, "old-1"}, {Migrated, "old-2"}, {Moved, ""}, {Migrated, "old-4"}, {Skipped, ""}, {Migrated, "mig-3"}}
	for i, mv := range res.Moves {
		if mv.Outcome != want[i].outcome || mv.Operation != want[i].op {
			t.Errorf("move %d: %+v, want %s by %q", i, mv, want[i].outcome, want[i].op)
		}
	}
	if got := fm.startedVMs(); len(got) != 1 || got[0] != "p/f" {
		t.Errorf("moves started for %v, want p/f alone", got)
	}
}

// TestDrainCancelFlag: the cancel flag, set in the record by whichever
// server took the cancel, cancels the move under way and the rest.
func TestDrainCancelFlag(t *testing.T) {
	op := drainOp(api.DrainMove{VM: "p/a", Outcome: Pending}, api.DrainMove{VM: "p/b", Outcome: Pending})
	c, recs, fv, fm := setup(op, vmOn("a", "h1", api.PowerRunning), vmOn("b", "h1", api.PowerRunning))
	fm.release = make(chan struct{}) // moves hang
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lead(ctx, c, recs)
	deadline := time.Now().Add(10 * time.Second)
	for len(fm.startedVMs()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no move started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := recs.Update(ctx, "d1", func(op *api.Operation) {
		var res api.HostDrain
		_ = json.Unmarshal(op.Result, &res)
		res.Cancel = true
		op.Result, _ = json.Marshal(res)
	}); err != nil {
		t.Fatal(err)
	}
	done := waitDone(t, recs, "d1")
	_, res := recs.result(t, "d1")
	if done.Status != api.OpCancelled {
		t.Errorf("cancelled drain: %s", done.Status)
	}
	for _, mv := range res.Moves {
		if mv.Outcome != Cancelled {
			t.Errorf("move %+v, want cancelled", mv)
		}
	}
	if len(fm.cancels) != 1 || fm.cancels[0] != "mig-1" {
		t.Errorf("moves cancelled: %v, want mig-1", fm.cancels)
	}
	for _, key := range []string{"p/a", "p/b"} {
		if vm, _ := fv.Get(key); vm.Spec.Host != "h1" {
			t.Errorf("%s on %s after the cancel", key, vm.Spec.Host)
		}
	}
}

// TestDrainTermEnds: when the leader's term ends mid-move the run stops
// and writes nothing more: the move stays under way, recorded with its
// operation, for the next leader; nothing is cancelled.
func TestDrainTermEnds(t *testing.T) {
	op := drainOp(api.DrainMove{VM: "p/a", Outcome: Pending}, api.DrainMove{VM: "p/b", Outcome: Pending})
	c, recs, _, fm := setup(op, vmOn("a", "h1", api.PowerRunning), vmOn("b", "h1", api.PowerRunning))
	fm.release = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() { lead(ctx, c, recs); close(ended) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, res := recs.result(t, "d1")
		if res.Moves[0].Operation != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first move's operation was not recorded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-ended
	cur, res := recs.result(t, "d1")
	if cur.Done() || res.Moves[0].Outcome != Moving || res.Moves[0].Operation != "mig-1" || res.Moves[1].Outcome != Pending {
		t.Errorf("after the term: %s %+v", cur.Status, res.Moves)
	}
	if len(fm.cancels) != 0 {
		t.Errorf("the term's end cancelled %v", fm.cancels)
	}
}

// TestDrainOneAtATime: two drains of one host, taken by two servers at
// once: the older runs, the newer fails as a conflict before it moves
// anything.
func TestDrainOneAtATime(t *testing.T) {
	op := drainOp(api.DrainMove{VM: "p/a", Outcome: Pending})
	op.CreatedAt = time.Now().Add(-time.Second)
	c, recs, _, fm := setup(op, vmOn("a", "h1", api.PowerRunning))
	second := drainOp(api.DrainMove{VM: "p/a", Outcome: Pending})
	second.ID, second.CreatedAt = "d2", time.Now()
	recs.ops["d2"] = second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lead(ctx, c, recs)
	if done := waitDone(t, recs, "d1"); done.Status != api.OpSucceeded {
		t.Errorf("the first drain: %s %+v", done.Status, done.Error)
	}
	done := waitDone(t, recs, "d2")
	_, res := recs.result(t, "d2")
	if done.Status != api.OpFailed || done.Error == nil || done.Error.Code != api.CodeConflict || !strings.Contains(done.Error.Message, "d1") {
		t.Errorf("the second drain: %s %+v", done.Status, done.Error)
	}
	if res.Moves[0].Outcome != Cancelled || res.Moves[0].Operation != "" {
		t.Errorf("the second drain's move: %+v", res.Moves[0])
	}
	if got := fm.startedVMs(); len(got) != 1 {
		t.Errorf("moves started: %v, want one", got)
	}
}
