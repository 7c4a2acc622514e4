package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ListProviders returns one page of providers: the vCenters, ESXi and
// libvirt hosts Polyvisor is connected to.
func (c *Client) ListProviders(ctx context.Context, opts api.ListOptions) (*api.List[api.Provider], error) {
	l, err := list[api.Provider](ctx, c, "/v1/providers", opts)
	if err != nil {
		return nil, fmt.Errorf("list providers: %w", err)
	}
	return l, nil
}

// ListAllProviders returns every provider, following the continue tokens.
func (c *Client) ListAllProviders(ctx context.Context, opts api.ListOptions) ([]api.Provider, error) {
	all, err := listAll[api.Provider](ctx, c, "/v1/providers", opts)
	if err != nil {
		return nil, fmt.Errorf("list providers: %w", err)
	}
	return all, nil
}

// GetProvider returns a provider. Its password is never part of it.
func (c *Client) GetProvider(ctx context.Context, name string) (*api.Provider, error) {
	var p api.Provider
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/providers/%s", name)}, &p); err != nil {
		return nil, fmt.Errorf("get provider %q: %w", name, err)
	}
	return &p, nil
}

// CreateProvider connects Polyvisor to an estate (POST /v1/providers). The
// server verifies the connection before it stores anything: an unreachable
// URL, refused credentials or an untrusted certificate come back as an
// invalid error naming url, password or caCert; a name in use as a
// conflict. The password is sent once and never returned.
func (c *Client) CreateProvider(ctx context.Context, req api.ProviderCreate) (*api.Provider, error) {
	var p api.Provider
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/providers", body: req}, &p); err != nil {
		return nil, fmt.Errorf("add provider %q: %w", req.Name, err)
	}
	return &p, nil
}

// DeleteProvider removes a provider and, with it, its hosts and VMs from
// Polyvisor; nothing on the hypervisor is touched. It returns the provider
// as it was.
func (c *Client) DeleteProvider(ctx context.Context, name string) (*api.Provider, error) {
	var p api.Provider
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/providers/%s", name)}, &p); err != nil {
		return nil, fmt.Errorf("remove provider %q: %w", name, err)
	}
	return &p, nil
}

// RefreshProvider resyncs a provider's whole inventory now and returns the
// provider after it; the server answers unavailable while the provider is
// disconnected.
func (c *Client) RefreshProvider(ctx context.Context, name string) (*api.Provider, error) {
	var p api.Provider
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/providers/%s/refresh", name)}, &p); err != nil {
		return nil, fmt.Errorf("refresh provider %q: %w", name, err)
	}
	return &p, nil
}

// ProviderInventory returns the parts of a provider's estate that are
// neither hosts nor VMs: datacenters, clusters, datastores, networks and
// templates. The server answers unavailable before the first sync.
func (c *Client) ProviderInventory(ctx context.Context, name string) (*api.ProviderInventory, error) {
	var inv api.ProviderInventory
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/providers/%s/inventory", name)}, &inv); err != nil {
		return nil, fmt.Errorf("get inventory of provider %q: %w", name, err)
	}
	return &inv, nil
}
