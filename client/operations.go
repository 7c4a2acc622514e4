package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// waitParam is the server-side wait of one WaitOperation poll.
const waitParam = "30s"

// maxWaitRetries bounds the consecutive transient failures (unreachable
// server, 503) WaitOperation rides out.
const maxWaitRetries = 5

// GetOperation returns an operation.
func (c *Client) GetOperation(ctx context.Context, id string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/operations/%s", id)}, &op); err != nil {
		return nil, fmt.Errorf("get operation %s: %w", id, err)
	}
	return &op, nil
}

// WaitOperation follows an operation until it is done or ctx ends, calling
// progress (when not nil) with every answer. A failed or cancelled
// operation is not an error of WaitOperation: check the returned
// operation's Status, or use OperationError.
func (c *Client) WaitOperation(ctx context.Context, id string, progress func(*api.Operation)) (*api.Operation, error) {
	failures := 0
	for {
		start := time.Now()
		var op api.Operation
		err := c.call(ctx, request{
			method: http.MethodGet,
			path:   route("/v1/operations/%s", id),
			query:  url.Values{"wait": {waitParam}},
		}, &op)
		switch {
		case err == nil:
			failures = 0
			if progress != nil {
				progress(&op)
			}
			if op.Done() {
				return &op, nil
			}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("wait for operation %s: %w", id, ctx.Err())
		case transient(err) && failures < maxWaitRetries:
			failures++
		default:
			return nil, fmt.Errorf("wait for operation %s: %w", id, err)
		}
		pause := c.pollInterval*time.Duration(failures+1) - time.Since(start)
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("wait for operation %s: %w", id, ctx.Err())
			case <-t.C:
			}
		}
	}
}

// transient tells whether a request may work if tried again: the server
// was unreachable or said it is unavailable.
func transient(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusServiceUnavailable
	}
	return true
}

// ListOperations returns one page of operations; opts.State filters by
// status.
func (c *Client) ListOperations(ctx context.Context, opts api.ListOptions) (*api.List[api.Operation], error) {
	l, err := list[api.Operation](ctx, c, "/v1/operations", opts)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	return l, nil
}

// ListAllOperations returns every operation, following the continue tokens.
func (c *Client) ListAllOperations(ctx context.Context, opts api.ListOptions) ([]api.Operation, error) {
	all, err := listAll[api.Operation](ctx, c, "/v1/operations", opts)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	return all, nil
}

// CancelOperation cancels a pending operation and returns it; the server
// answers conflict when it cannot be cancelled any more.
func (c *Client) CancelOperation(ctx context.Context, id string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/operations/%s", id)}, &op); err != nil {
		return nil, fmt.Errorf("cancel operation %s: %w", id, err)
	}
	return &op, nil
}
