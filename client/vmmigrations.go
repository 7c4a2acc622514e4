package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ListVMMigrations returns every VM migration of the project.
func (c *Client) ListVMMigrations(ctx context.Context, opts api.ListOptions) ([]api.VMMigration, error) {
	all, err := listAll[api.VMMigration](ctx, c, "/v1/migrations", opts)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	return all, nil
}

// GetVMMigration returns one VM migration of the project.
func (c *Client) GetVMMigration(ctx context.Context, name string) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("get migration %q", name), request{method: http.MethodGet, path: route("/v1/migrations/%s", name)}, &m)
}

// CreateVMMigration records a VM migration before its run copies
// anything.
func (c *Client) CreateVMMigration(ctx context.Context, req api.VMMigrationCreate) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("create migration %q", req.Name), request{method: http.MethodPost, path: "/v1/migrations", body: req}, &m)
}

// ReportVMMigration reports a migration's progress; the answer says
// whether it was cancelled (Spec.Cancel).
func (c *Client) ReportVMMigration(ctx context.Context, name string, st api.VMMigrationStatus) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("report migration %q", name), request{method: http.MethodPut, path: route("/v1/migrations/%s/status", name), body: st}, &m)
}

// DeleteVMMigration removes a migration's record; a running one must be
// cancelled first.
func (c *Client) DeleteVMMigration(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/migrations/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete migration %q: %w", name, err)
	}
	return nil
}

// CancelVMMigration asks a migration's runner to stop.
func (c *Client) CancelVMMigration(ctx context.Context, name string) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("cancel migration %q", name), request{method: http.MethodPost, path: route("/v1/migrations/%s/cancel", name)}, &m)
}
