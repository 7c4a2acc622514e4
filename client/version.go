package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ServerVersion returns the server's build (GET /v1/version).
func (c *Client) ServerVersion(ctx context.Context) (*api.Version, error) {
	var v api.Version
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/version"}, &v); err != nil {
		return nil, fmt.Errorf("get the server's version: %w", err)
	}
	return &v, nil
}
