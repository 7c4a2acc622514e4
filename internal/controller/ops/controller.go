package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// opController runs VM operations. Operations on one VM form a queue: the
// head runs (its change is in the VM's spec) and completes when the VM's
// host reports it has converged to the operation's target generation (or
// reports an error for it, or the deadline passes); then the next pending
// operation is applied. Handlers and the controller serialize on a per-VM
// lock, and the queue is rebuilt from the store at start.
type opController struct {
	s *Server

	locks [64]sync.Mutex // striped per-VM locks

	mu        sync.Mutex
	active    map[string][]string // VM key -> ids of its unfinished operations, oldest first
	executing map[string]bool     // direct operations running in this process

	bcastMu sync.Mutex
	bcast   chan struct{} // closed and replaced whenever an operation changes
}

// Retention of finished operations and idempotency records.
const (
	opRetention  = 24 * time.Hour
	tickInterval = time.Second
)

func newOpController(s *Server) *opController {
	return &opController{s: s, active: map[string][]string{}, executing: map[string]bool{}, bcast: make(chan struct{})}
}

func newOperation(kind string, target api.Ref, params any) *api.Operation {
	id, now := newOpID()
	op := &api.Operation{ID: id, Kind: kind, Target: target, Status: api.OpPending, CreatedAt: now}
	if params != nil {
		if raw, err := json.Marshal(params); err == nil {
			op.Params = raw
		}
	}
	return op
}

// lockVM takes the VM's lock and returns its release.
//
// Lock order. Whoever holds more than one of the server's locks takes
// them in this order, and never the other way round:
//
//  1. a VM's lock (lockVM; 64 stripes, so two VMs may share one: never
//     hold two),
//  2. a project's quota lock (quotaGate.lock),
//  3. the placer's mutex (placer.mu),
//  4. the controller's bookkeeping mutex (opController.mu).
//
// Creates and resizes take the VM's lock, then the project's quota lock,
// then check the host's room under the placer's mutex, which they release
// at once: a reservation holds the room until the write is in the index.
// The quota lock is held until the write is done, the VM's lock until the
// operation is queued.
func (c *opController) lockVM(name string) func() {
	h := fnv.New32a()
	h.Write([]byte(name))
	l := &c.locks[h.Sum32()%uint32(len(c.locks))]
	l.Lock()
	return l.Unlock
}

// addActiveLocked queues an operation on a VM; the caller holds its lock.
func (c *opController) addActiveLocked(vm, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.active[vm], id) {
		c.active[vm] = append(c.active[vm], id)
	}
}

func (c *opController) activeOf(vm string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.active[vm])
}

func (c *opController) removeActive(vm, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := slices.DeleteFunc(c.active[vm], func(x string) bool { return x == id })
	if len(ids) == 0 {
		delete(c.active, vm)
	} else {
		c.active[vm] = ids
	}
}

// submit queues a VM operation, applying it at once when the VM has none
// running. An action that cannot apply now is refused with its error.
//
// ifMatch, when not zero, is the VM version the client last read (the
// If-Match header): a VM changed since is a conflict.
//
// key is the VM's store key ("<project>/<name>").
func (c *opController) submit(ctx context.Context, key, kind string, params any, ifMatch int64) (*api.Operation, error) {
	op, _, err := c.submitWith(ctx, key, kind, params, submitOptions{ifMatch: ifMatch})
	return op, err
}

// submitOptions are the optional parts of a submit.
type submitOptions struct {
	// ifMatch, when not zero, is the VM version the client last read.
	ifMatch int64
	// once, when set, returns an unfinished operation of the same kind
	// already queued on the VM instead of queueing another.
	once bool
	// admit, when set, decides under the VM's lock, before the operation
	// is stored, whether it may be queued (a quota, the host's room). It
	// may take locks that come after the VM's lock (see lockVM); done is
	// called once the operation is queued or refused.
	admit func(vm *api.VM) (done func(), err error)
}

// submitWith is submit with options; fresh is false when once found an
// operation already queued, which it returns.
func (c *opController) submitWith(ctx context.Context, key, kind string, params any, o submitOptions) (op *api.Operation, fresh bool, err error) {
	unlock := c.lockVM(key)
	defer unlock()
	_, name := api.SplitKey(key)
	vm, ok := c.s.vms.Get(key)
	if !ok {
		return nil, false, api.NotFound("vm", name)
	}
	if o.once {
		if prev := c.queuedLocked(key, kind); prev != nil {
			return prev, false, nil
		}
	}
	if o.ifMatch != 0 && vm.Version != o.ifMatch {
		return nil, false, api.Conflict("vm %q changed since version %d (it is now at version %d)", name, o.ifMatch, vm.Version)
	}
	if vm.Spec.Deletion != nil {
		return nil, false, api.Conflict("vm %q is being deleted", name)
	}
	if err := c.s.capable(vm, kind); err != nil {
		return nil, false, err
	}
	if o.admit != nil {
		done, err := o.admit(vm)
		if err != nil {
			return nil, false, err
		}
		defer done()
	}
	op = newOperation(kind, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}, params)
	if len(c.activeOf(key)) > 0 {
		op.Message = "waiting for the vm's earlier operations"
		if _, err := c.s.ops.Create(ctx, op.ID, op); err != nil {
			return nil, false, fmt.Errorf("storing operation: %w", err)
		}
	} else {
		// The VM's status may change under us (its host or provider
		// reports); retry on the newest version.
		err := c.startLocked(ctx, vm, op, true)
		for i := 0; i < 10 && errors.Is(err, store.ErrConflict); i++ {
			if vm, ok = c.s.vms.Get(key); !ok {
				return nil, false, api.NotFound("vm", name)
			}
			op.Status = api.OpPending
			err = c.startLocked(ctx, vm, op, true)
		}
		if err != nil {
			return nil, false, err
		}
	}
	c.addActiveLocked(key, op.ID)
	c.s.metrics.opStarted(kind)
	return op, true, nil
}

// queuedLocked returns an unfinished operation of kind on the VM, or nil;
// the caller holds the VM's lock.
func (c *opController) queuedLocked(key, kind string) *api.Operation {
	for _, id := range c.activeOf(key) {
		if op, ok := c.s.ops.Get(id); ok && op.Kind == kind && !op.Done() {
			return op
		}
	}
	return nil
}

// startLocked applies op to vm's spec and stores both; create tells whether
// the operation is new or already stored (pending).
func (c *opController) startLocked(ctx context.Context, vm *api.VM, op *api.Operation, create bool) error {
	nv := store.Clone(vm)
	if err := applyAction(nv, op); err != nil {
		return err
	}
	now := time.Now().UTC()
	changed := !reflect.DeepEqual(nv.Spec, vm.Spec)
	if changed {
		nv.Generation++
		nv.UpdatedAt = now
	}
	opVersion := op.Version
	op.Status, op.StartedAt, op.TargetGeneration, op.Progress, op.Message = api.OpRunning, now, nv.Generation, 10, ""
	op.Deadline = now.Add(deadlineFor(op.Kind, nv))
	var txn []store.Op
	if changed {
		txn = append(txn, c.s.vms.OpUpdate(vm.Key(), nv, vm.Version))
	}
	if create {
		txn = append(txn, c.s.ops.OpCreate(op.ID, op))
	} else {
		txn = append(txn, c.s.ops.OpUpdate(op.ID, op, opVersion))
	}
	if _, err := c.s.st.Txn(ctx, txn...); err != nil {
		return fmt.Errorf("starting %s on vm %q: %w", op.Kind, vm.Name, err)
	}
	if direct(op.Kind) {
		c.runDirect(nv, op)
	}
	return nil
}

// runDirect carries out a direct operation in the background and records
// its outcome; the VM's queue waits for it.
func (c *opController) runDirect(vm *api.VM, op *api.Operation) {
	c.mu.Lock()
	c.executing[op.ID] = true
	c.mu.Unlock()
	var snap api.SnapshotCreate
	_ = json.Unmarshal(op.Params, &snap)
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), op.Deadline)
		defer cancel()
		err := c.s.estate.Exec(ctx, vm, op.Kind, snap)
		unlock := c.lockVM(vm.Key())
		defer unlock()
		c.mu.Lock()
		delete(c.executing, op.ID)
		c.mu.Unlock()
		cur, ok := c.s.ops.Get(op.ID)
		if !ok || cur.Done() {
			return
		}
		status := api.OpSucceeded
		if err != nil {
			status = api.OpFailed
		}
		if ferr := c.finishLocked(context.Background(), cur, status, err); ferr != nil {
			c.s.log.Warn("recording a direct operation", "op", op.ID, "err", ferr)
		}
		go c.reconcile(context.Background(), vm.Key())
	}()
}

// finishLocked records an operation's outcome.
func (c *opController) finishLocked(ctx context.Context, op *api.Operation, status string, cause error, extra ...store.Op) error {
	done := store.Clone(op)
	done.Status = status
	done.FinishedAt = time.Now().UTC()
	if status == api.OpSucceeded {
		done.Progress = 100
	}
	if cause != nil {
		done.Error = toAPIError(cause)
		if done.Error.Code == api.CodeInternal {
			done.Error.Message = cause.Error()
		}
	}
	txn := append([]store.Op{c.s.ops.OpUpdate(op.ID, done, op.Version)}, extra...)
	if _, err := c.s.st.Txn(ctx, txn...); err != nil {
		return fmt.Errorf("finishing operation %s: %w", op.ID, err)
	}
	c.s.metrics.opFinished(op.Kind, status)
	return nil
}

// reconcile advances the operation queue of one VM as far as it can.
func (c *opController) reconcile(ctx context.Context, name string) {
	unlock := c.lockVM(name)
	defer unlock()
	for range 100 { // bounded: every pass finishes or starts an operation
		ids := c.activeOf(name)
		if len(ids) == 0 {
			return
		}
		op, ok := c.s.ops.Get(ids[0])
		if !ok || op.Done() {
			c.removeActive(name, ids[0])
			continue
		}
		progressed, err := c.step(ctx, name, op)
		if err != nil {
			if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
				c.s.log.Warn("advancing operation", "op", op.ID, "vm", name, "err", err)
			}
			return // retried on the next change or tick
		}
		if !progressed {
			return
		}
	}
}

// step moves the head operation of a VM's queue one step; it reports
// whether the queue may advance further now.
func (c *opController) step(ctx context.Context, name string, op *api.Operation) (bool, error) {
	vm, ok := c.s.vms.Get(name)
	if ok && op.Target.UID != "" && vm.UID != op.Target.UID {
		ok = false // a different VM now carries the name
	}
	if op.Status == api.OpPending {
		if !ok {
			return true, c.finishLocked(ctx, op, api.OpFailed, api.Conflict("vm %q was deleted before the operation could run", name))
		}
		pending := store.Clone(op)
		if err := c.startLocked(ctx, vm, pending, false); err != nil {
			var ae *api.Error
			if errors.As(err, &ae) {
				return true, c.finishLocked(ctx, op, api.OpFailed, err)
			}
			return false, err
		}
		return false, nil
	}
	if !ok {
		if op.Kind == api.OpVMDelete {
			return true, c.finishLocked(ctx, op, api.OpSucceeded, nil)
		}
		return true, c.finishLocked(ctx, op, api.OpFailed, api.Conflict("vm %q was deleted", name))
	}
	if direct(op.Kind) {
		c.mu.Lock()
		executing := c.executing[op.ID]
		c.mu.Unlock()
		if !executing {
			return true, c.finishLocked(ctx, op, api.OpFailed, &api.Error{Code: api.CodeUnavailable, Message: "the server restarted while the operation ran; check the vm and try again"})
		}
		return false, nil
	}
	st := vm.Status
	switch {
	case st.Error != nil && st.Error.Generation >= op.TargetGeneration:
		cause := errors.New(st.Error.Message)
		if op.Kind == api.OpVMCreate {
			return true, c.failCreateLocked(ctx, vm, op, cause)
		}
		return true, c.finishLocked(ctx, op, api.OpFailed, cause)
	case op.Kind != api.OpVMDelete && st.ObservedGeneration >= op.TargetGeneration:
		return true, c.finishLocked(ctx, op, api.OpSucceeded, nil)
	case !op.Deadline.IsZero() && time.Now().After(op.Deadline):
		return true, c.failLocked(ctx, vm, op, fmt.Errorf("timed out: host %q did not carry out %s by %s", vm.Spec.Host, op.Kind, op.Deadline.Format(time.RFC3339)))
	}
	if h, ok := c.s.hosts.Get(vm.Spec.Host); ok && h.Status.State == api.HostNotReady && h.Provider == nil {
		return true, c.failLocked(ctx, vm, op, api.Unprocessable("host %q is not ready (no heartbeat since %s)", h.Name, h.Status.LastHeartbeat.Format(time.RFC3339)))
	}
	return false, nil
}

// failLocked fails an operation; a failed create is rolled back.
func (c *opController) failLocked(ctx context.Context, vm *api.VM, op *api.Operation, cause error) error {
	if op.Kind == api.OpVMCreate {
		return c.failCreateLocked(ctx, vm, op, cause)
	}
	return c.finishLocked(ctx, op, api.OpFailed, cause)
}

// failCreateLocked fails a create and rolls it back: the VM is marked for
// deletion so its host removes whatever it made.
func (c *opController) failCreateLocked(ctx context.Context, vm *api.VM, op *api.Operation, cause error) error {
	nv := store.Clone(vm)
	nv.Spec.Deletion = &api.Deletion{RequestedAt: time.Now().UTC()}
	nv.Generation++
	return c.finishLocked(ctx, op, api.OpFailed, fmt.Errorf("creating vm %q: %w (the vm is being removed)", vm.Name, cause),
		c.s.vms.OpUpdate(vm.Key(), nv, vm.Version))
}

// changed returns a channel closed at the next operation change.
func (c *opController) changed() <-chan struct{} {
	c.bcastMu.Lock()
	defer c.bcastMu.Unlock()
	return c.bcast
}

func (c *opController) broadcast() {
	c.bcastMu.Lock()
	close(c.bcast)
	c.bcast = make(chan struct{})
	c.bcastMu.Unlock()
}

// wait returns the operation once it is done or the wait ends.
func (c *opController) wait(ctx context.Context, id string, d time.Duration) (*api.Operation, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		ch := c.changed()
		op, ok := c.s.ops.Get(id)
		if !ok {
			return nil, api.NotFound("operation", id)
		}
		if op.Done() {
			return op, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return op, nil
		case <-ctx.Done():
			return op, nil
		}
	}
}

// run follows VMs and operations until ctx ends.
func (c *opController) run(ctx context.Context) {
	vmCh := c.s.vms.Subscribe(ctx)
	opCh := c.s.ops.Subscribe(ctx)
	c.rebuild()
	for name := range c.snapshotNames() {
		c.reconcile(ctx, name)
	}
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	lastGC := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-vmCh:
			if !ok {
				return
			}
			if key := ch.Obj.Key(); len(c.activeOf(key)) > 0 {
				c.reconcile(ctx, key)
			}
		case ch, ok := <-opCh:
			if !ok {
				return
			}
			c.broadcast()
			if ch.Type != store.Delete && !ch.Obj.Done() && ch.Obj.Target.Kind == "vm" {
				c.mu.Lock()
				known := slices.Contains(c.active[targetKey(ch.Obj.Target)], ch.Name)
				c.mu.Unlock()
				if !known {
					unlock := c.lockVM(targetKey(ch.Obj.Target))
					c.addActiveLocked(targetKey(ch.Obj.Target), ch.Name)
					unlock()
				}
			}
		case <-tick.C:
			for name := range c.snapshotNames() {
				c.reconcile(ctx, name)
			}
			if time.Since(lastGC) > 10*time.Minute {
				c.gc(ctx)
				lastGC = time.Now()
			}
		}
	}
}

func (c *opController) snapshotNames() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.active))
	for k := range c.active {
		out[k] = true
	}
	return out
}

// rebuild loads the unfinished VM operations from the store.
func (c *opController) rebuild() {
	ops := listAll(c.s.ops, func(o *api.Operation) bool { return !o.Done() && o.Target.Kind == "vm" })
	slices.SortFunc(ops, func(a, b *api.Operation) int {
		if d := a.CreatedAt.Compare(b.CreatedAt); d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range ops {
		if !slices.Contains(c.active[targetKey(op.Target)], op.ID) {
			c.active[targetKey(op.Target)] = append(c.active[targetKey(op.Target)], op.ID)
		}
	}
}

// gc deletes finished operations and idempotency records past retention.
func (c *opController) gc(ctx context.Context) {
	cutoff := time.Now().Add(-opRetention)
	for _, op := range listAll(c.s.ops, func(o *api.Operation) bool { return o.Done() && o.FinishedAt.Before(cutoff) }) {
		if err := c.s.ops.Delete(ctx, op.ID, op.Version); err != nil && !errors.Is(err, store.ErrConflict) {
			c.s.log.Warn("removing old operation", "op", op.ID, "err", err)
		}
	}
	for _, rec := range listAll(c.s.idem, func(r *idempotencyRecord) bool { return r.CreatedAt.Before(cutoff) }) {
		_ = c.s.idem.Delete(ctx, rec.Name, rec.Version)
	}
}

// targetKey is the store key of an operation's target.
func targetKey(ref api.Ref) string { return api.Key(ref.Project, ref.Name) }
