package ops

import (
	"context"
	"time"

	"github.com/polyvisor/polyvisor/api"
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
