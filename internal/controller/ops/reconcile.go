package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// term is what the leader's work carries: the writer under its fence,
// and the revision at which it knew it leads.
type term struct {
	w   store.Writer
	won int64
}

// reconcile advances the operation queue of one VM as far as it can.
func (c *Controller) reconcile(ctx context.Context, t *term, name string) {
	unlock := c.LockVM(name)
	defer unlock()
	for range 100 { // bounded: every pass finishes or starts an operation
		ids := c.ActiveOf(name)
		if len(ids) == 0 {
			return
		}
		op, ok := c.ops.Get(ids[0])
		if !ok || op.Done() {
			c.removeActive(name, ids[0])
			continue
		}
		progressed, err := c.step(ctx, t, name, op)
		if err != nil {
			if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
				c.log.Warn("advancing operation", "op", op.ID, "vm", name, "err", err)
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
func (c *Controller) step(ctx context.Context, t *term, name string, op *api.Operation) (bool, error) {
	vm, ok := c.vms.Get(name)
	if ok && op.Target.UID != "" && vm.UID != op.Target.UID {
		ok = false // a different VM now carries the name
	}
	if !ok {
		// The VM is gone: ending its operations is what is left of the
		// deletion that removed it, which goes through a read-only
		// store (store.UseReserve); so does this.
		ctx = store.UseReserve(ctx)
	}
	if op.Status == api.OpPending {
		if !ok {
			return true, c.finishLocked(ctx, t.w, op, api.OpFailed, api.Conflict("vm %q was deleted before the operation could run", name))
		}
		pending := store.Clone(op)
		if err := c.startLocked(ctx, t.w, vm, pending, false); err != nil {
			var ae *api.Error
			if errors.As(err, &ae) {
				return true, c.finishLocked(ctx, t.w, op, api.OpFailed, err)
			}
			return false, err
		}
		return false, nil
	}
	if !ok {
		if op.Kind == api.OpVMDelete {
			return true, c.finishLocked(ctx, t.w, op, api.OpSucceeded, nil)
		}
		return true, c.finishLocked(ctx, t.w, op, api.OpFailed, api.Conflict("vm %q was deleted", name))
	}
	if Direct(op.Kind) {
		c.mu.Lock()
		executing, ran := c.executing[op.ID], c.ran[op.ID]
		c.mu.Unlock()
		switch {
		case executing:
		case !ran && op.Version > t.won:
			// Started since this server leads: carried out here, once.
			c.runDirect(t, vm, op)
		default:
			// Started under an earlier leader, which is gone, or its
			// outcome could not be recorded.
			return true, c.finishLocked(ctx, t.w, op, api.OpFailed, &api.Error{Code: api.CodeUnavailable, Message: "the server restarted while the operation ran; check the vm and try again"})
		}
		return false, nil
	}
	if op.Kind == api.OpVMMigrate {
		return c.stepMigrate(ctx, t, vm, op)
	}
	st := vm.Status
	switch {
	case st.Error != nil && st.Error.Generation >= op.TargetGeneration:
		cause := errors.New(st.Error.Message)
		if op.Kind == api.OpVMCreate {
			return true, c.failCreateLocked(ctx, t, vm, op, cause)
		}
		return true, c.finishLocked(ctx, t.w, op, api.OpFailed, cause)
	case op.Kind != api.OpVMDelete && st.ObservedGeneration >= op.TargetGeneration:
		return true, c.finishLocked(ctx, t.w, op, api.OpSucceeded, nil)
	case !op.Deadline.IsZero() && time.Now().After(op.Deadline):
		return true, c.failLocked(ctx, t, vm, op, fmt.Errorf("timed out: host %q did not carry out %s by %s", vm.Spec.Host, op.Kind, op.Deadline.Format(time.RFC3339)))
	}
	if h, ok := c.hosts.Get(vm.Spec.Host); ok && h.Status.State == api.HostNotReady && h.Provider == nil {
		return true, c.failLocked(ctx, t, vm, op, api.Unprocessable("host %q is not ready (no heartbeat since %s)", h.Name, h.Status.LastHeartbeat.Format(time.RFC3339)))
	}
	return false, nil
}

// failLocked fails an operation; a failed create is rolled back.
func (c *Controller) failLocked(ctx context.Context, t *term, vm *api.VM, op *api.Operation, cause error) error {
	if op.Kind == api.OpVMCreate {
		return c.failCreateLocked(ctx, t, vm, op, cause)
	}
	return c.finishLocked(ctx, t.w, op, api.OpFailed, cause)
}

// failCreateLocked fails a create and rolls it back: the VM is marked for
// deletion so its host removes whatever it made.
func (c *Controller) failCreateLocked(ctx context.Context, t *term, vm *api.VM, op *api.Operation, cause error) error {
	nv := store.Clone(vm)
	nv.Spec.Deletion = &api.Deletion{RequestedAt: time.Now().UTC()}
	nv.Generation++
	return c.finishLocked(ctx, t.w, op, api.OpFailed, fmt.Errorf("creating vm %q: %w (the vm is being removed)", vm.Name, cause),
		c.vms.OpUpdate(vm.Key(), nv, vm.Version))
}

// Lead advances the queues while this server leads, until ctx ends (the
// term does): it starts pending operations, completes running ones as
// hosts report, fails those past their deadline or on a lost host,
// carries out direct operations, and removes old operations. Every write
// goes through w, the leader's fenced writer; won is the store revision
// at which the term began.
func (c *Controller) Lead(ctx context.Context, w store.Writer, won int64) {
	t := &term{w: w, won: won}
	vmCh := c.vms.Subscribe(ctx)
	opCh := c.ops.Subscribe(ctx)
	c.mu.Lock()
	clear(c.ran)
	c.mu.Unlock()
	for name := range c.ActiveKeys() {
		c.reconcile(ctx, t, name)
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
			if key := ch.Obj.Key(); len(c.ActiveOf(key)) > 0 {
				c.reconcile(ctx, t, key)
			}
		case ch, ok := <-opCh:
			if !ok {
				return
			}
			if ch.Type == store.Delete || ch.Obj.Done() || ch.Obj.Target.Kind != "vm" {
				continue
			}
			if Direct(ch.Obj.Kind) && ch.Obj.Status == api.OpRunning {
				c.reconcile(ctx, t, TargetKey(ch.Obj.Target)) // the leader carries it out
			}
		case <-tick.C:
			for name := range c.ActiveKeys() {
				c.reconcile(ctx, t, name)
			}
			if time.Since(lastGC) > 10*time.Minute {
				c.gc(ctx, w)
				lastGC = time.Now()
			}
		}
	}
}

// ActiveKeys is the keys of the VMs with unfinished operations.
func (c *Controller) ActiveKeys() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.active))
	for k := range c.active {
		out[k] = true
	}
	return out
}

// rebuild loads the unfinished VM operations from the index, the queues
// they make replacing whatever was there: the index is at least as new as
// every change observed so far.
func (c *Controller) rebuild() {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := c.ops.Select(func(o *api.Operation) bool { return !o.Done() && o.Target.Kind == "vm" })
	slices.SortFunc(ops, func(a, b *api.Operation) int {
		if d := a.CreatedAt.Compare(b.CreatedAt); d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	clear(c.active)
	clear(c.resizing)
	for _, op := range ops {
		key := TargetKey(op.Target)
		c.active[key] = append(c.active[key], op.ID)
		if op.Kind == api.OpVMReconfigure {
			c.resizing[key] = append(c.resizing[key], op.ID)
		}
	}
}

// gc deletes finished operations and idempotency records past retention.
func (c *Controller) gc(ctx context.Context, w store.Writer) {
	cutoff := time.Now().Add(-opRetention)
	for _, op := range c.ops.Select(func(o *api.Operation) bool { return o.Done() && o.FinishedAt.Before(cutoff) }) {
		if err := c.delete(ctx, w, c.ops.OpDelete(op.ID, op.Version)); err != nil && !errors.Is(err, store.ErrConflict) {
			c.log.Warn("removing old operation", "op", op.ID, "err", err)
		}
	}
	for _, rec := range c.idem.Select(func(r *IdempotencyRecord) bool { return r.CreatedAt.Before(cutoff) }) {
		_ = c.delete(ctx, w, c.idem.OpDelete(rec.Name, rec.Version))
	}
}

// TargetKey is the store key of an operation's target.
func TargetKey(ref api.Ref) string { return api.Key(ref.Project, ref.Name) }

func (c *Controller) delete(ctx context.Context, w store.Writer, op store.Op) error {
	_, err := w.Txn(ctx, op)
	return err
}
