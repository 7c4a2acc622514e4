package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ListHosts returns one page of hosts; opts.Provider (a provider's name,
// or "none" for Polyvisor's own hosts) filters it.
func (c *Client) ListHosts(ctx context.Context, opts api.ListOptions) (*api.List[api.Host], error) {
	l, err := list[api.Host](ctx, c, "/v1/hosts", opts)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return l, nil
}

// ListAllHosts returns every host, following the continue tokens.
func (c *Client) ListAllHosts(ctx context.Context, opts api.ListOptions) ([]api.Host, error) {
	all, err := listAll[api.Host](ctx, c, "/v1/hosts", opts)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return all, nil
}

// GetHost returns a host.
func (c *Client) GetHost(ctx context.Context, name string) (*api.Host, error) {
	var h api.Host
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/hosts/%s", name)}, &h); err != nil {
		return nil, fmt.Errorf("get host %q: %w", name, err)
	}
	return &h, nil
}

// CreateJoinToken makes a single-use token a new host's agent registers
// with. The secret is in the answer only.
func (c *Client) CreateJoinToken(ctx context.Context, req api.JoinTokenCreate) (*api.JoinToken, error) {
	var t api.JoinToken
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/hosts/join-tokens", body: req}, &t); err != nil {
		return nil, fmt.Errorf("create join token: %w", err)
	}
	return &t, nil
}
