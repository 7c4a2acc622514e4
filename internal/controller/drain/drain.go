// Package drain runs host drains in the control plane: on the leading
// server only, it moves the VMs placed on a drained host away one after
// another, each through a vm.migrate operation. The host.drain operation
// in the store is the drain's whole state: its result (api.HostDrain)
// holds each VM's move as it goes, so a drain outlives the server that
// ran it. A new leader resumes every running drain from the moves not
// yet done, and a cancel, asked through any server, is a flag in that
// result which the leader obeys.
package drain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Outcomes of a VM in a drain (api.DrainMove).
const (
	Pending   = "pending"
	Moving    = "moving"
	Migrated  = "migrated"
	Moved     = "moved"
	Skipped   = "skipped"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// MoveWait bounds the wait for one VM's move.
const MoveWait = 16 * time.Minute

// final tells whether a move's outcome is settled.
func final(outcome string) bool {
	switch outcome {
	case Migrated, Moved, Skipped, Failed, Cancelled:
		return true
	}
	return false
}

// Records is how the controller reads and writes drain operations.
type Records interface {
	// Running is the host.drain operations not done.
	Running() []*api.Operation
	Get(id string) (*api.Operation, bool)
	// Update changes the operation with change, again on a conflict;
	// errGone when it is no longer there or done.
	Update(ctx context.Context, id string, change func(*api.Operation)) error
}

// VMs reads the VMs as they are now.
type VMs interface {
	Get(key string) (*api.VM, bool)
}

// Mover moves one VM off its host through a vm.migrate operation.
type Mover interface {
	// Check says why a VM cannot move now (nil when it can).
	Check(vm *api.VM) error
	// Start queues the move of vm to the scheduler's choice, stored
	// through w, and returns its target and operation.
	Start(ctx context.Context, w store.Writer, vm *api.VM) (target string, op *api.Operation, err error)
	// Wait returns the operation once it is done or the wait ends.
	Wait(ctx context.Context, id string, d time.Duration) (*api.Operation, error)
	// Cancel cancels a move under way.
	Cancel(ctx context.Context, op *api.Operation) error
}

// Config wires the controller.
type Config struct {
	// Ops is the operations; the controller writes its drains' results.
	Ops    *store.Collection[api.Operation]
	VMs    VMs
	Mover  Mover
	Logger *slog.Logger
	// Poll is how often the drains are looked at (default 500 ms).
	Poll time.Duration
}

// Controller runs the drains while its server leads.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	jobs map[string]context.CancelCauseFunc // by operation
	wg   sync.WaitGroup
}

// Why a drain's run stops before its end: the user's cancel, which
// cancels the move under way and ends the drain, unlike the end of the
// server's term, which leaves everything for the next leader to resume.
var (
	errCancelled = errors.New("drain cancelled")
	errGone      = errors.New("the drain's operation is gone or done")
)

// New makes a controller; Lead runs it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "drain"), jobs: map[string]context.CancelCauseFunc{}}
}

// Lead runs the drains until ctx ends (the term does), every write
// fenced by w. Drains under way when it ends stop where they are, their
// moves under way left running: the next leader resumes them.
func (c *Controller) Lead(ctx context.Context, w store.Writer) {
	recs := &storeRecords{c: c.cfg.Ops, w: w}
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		c.tick(ctx, recs, w)
		select {
		case <-ctx.Done():
			c.wg.Wait()
			return
		case <-t.C:
		}
	}
}

// tick starts a run for each running drain that has none, and stops
// the runs of drains cancelled or gone.
func (c *Controller) tick(ctx context.Context, recs Records, w store.Writer) {
	running := map[string]bool{}
	all := recs.Running()
	first := firstByHost(all)
	for _, op := range all {
		if keep := first[op.Target.Name]; keep.ID != op.ID {
			// Two servers took a drain of one host at once: the older
			// drains it, this one ends before it moves anything.
			c.refuse(ctx, recs, op, keep)
			continue
		}
		running[op.ID] = true
		c.start(ctx, recs, w, op.ID)
		if cancelRequested(op) {
			c.stop(op.ID, errCancelled)
		}
	}
	c.mu.Lock()
	for id, cancel := range c.jobs {
		if !running[id] {
			cancel(errGone)
		}
	}
	c.mu.Unlock()
}

// firstByHost is the oldest running drain of each host.
func firstByHost(ops []*api.Operation) map[string]*api.Operation {
	first := map[string]*api.Operation{}
	for _, op := range ops {
		cur, ok := first[op.Target.Name]
		if !ok || op.CreatedAt.Before(cur.CreatedAt) || (op.CreatedAt.Equal(cur.CreatedAt) && op.ID < cur.ID) {
			first[op.Target.Name] = op
		}
	}
	return first
}

// refuse fails a drain of a host that an older drain drains already.
func (c *Controller) refuse(ctx context.Context, recs Records, op, keep *api.Operation) {
	c.mu.Lock()
	_, busy := c.jobs[op.ID]
	c.mu.Unlock()
	if busy {
		return
	}
	err := recs.Update(ctx, op.ID, func(o *api.Operation) {
		var res api.HostDrain
		if json.Unmarshal(o.Result, &res) == nil {
			for i := range res.Moves {
				if !final(res.Moves[i].Outcome) {
					res.Moves[i].Outcome = Cancelled
				}
			}
			o.Result, _ = json.Marshal(res)
		}
		o.Status, o.Progress, o.FinishedAt = api.OpFailed, 100, time.Now().UTC()
		o.Message = fmt.Sprintf("host %q is being drained already", op.Target.Name)
		o.Error = &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("host %q is being drained already (operation %s)", op.Target.Name, keep.ID)}
	})
	if err != nil && !errors.Is(err, errGone) && ctx.Err() == nil {
		c.log.Warn("ending a second drain of a host", "op", op.ID, "err", err)
	}
}

// start runs the drain unless a run of it is under way here.
func (c *Controller) start(ctx context.Context, recs Records, w store.Writer, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.jobs[id]; busy {
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	c.jobs[id] = cancel
	c.wg.Go(func() {
		defer func() {
			cancel(nil)
			c.mu.Lock()
			delete(c.jobs, id)
			c.mu.Unlock()
		}()
		if err := c.run(ctx, jctx, recs, w, id); err != nil && ctx.Err() == nil && !errors.Is(err, errGone) {
			c.log.Warn("running a drain", "op", id, "err", err)
		}
	})
}

func (c *Controller) stop(id string, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cancel, ok := c.jobs[id]; ok {
		cancel(cause)
	}
}

func cancelRequested(op *api.Operation) bool {
	var res api.HostDrain
	return json.Unmarshal(op.Result, &res) == nil && res.Cancel
}

// cancelled tells whether the run was stopped by the drain's cancel.
func cancelled(jctx context.Context) bool { return errors.Is(context.Cause(jctx), errCancelled) }

// run carries the drain on from its result: each move not settled is
// made, or, when it was under way, waited for, then recorded; at the end
// the operation ends. termCtx is the term's, which the writes use; jctx
// ends with the term too, or with the drain's cancel. A run that stops
// with the term writes nothing more.
func (c *Controller) run(termCtx, jctx context.Context, recs Records, w store.Writer, id string) error {
	op, ok := recs.Get(id)
	if !ok || op.Done() {
		return errGone
	}
	var res api.HostDrain
	if err := json.Unmarshal(op.Result, &res); err != nil {
		return fmt.Errorf("decoding the drain's result: %w", err)
	}
	host := op.Target.Name
	if res.Host == "" {
		res.Host = host
	}
	log := c.log.With("op", id, "host", host)
	n := len(res.Moves)
	for i := range res.Moves {
		if final(res.Moves[i].Outcome) {
			continue
		}
		if termCtx.Err() != nil {
			return nil
		}
		if cancelled(jctx) && res.Moves[i].Outcome == Pending {
			res.Moves[i].Outcome = Cancelled
			continue
		}
		resumed := res.Moves[i].Outcome == Moving
		if !resumed {
			res.Moves[i].Outcome = Moving
			if err := c.record(termCtx, recs, id, res, i*100/max(n, 1), fmt.Sprintf("moving vm %s (%d of %d)", res.Moves[i].VM, i+1, n)); err != nil {
				return err
			}
		}
		mv, ok := c.move(termCtx, jctx, recs, w, id, res, i, resumed)
		if !ok {
			return nil // the term ended: the next leader carries on
		}
		res.Moves[i] = mv
		log.Info("drain move", "vm", mv.VM, "outcome", mv.Outcome, "target", mv.Target, "err", mv.Error)
		if i+1 < n {
			if err := c.record(termCtx, recs, id, res, (i+1)*100/n, fmt.Sprintf("%d of %d vm(s) done", i+1, n)); err != nil {
				return err
			}
		}
	}
	if termCtx.Err() != nil {
		return nil
	}
	return c.finish(termCtx, recs, id, res, cancelled(jctx))
}

// move makes move i of the drain, or carries on the one under way
// (resumed: a run before this one began it), and returns its outcome; ok
// is false when the term ended before it was known.
func (c *Controller) move(termCtx, jctx context.Context, recs Records, w store.Writer, id string, res api.HostDrain, i int, resumed bool) (api.DrainMove, bool) {
	mv := res.Moves[i]
	host := res.Host
	vm, ok := c.cfg.VMs.Get(mv.VM)
	if mv.Operation == "" {
		switch {
		case !ok || vm.Spec.Deletion != nil:
			mv.Outcome, mv.Error = Skipped, "the vm was deleted meanwhile"
			return mv, true
		case vm.Spec.Migration != nil && vm.Spec.Host == host:
			// A move this drain started before its server stopped,
			// whose operation it could not record.
			mv.Operation, mv.Target = vm.Spec.Migration.Operation, vm.Spec.Migration.Target
		case vm.Spec.Host != host && resumed:
			// Moved by this drain before its server stopped.
			mv.Target = vm.Spec.Host
			return settled(mv, vm), true
		case vm.Spec.Host != host:
			mv.Outcome, mv.Error, mv.Target = Skipped, "the vm left the host meanwhile", vm.Spec.Host
			return mv, true
		case vm.Spec.PowerState == api.PowerPaused:
			mv.Outcome, mv.Error = Skipped, errText(c.cfg.Mover.Check(vm), "the vm is paused")
			return mv, true
		}
	}
	if mv.Operation == "" {
		if err := c.cfg.Mover.Check(vm); err != nil {
			return failed(mv, err), true
		}
		target, op, err := c.cfg.Mover.Start(jctx, w, vm)
		if err != nil {
			if termCtx.Err() != nil {
				return mv, false
			}
			if cancelled(jctx) {
				mv.Outcome = Cancelled
				return mv, true
			}
			return failed(mv, err), true
		}
		mv.Target, mv.Operation = target, op.ID
		// Recorded at once, so that a leader after this one waits for
		// this move instead of starting another.
		res.Moves[i] = mv
		if err := c.record(termCtx, recs, id, res, -1, ""); err != nil {
			return mv, false
		}
	}
	return c.await(termCtx, jctx, mv)
}

// await waits for a move's operation to end; a drain cancelled meanwhile
// cancels it.
func (c *Controller) await(termCtx, jctx context.Context, mv api.DrainMove) (api.DrainMove, bool) {
	done, err := c.cfg.Mover.Wait(jctx, mv.Operation, MoveWait)
	if termCtx.Err() != nil {
		return mv, false
	}
	if err == nil && cancelled(jctx) && (done == nil || !done.Done()) {
		cctx, cancel := context.WithTimeout(termCtx, time.Minute)
		defer cancel()
		if done != nil {
			if cerr := c.cfg.Mover.Cancel(cctx, done); cerr != nil {
				c.log.Warn("cancelling a drained vm's move", "op", mv.Operation, "err", cerr)
			}
		}
		done, err = c.cfg.Mover.Wait(cctx, mv.Operation, time.Minute)
		if termCtx.Err() != nil {
			return mv, false
		}
	}
	switch {
	case err != nil:
		return failed(mv, err), true
	case done == nil || !done.Done():
		return failed(mv, errors.New("the move did not end in time")), true
	case done.Status == api.OpCancelled:
		mv.Outcome = Cancelled
		return mv, true
	case done.Status != api.OpSucceeded:
		if done.Error != nil {
			return failed(mv, errors.New(done.Error.Message)), true
		}
		return failed(mv, fmt.Errorf("the move %s", done.Status)), true
	}
	vm, _ := c.cfg.VMs.Get(mv.VM)
	return settled(mv, vm), true
}

// settled is a move that took the VM off the host: live when it runs,
// with its disks copied when it is stopped.
func settled(mv api.DrainMove, vm *api.VM) api.DrainMove {
	mv.Outcome, mv.Error = Migrated, ""
	if vm != nil && vm.Spec.PowerState == api.PowerStopped {
		mv.Outcome = Moved
	}
	return mv
}

func failed(mv api.DrainMove, err error) api.DrainMove {
	mv.Outcome, mv.Error = Failed, err.Error()
	return mv
}

func errText(err error, otherwise string) string {
	if err == nil {
		return otherwise
	}
	return err.Error()
}

// record writes the drain's result, and its progress and message unless
// progress is negative.
func (c *Controller) record(ctx context.Context, recs Records, id string, res api.HostDrain, progress int, msg string) error {
	return recs.Update(ctx, id, func(op *api.Operation) {
		res.Cancel = cancelRequested(op)
		op.Result, _ = json.Marshal(res)
		if progress >= 0 {
			op.Progress, op.Message = progress, msg
		}
	})
}

// finish ends the drain: succeeded when no VM stayed on the host (even
// if a cancel came after the last move), cancelled when it was, failed
// otherwise; the host stays cordoned.
func (c *Controller) finish(ctx context.Context, recs Records, id string, res api.HostDrain, wasCancelled bool) error {
	n, moved, left := len(res.Moves), 0, []string{}
	for i, mv := range res.Moves {
		if !final(mv.Outcome) {
			res.Moves[i].Outcome = Cancelled
		}
		switch {
		case mv.Outcome == Migrated || mv.Outcome == Moved:
			moved++
		case mv.Outcome == Skipped && mv.Target != "":
			// It left the host by other means: the host is empty of it.
		default:
			left = append(left, mv.VM)
		}
	}
	status, msg := api.OpSucceeded, fmt.Sprintf("%d of %d vm(s) moved", moved, n)
	var cause *api.Error
	switch {
	case wasCancelled && len(left) > 0:
		status = api.OpCancelled
		cause = &api.Error{Code: api.CodeUnprocessable, Message: fmt.Sprintf("drain of host %q cancelled: %d of %d vm(s) moved; the host stays cordoned", res.Host, moved, n)}
	case len(left) > 0:
		status = api.OpFailed
		cause = &api.Error{Code: api.CodeUnprocessable, Message: fmt.Sprintf("%d of %d vm(s) did not leave host %q (%s): see each move's error; the host stays cordoned", len(left), n, res.Host, strings.Join(left, ", "))}
	}
	return recs.Update(ctx, id, func(op *api.Operation) {
		res.Cancel = cancelRequested(op)
		op.Result, _ = json.Marshal(res)
		op.Status, op.Progress, op.Message, op.FinishedAt, op.Error = status, 100, msg, time.Now().UTC(), cause
	})
}

type storeRecords struct {
	c *store.Collection[api.Operation]
	w store.Writer
}

func (r *storeRecords) Running() []*api.Operation {
	return r.c.Select(func(o *api.Operation) bool { return o.Kind == api.OpHostDrain && !o.Done() })
}

func (r *storeRecords) Get(id string) (*api.Operation, bool) { return r.c.Get(id) }

func (r *storeRecords) Update(ctx context.Context, id string, change func(*api.Operation)) error {
	for attempt := 0; ; attempt++ {
		cur, ok := r.c.Get(id)
		if !ok || cur.Done() {
			return errGone
		}
		next := store.Clone(cur)
		change(next)
		_, err := r.w.Txn(ctx, r.c.OpUpdate(id, next, cur.Version))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, store.ErrNotFound):
			return errGone
		case !errors.Is(err, store.ErrConflict) || attempt >= 20:
			return fmt.Errorf("recording drain %s: %w", id, err)
		}
	}
}

// RequestCancel asks the leader to cancel a running drain: a flag in its
// result, written through w by whichever server took the cancel.
func RequestCancel(ctx context.Context, ops *store.Collection[api.Operation], w store.Writer, id string) error {
	return (&storeRecords{c: ops, w: w}).Update(ctx, id, func(op *api.Operation) {
		var res api.HostDrain
		_ = json.Unmarshal(op.Result, &res)
		res.Cancel = true
		op.Result, _ = json.Marshal(res)
	})
}
