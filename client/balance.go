package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// Balance reads the balancer's settings, its last cycle and the moves it
// recommends now (superadmins only).
func (c *Client) Balance(ctx context.Context) (*api.Balance, error) {
	var out api.Balance
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/balance"}, &out); err != nil {
		return nil, fmt.Errorf("get balance: %w", err)
	}
	return &out, nil
}

// SetBalance replaces the balancer's settings; the leader runs a cycle
// with them at once.
func (c *Client) SetBalance(ctx context.Context, set api.BalanceSettings) (*api.Balance, error) {
	var out api.Balance
	if err := c.call(ctx, request{method: http.MethodPut, path: "/v1/balance", body: set}, &out); err != nil {
		return nil, fmt.Errorf("set balance: %w", err)
	}
	return &out, nil
}

// ApplyBalanceRecommendation carries out one recommended move as a
// vm.migrate operation.
func (c *Client) ApplyBalanceRecommendation(ctx context.Context, id string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/balance/recommendations/%s/apply", id)}, &op); err != nil {
		return nil, fmt.Errorf("apply balance recommendation %q: %w", id, err)
	}
	return &op, nil
}
