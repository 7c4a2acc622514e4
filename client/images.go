package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/polyvisor/polyvisor/api"
)

// ListImages returns one page of images.
func (c *Client) ListImages(ctx context.Context, opts api.ListOptions) (*api.List[api.Image], error) {
	l, err := list[api.Image](ctx, c, "/v1/images", opts)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return l, nil
}

// ListAllImages returns every image, following the continue tokens.
func (c *Client) ListAllImages(ctx context.Context, opts api.ListOptions) ([]api.Image, error) {
	all, err := listAll[api.Image](ctx, c, "/v1/images", opts)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return all, nil
}

// GetImage returns an image.
func (c *Client) GetImage(ctx context.Context, name string) (*api.Image, error) {
	var img api.Image
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/images/%s", name)}, &img); err != nil {
		return nil, fmt.Errorf("get image %q: %w", name, err)
	}
	return &img, nil
}

// DeleteImage asks for an image's removal; the server refuses (conflict)
// while a VM uses it.
func (c *Client) DeleteImage(ctx context.Context, name string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/images/%s", name)}, &op); err != nil {
		return nil, fmt.Errorf("delete image %q: %w", name, err)
	}
	return &op, nil
}

// ImportImageURL asks the server to fetch an image from an http(s) URL and
// returns the image.import operation.
func (c *Client) ImportImageURL(ctx context.Context, img api.ImageCreate) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/images", body: img}, &op); err != nil {
		return nil, fmt.Errorf("import image %q: %w", img.Name, err)
	}
	return &op, nil
}

// UploadImage sends an image file of size bytes (-1: unknown) read from r
// and returns the image.import operation. progress, when not nil, is
// called with the bytes sent so far as the upload goes.
func (c *Client) UploadImage(ctx context.Context, name, kind string, r io.Reader, size int64, progress func(sent int64)) (*api.Operation, error) {
	q := url.Values{"name": {name}}
	if kind != "" {
		q.Set("kind", kind)
	}
	body := r
	if progress != nil {
		body = &progressReader{r: r, progress: progress}
	}
	req := request{
		method:      http.MethodPost,
		path:        "/v1/images",
		query:       q,
		raw:         body,
		contentType: "application/octet-stream",
		size:        size,
		// The server refuses an image over the project's quota or its
		// disk's room from its size, before the body is sent.
		header: http.Header{"Expect": {"100-continue"}},
	}
	var op api.Operation
	if err := c.call(ctx, req, &op); err != nil {
		return nil, fmt.Errorf("upload image %q: %w", name, err)
	}
	return &op, nil
}

// ImageContent streams an image's stored file. It returns the body, which
// the caller closes, and its length (-1 when the server did not say).
func (c *Client) ImageContent(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	return c.imageContent(ctx, route("/v1/images/%s/content", name), name)
}

// AgentImageContent is ImageContent for the agent of a host that runs a VM
// using the image; key is the image's key, "<project>/<name>", as VM specs
// hold it.
func (c *Client) AgentImageContent(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	project, name := agentVMPath(key)
	return c.imageContent(ctx, route("/v1/agent/images/%s/%s/content", project, name), key)
}

func (c *Client) imageContent(ctx context.Context, path, name string) (io.ReadCloser, int64, error) {
	resp, err := c.send(ctx, request{
		method: http.MethodGet,
		path:   path,
		accept: "application/octet-stream",
	})
	if err != nil {
		return nil, 0, fmt.Errorf("get content of image %q: %w", name, err)
	}
	return resp.Body, resp.ContentLength, nil
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.progress(p.n)
	}
	return n, err
}

// AgentImage describes an image to the agent of a host that runs a VM
// using it; key is the image's key, "<project>/<name>".
func (c *Client) AgentImage(ctx context.Context, key string) (*api.Image, error) {
	project, name := agentVMPath(key)
	var img api.Image
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/agent/images/%s/%s", project, name)}, &img); err != nil {
		return nil, fmt.Errorf("get image %q: %w", key, err)
	}
	return &img, nil
}

// UpdateImage changes an image of the client's project: its visibility
// (superadmin), public or private.
func (c *Client) UpdateImage(ctx context.Context, name string, u api.ImageUpdate) (*api.Image, error) {
	var img api.Image
	if err := c.call(ctx, request{method: http.MethodPatch, path: route("/v1/images/%s", name), body: u}, &img); err != nil {
		return nil, fmt.Errorf("update image %q: %w", name, err)
	}
	return &img, nil
}

// ImageSettings returns the installation's image import rules in force
// (superadmin).
func (c *Client) ImageSettings(ctx context.Context) (*api.ImageSettings, error) {
	var set api.ImageSettings
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/image-settings"}, &set); err != nil {
		return nil, fmt.Errorf("get image settings: %w", err)
	}
	return &set, nil
}

// SetImageSettings replaces the installation's image import rules
// (superadmin) and returns those in force.
func (c *Client) SetImageSettings(ctx context.Context, set api.ImageSettings) (*api.ImageSettings, error) {
	var out api.ImageSettings
	if err := c.call(ctx, request{method: http.MethodPut, path: "/v1/image-settings", body: set}, &out); err != nil {
		return nil, fmt.Errorf("set image settings: %w", err)
	}
	return &out, nil
}
