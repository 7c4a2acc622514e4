package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ClusterStatus returns which server leads the controllers, as the server
// asked sees it (GET /v1/cluster).
func (c *Client) ClusterStatus(ctx context.Context) (*api.ClusterStatus, error) {
	var st api.ClusterStatus
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/cluster"}, &st); err != nil {
		return nil, fmt.Errorf("get the cluster's status: %w", err)
	}
	return &st, nil
}
