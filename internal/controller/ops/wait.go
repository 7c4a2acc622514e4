package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// changed returns a channel closed at the next operation change.
func (c *Controller) changed() <-chan struct{} {
	c.bcastMu.Lock()
	defer c.bcastMu.Unlock()
	return c.bcast
}

func (c *Controller) broadcast() {
	c.bcastMu.Lock()
	close(c.bcast)
	c.bcast = make(chan struct{})
	c.bcastMu.Unlock()
}

// Wait returns the operation once it is done or the wait ends.
func (c *Controller) Wait(ctx context.Context, id string, d time.Duration) (*api.Operation, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		ch := c.changed()
		op, ok := c.ops.Get(id)
		if !ok {
			var err error
			if op, err = c.Lookup(ctx, id); err != nil {
				return nil, err
			}
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

// Lookup returns the operation id from the index, or, when the index does
// not hold it yet, from the store itself: an operation made through another
// server a moment ago may not have reached this server's watch, and a
// client that fails over to it must not be told it does not exist. Only
// an id made within lookupWindow of now can be such an operation: any
// other the index lacks is answered not found without a read of the
// store (a quorum read that a client asking for made-up ids would
// otherwise cost it each time).
func (c *Controller) Lookup(ctx context.Context, id string) (*api.Operation, error) {
	if op, ok := c.ops.Get(id); ok {
		return op, nil
	}
	if !mayBeNew(id, time.Now()) {
		return nil, api.NotFound("operation", id)
	}
	op, err := c.ops.Read(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, api.NotFound("operation", id)
	case err != nil:
		return nil, fmt.Errorf("reading operation %s: %w", id, err)
	}
	return op, nil
}

// lookupWindow is how long after it was made (by its id) an operation
// the index lacks is looked for in the store, and how far ahead of this
// server's clock its id may be (the servers' clocks differ).
const lookupWindow = time.Minute

// mayBeNew tells whether id is an operation id made within lookupWindow
// of now.
func mayBeNew(id string, now time.Time) bool {
	t, ok := IDTime(id)
	return ok && t.After(now.Add(-lookupWindow)) && t.Before(now.Add(lookupWindow))
}
