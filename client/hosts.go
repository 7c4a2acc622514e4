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

// CordonHost marks a host unschedulable: no new VM is placed on it, pinned
// ones included; the VMs it runs keep running. Superadmins only.
func (c *Client) CordonHost(ctx context.Context, name string) (*api.Host, error) {
	var h api.Host
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/hosts/%s/cordon", name)}, &h); err != nil {
		return nil, fmt.Errorf("cordon host %q: %w", name, err)
	}
	return &h, nil
}

// UncordonHost makes a cordoned host schedulable again.
func (c *Client) UncordonHost(ctx context.Context, name string) (*api.Host, error) {
	var h api.Host
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/hosts/%s/uncordon", name)}, &h); err != nil {
		return nil, fmt.Errorf("uncordon host %q: %w", name, err)
	}
	return &h, nil
}

// RevokeHost ends a host's credentials at once: its token stops working
// and its agent's streams end. The host is marked not ready; its agent
// must join again with a new join token.
func (c *Client) RevokeHost(ctx context.Context, name string) (*api.Host, error) {
	var h api.Host
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/hosts/%s/revoke", name)}, &h); err != nil {
		return nil, fmt.Errorf("revoke host %q: %w", name, err)
	}
	return &h, nil
}

// DeleteHost removes a host and its credentials. The server refuses while
// VMs are placed on the host, and names them.
func (c *Client) DeleteHost(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/hosts/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete host %q: %w", name, err)
	}
	return nil
}
