package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Controller runs VM operations. Operations on one VM form a queue: the
// head runs (its change is in the VM's spec) and completes when the VM's
// host reports it has converged to the operation's target generation (or
// reports an error for it, or the deadline passes); then the next pending
// operation is applied. Handlers and the controller serialize on a per-VM
// lock, and the queue is rebuilt from the store at start.
type Controller struct {
	w       store.Writer
	vms     *store.Collection[api.VM]
	ops     *store.Collection[api.Operation]
	hosts   *store.Collection[api.Host]
	idem    *store.Collection[IdempotencyRecord]
	estate  Estate
	metrics Metrics
	errorOf func(error) *api.Error
	log     *slog.Logger

	// migrations holds the targets' sides of migrations (nil: none).
	migrations *store.Collection[api.AgentMigration]

	locks [LockStripes]sync.Mutex // striped per-VM locks

	mu        sync.Mutex
	active    map[string][]string // VM key -> ids of its unfinished operations, oldest first
	resizing  map[string][]string // VM key -> ids of its unfinished reconfigure operations
	executing map[string]bool     // direct operations running in this process
	ran       map[string]bool     // direct operations this leader carried out, this term

	bcastMu sync.Mutex
	bcast   chan struct{} // closed and replaced whenever an operation changes
}

// LockStripes is how many locks the VMs' locks are striped over.
const LockStripes = 64

// Retention of finished operations and idempotency records.
const (
	opRetention  = 24 * time.Hour
	tickInterval = time.Second
)

// Config is what the controller works on: the store's collections it
// reads, the writer its writes go through, and the estates that carry
// out provider VMs' direct operations.
type Config struct {
	Writer      store.Writer
	VMs         *store.Collection[api.VM]
	Ops         *store.Collection[api.Operation]
	Hosts       *store.Collection[api.Host]
	Idempotency *store.Collection[IdempotencyRecord]
	// Migrations holds the targets' sides of migrations.
	Migrations *store.Collection[api.AgentMigration]
	Estate     Estate
	// Metrics counts operations (none when nil).
	Metrics Metrics
	// ErrorOf turns the cause of a failed operation into the error it
	// records (api.Error's own code and message when it is one).
	ErrorOf func(error) *api.Error
	Logger  *slog.Logger
}

// New makes a controller whose queues follow the operations from now on;
// Lead runs its work while the server leads.
func New(cfg Config) *Controller {
	c := &Controller{w: cfg.Writer, vms: cfg.VMs, ops: cfg.Ops, hosts: cfg.Hosts, idem: cfg.Idempotency, migrations: cfg.Migrations,
		estate: cfg.Estate, metrics: cfg.Metrics, errorOf: cfg.ErrorOf, log: cfg.Logger,
		active: map[string][]string{}, resizing: map[string][]string{}, executing: map[string]bool{}, ran: map[string]bool{}, bcast: make(chan struct{})}
	if c.metrics == nil {
		c.metrics = noMetrics{}
	}
	if c.errorOf == nil {
		c.errorOf = defaultErrorOf
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	cfg.Ops.Observe(c.observe)
	c.rebuild()
	return c
}

// defaultErrorOf keeps an api.Error as it is and makes anything else an
// internal error.
func defaultErrorOf(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return &api.Error{Code: api.CodeInternal, Message: "internal error"}
}

// NewOperation makes a pending operation of kind on target, with params
// (JSON-encoded) if not nil.
func NewOperation(kind string, target api.Ref, params any) *api.Operation {
	id, now := NewID()
	op := &api.Operation{ID: id, Kind: kind, Target: target, Status: api.OpPending, CreatedAt: now}
	if params != nil {
		if raw, err := json.Marshal(params); err == nil {
			op.Params = raw
		}
	}
	return op
}

// LockVM takes the VM's lock and returns its release.
//
// Lock order. Whoever holds more than one of the server's locks takes
// them in this order, and never the other way round:
//
//  1. a VM's lock (LockVM; 64 stripes, so two VMs may share one: never
//     hold two),
//  2. the placer's mutex (placement.Placer's),
//  3. the controller's bookkeeping mutex (Controller.mu).
//
// The store's watch takes the placer's mutex and the bookkeeping mutex,
// one at a time, to keep allocations and queues exact as of the index;
// it never takes a VM's lock. So a VM's lock may be held while waiting
// for the store (a write, an admission reading its record), and the two
// mutexes never are. Quotas and hosts' room need no lock of the server's:
// their admission is held by the transaction that writes what it admits
// (package admission), whichever server makes it.
func (c *Controller) LockVM(name string) func() {
	h := fnv.New32a()
	h.Write([]byte(name))
	l := &c.locks[h.Sum32()%uint32(len(c.locks))]
	l.Lock()
	return l.Unlock
}

// observe keeps the queues of unfinished operations, and wakes the
// waiters, on every change of the operations, from the store's watch
// itself: before a write's revision is reached its operation is queued
// (or dequeued), so the queues are exact as of the index, on every server
// whoever leads. It takes no VM lock: a writer holding one waits for the
// watch.
func (c *Controller) observe(ch store.Change[api.Operation]) {
	if ch.Obj.Target.Kind == "vm" {
		key := TargetKey(ch.Obj.Target)
		c.mu.Lock()
		if ch.Type == store.Delete || ch.Obj.Done() {
			c.removeLocked(key, ch.Name)
		} else if !slices.Contains(c.active[key], ch.Name) {
			c.active[key] = append(c.active[key], ch.Name)
			if ch.Obj.Kind == api.OpVMReconfigure {
				c.resizing[key] = append(c.resizing[key], ch.Name)
			}
		}
		c.mu.Unlock()
	}
	c.broadcast()
}

// ActiveOf is the ids of a VM's unfinished operations, oldest first.
func (c *Controller) ActiveOf(vm string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.active[vm])
}

func (c *Controller) removeActive(vm, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(vm, id)
}

func (c *Controller) removeLocked(vm, id string) {
	for _, m := range []map[string][]string{c.active, c.resizing} {
		ids := slices.DeleteFunc(m[vm], func(x string) bool { return x == id })
		if len(ids) == 0 {
			delete(m, vm)
		} else {
			m[vm] = ids
		}
	}
}

// Resizing is the keys of the VMs with unfinished reconfigure operations:
// the only VMs whose PendingSize may exceed their spec. The placer adds
// their growth to its totals at each placement, so that a placement
// costs the VMs being resized, not every VM with an operation under way.
func (c *Controller) Resizing() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.resizing))
	for k := range c.resizing {
		out = append(out, k)
	}
	return out
}

// Submit queues a VM operation, applying it at once when the VM has none
// running. An action that cannot apply now is refused with its error.
//
// ifMatch, when not zero, is the VM version the client last read (the
// If-Match header): a VM changed since is a conflict.
//
// key is the VM's store key ("<project>/<name>").
func (c *Controller) Submit(ctx context.Context, key, kind string, params any, ifMatch int64) (*api.Operation, error) {
	op, _, err := c.SubmitWith(ctx, key, kind, params, SubmitOptions{IfMatch: ifMatch})
	return op, err
}

// SubmitOptions are the optional parts of a submit.
type SubmitOptions struct {
	// IfMatch, when not zero, is the VM version the client last read.
	IfMatch int64
	// Once, when set, returns an unfinished operation of the same kind
	// already queued on the VM instead of queueing another.
	Once bool
	// Admit, when set, decides under the VM's lock, before the operation
	// is stored, whether it may be queued (a quota, the host's room), and
	// returns the conditions that hold its decision (package admission),
	// which the operation's transaction carries. When one of them fails
	// the submit decides again from the newer state.
	Admit func(ctx context.Context, vm *api.VM) ([]store.Op, error)
	// Writer, when set, is what the operation is stored through instead
	// of the controller's writer: a leader's, under its fence.
	Writer store.Writer
}

// SubmitWith is Submit with options; fresh is false when Once found an
// operation already queued, which it returns.
func (c *Controller) SubmitWith(ctx context.Context, key, kind string, params any, o SubmitOptions) (op *api.Operation, fresh bool, err error) {
	unlock := c.LockVM(key)
	defer unlock()
	_, name := api.SplitKey(key)
	w := o.Writer
	if w == nil {
		w = c.w
	}
	for attempt := 1; ; attempt++ {
		vm, ok := c.vms.Get(key)
		if !ok {
			return nil, false, api.NotFound("vm", name)
		}
		if o.Once {
			if prev := c.queuedLocked(key, kind); prev != nil {
				return prev, false, nil
			}
		}
		// If-Match concerns the VM as the client asked; a write that
		// lost a race meanwhile (a report of its host) does not.
		if attempt == 1 && o.IfMatch != 0 && vm.Version != o.IfMatch {
			return nil, false, api.Conflict("vm %q changed since version %d (it is now at version %d)", name, o.IfMatch, vm.Version)
		}
		if vm.Spec.Deletion != nil {
			return nil, false, api.Conflict("vm %q is being deleted", name)
		}
		if err := c.Capable(vm, kind); err != nil {
			return nil, false, err
		}
		var conds []store.Op
		if o.Admit != nil {
			if conds, err = o.Admit(ctx, vm); err != nil {
				return nil, false, err
			}
		}
		op = NewOperation(kind, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}, params)
		if len(c.ActiveOf(key)) > 0 {
			op.Message = "waiting for the vm's earlier operations"
			if _, err = w.Txn(ctx, append([]store.Op{c.ops.OpCreate(op.ID, op)}, conds...)...); err != nil {
				err = fmt.Errorf("storing operation: %w", err)
			}
		} else {
			err = c.startLocked(ctx, w, vm, op, true, conds...)
		}
		if err == nil {
			c.metrics.OpStarted(kind)
			return op, true, nil
		}
		// The VM's status may change under us (its host or provider
		// reports), or another admission decided first: again, on the
		// newest state.
		retry := admission.Retry(err)
		if (!retry && !errors.Is(err, store.ErrConflict)) || attempt == admission.MaxAttempts {
			return nil, false, admission.Lost(err)
		}
		if retry {
			if berr := admission.Backoff(ctx, attempt); berr != nil {
				return nil, false, err
			}
		}
	}
}

// queuedLocked returns an unfinished operation of kind on the VM, or nil;
// the caller holds the VM's lock.
func (c *Controller) queuedLocked(key, kind string) *api.Operation {
	for _, id := range c.ActiveOf(key) {
		if op, ok := c.ops.Get(id); ok && op.Kind == kind && !op.Done() {
			return op
		}
	}
	return nil
}

// startLocked applies op to vm's spec and stores both through w; create
// tells whether the operation is new or already stored (pending). A
// direct operation is carried out by the leader once it sees it running.
func (c *Controller) startLocked(ctx context.Context, w store.Writer, vm *api.VM, op *api.Operation, create bool, conds ...store.Op) error {
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
	op.Deadline = now.Add(DeadlineFor(op.Kind, nv))
	var txn []store.Op
	if changed {
		txn = append(txn, c.vms.OpUpdate(vm.Key(), nv, vm.Version))
	}
	if create {
		txn = append(txn, c.ops.OpCreate(op.ID, op))
	} else {
		txn = append(txn, c.ops.OpUpdate(op.ID, op, opVersion))
	}
	txn = append(txn, conds...)
	if _, err := w.Txn(ctx, txn...); err != nil {
		return fmt.Errorf("starting %s on vm %q: %w", op.Kind, vm.Name, err)
	}
	return nil
}

// runDirect carries out a direct operation in the background, as the
// leader, and records its outcome through w; the VM's queue waits for it.
// The caller holds the VM's lock.
func (c *Controller) runDirect(t *term, vm *api.VM, op *api.Operation) {
	c.mu.Lock()
	c.executing[op.ID] = true
	c.ran[op.ID] = true
	c.mu.Unlock()
	var snap api.SnapshotCreate
	_ = json.Unmarshal(op.Params, &snap)
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), op.Deadline)
		defer cancel()
		err := c.estate.Exec(ctx, vm, op.Kind, snap)
		unlock := c.LockVM(vm.Key())
		defer unlock()
		c.mu.Lock()
		delete(c.executing, op.ID)
		c.mu.Unlock()
		cur, ok := c.ops.Get(op.ID)
		if !ok || cur.Done() {
			return
		}
		status := api.OpSucceeded
		if err != nil {
			status = api.OpFailed
		}
		if ferr := c.finishLocked(context.Background(), t.w, cur, status, err); ferr != nil {
			c.log.Warn("recording a direct operation", "op", op.ID, "err", ferr)
		}
		go c.reconcile(context.Background(), t, vm.Key())
	}()
}

// finishLocked records an operation's outcome through w.
func (c *Controller) finishLocked(ctx context.Context, w store.Writer, op *api.Operation, status string, cause error, extra ...store.Op) error {
	done := store.Clone(op)
	done.Status = status
	done.FinishedAt = time.Now().UTC()
	if status == api.OpSucceeded {
		done.Progress = 100
	}
	if cause != nil {
		done.Error = c.errorOf(cause)
		if done.Error.Code == api.CodeInternal {
			done.Error.Message = cause.Error()
		}
	}
	txn := append([]store.Op{c.ops.OpUpdate(op.ID, done, op.Version)}, extra...)
	if _, err := w.Txn(ctx, txn...); err != nil {
		return fmt.Errorf("finishing operation %s: %w", op.ID, err)
	}
	c.metrics.OpFinished(op.Kind, status)
	return nil
}

// PendingSize is the vCPUs and memory a VM counts for: the larger of its
// spec and every resize queued for it.
func (c *Controller) PendingSize(vm *api.VM) api.Usage {
	u := api.Usage{VCPUs: int64(vm.Spec.VCPUs), MemoryMiB: vm.Spec.MemoryMiB}
	for _, id := range c.ActiveOf(vm.Key()) {
		op, ok := c.ops.Get(id)
		if !ok || op.Kind != api.OpVMReconfigure || op.Status != api.OpPending {
			continue
		}
		var rc api.VMReconfigure
		if json.Unmarshal(op.Params, &rc) == nil {
			u.VCPUs = max(u.VCPUs, int64(rc.VCPUs))
			u.MemoryMiB = max(u.MemoryMiB, rc.MemoryMiB)
		}
	}
	return u
}

// Busy tells whether a VM has an operation under way.
func (c *Controller) Busy(key string) bool { return len(c.ActiveOf(key)) > 0 }

// Cancel cancels a pending VM operation; one already running or done is
// a conflict.
func (c *Controller) Cancel(ctx context.Context, op *api.Operation) error {
	unlock := c.LockVM(TargetKey(op.Target))
	defer unlock()
	cur, ok := c.ops.Get(op.ID)
	if ok && cur.Status == api.OpRunning && cur.Kind == api.OpVMMigrate {
		return c.cancelMigrationLocked(ctx, cur)
	}
	if !ok || cur.Status != api.OpPending {
		return api.Conflict("operation %s is %s: only pending operations (and running migrations) can be cancelled", op.ID, op.Status)
	}
	return c.finishLocked(ctx, c.w, cur, api.OpCancelled, nil)
}
