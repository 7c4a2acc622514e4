package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

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

// CreateVMMigration makes a VM migration: the control plane plans it
// (after its files are uploaded, for an upload source) and runs it once
// started (req.Start, or StartVMMigration).
func (c *Client) CreateVMMigration(ctx context.Context, req api.VMMigrationCreate) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("create migration %q", req.Name), request{method: http.MethodPost, path: "/v1/migrations", body: req}, &m)
}

// UploadVMMigrationFile sends one file of an upload source, size bytes
// read from r (exactly the size the source declared). progress, when not
// nil, is called with the bytes sent so far.
func (c *Client) UploadVMMigrationFile(ctx context.Context, name, file string, r io.Reader, size int64, progress func(sent int64)) (*api.VMMigration, error) {
	body := r
	if progress != nil {
		body = &progressReader{r: r, progress: progress}
	}
	req := request{
		method:      http.MethodPut,
		path:        route("/v1/migrations/%s/files/%s", name, file),
		raw:         body,
		contentType: "application/octet-stream",
		size:        size,
		// The server refuses a file it does not expect, or has no room
		// for, before the body is sent.
		header: http.Header{"Expect": {"100-continue"}},
	}
	var m api.VMMigration
	if err := c.call(ctx, req, &m); err != nil {
		return nil, fmt.Errorf("upload file %q of migration %q: %w", file, name, err)
	}
	return &m, nil
}

// StartVMMigration runs a planned migration (or one being planned, once
// it is).
func (c *Client) StartVMMigration(ctx context.Context, name string) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("start migration %q", name), request{method: http.MethodPost, path: route("/v1/migrations/%s/start", name)}, &m)
}

// CancelVMMigration stops a migration; what it half-made is removed.
func (c *Client) CancelVMMigration(ctx context.Context, name string) (*api.VMMigration, error) {
	var m api.VMMigration
	return &m, c.do(ctx, fmt.Sprintf("cancel migration %q", name), request{method: http.MethodPost, path: route("/v1/migrations/%s/cancel", name)}, &m)
}

// DeleteVMMigration removes a migration (cancelling it if it runs), its
// job directory and uploads; the VMs it finished stay.
func (c *Client) DeleteVMMigration(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/migrations/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete migration %q: %w", name, err)
	}
	return nil
}

// WaitVMMigration polls a migration every interval (default 1 s) until
// done says it is, calling seen (when not nil) with each read. It returns
// the last read.
func (c *Client) WaitVMMigration(ctx context.Context, name string, interval time.Duration, done func(*api.VMMigration) bool, seen func(*api.VMMigration)) (*api.VMMigration, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m, err := c.GetVMMigration(ctx, name)
		if err != nil {
			return nil, err
		}
		if seen != nil {
			seen(m)
		}
		if done(m) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("waiting for migration %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}
