package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/polyvisor/polyvisor/api"
)

// request describes one API call.
type request struct {
	method string
	// path is the escaped route path, as made by route().
	path  string
	query url.Values
	// body, when not nil, is sent as JSON.
	body any
	// raw, when not nil, is sent as is with contentType and size (-1: unknown).
	raw         io.Reader
	contentType string
	size        int64
	header      http.Header
	accept      string
	// noAuth leaves the bearer token out (registration, health).
	noAuth bool
}

// route builds an escaped path from a format whose %s verbs are filled
// with path-escaped arguments: route("/v1/vms/%s", name).
func route(format string, args ...string) string {
	esc := make([]any, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(a)
	}
	return fmt.Sprintf(format, esc...)
}

// url returns the absolute URL of an escaped path and query on the
// server in use.
func (c *Client) url(path string, query url.Values) *url.URL {
	return c.urlOn(c.servers.current().base, path, query)
}

// urlOn returns the absolute URL of an escaped path and query on base.
func (c *Client) urlOn(base url.URL, path string, query url.Values) *url.URL {
	u := base
	raw := base.EscapedPath() + path
	if p, err := url.PathUnescape(raw); err == nil {
		u.Path = p
	}
	u.RawPath = raw
	if c.project != "" && query.Get("project") == "" && query.Get("all-projects") == "" {
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		q.Set("project", c.project)
		query = q
	}
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	return &u
}

// headers returns the headers every request carries.
func (c *Client) headers(noAuth bool) http.Header {
	h := http.Header{}
	h.Set("User-Agent", c.userAgent)
	if c.token != "" && !noAuth {
		h.Set("Authorization", "Bearer "+c.token)
	}
	return h
}

// send performs r and returns the response of a 2xx answer, whose body the
// caller closes. Any other answer is read, closed and returned as a
// *StatusError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	h := c.headers(r.noAuth)
	for k, vs := range r.header {
		h[k] = vs
	}
	var payload []byte // a JSON body, sent again to another server
	if r.raw == nil && r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encode request body: %w", err)
		}
		payload = b
		h.Set("Content-Type", "application/json")
	}
	if r.raw != nil {
		h.Set("Content-Type", r.contentType)
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	h.Set("Accept", accept)
	// A request that reached no server may go to another (failover.go);
	// a raw body is read once, so its request goes to one server only.
	tries := c.servers.len()
	if r.raw != nil {
		tries = 1
	}
	for try := 1; ; try++ {
		srv := c.servers.current()
		var body io.Reader
		size := int64(0)
		switch {
		case r.raw != nil:
			body, size = r.raw, r.size
		case payload != nil:
			body, size = bytes.NewReader(payload), int64(len(payload))
		}
		req, err := http.NewRequestWithContext(ctx, r.method, c.urlOn(srv.base, r.path, r.query).String(), body)
		if err != nil {
			return nil, fmt.Errorf("make request: %w", err)
		}
		req.Header = h.Clone()
		switch {
		case body == nil:
		case size == 0:
			req.Body, req.ContentLength = http.NoBody, 0
		case size < 0:
			req.ContentLength = -1 // sent chunked
		default:
			req.ContentLength = size
		}
		resp, err := c.http.Do(req)
		if err != nil {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			if try < tries && ctx.Err() == nil && unreached(err) && c.servers.failover(srv) {
				continue
			}
			return nil, &NoAnswerError{Method: r.method, Path: r.path, Err: err}
		}
		if resp.StatusCode/100 != 2 {
			defer resp.Body.Close()
			return nil, decodeError(resp)
		}
		return resp, nil
	}
}

// call performs r and decodes a JSON answer into out (unless out is nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", r.method, r.path, err)
	}
	return nil
}

// listQuery makes the query of a list route.
func listQuery(opts api.ListOptions) url.Values {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Continue != "" {
		q.Set("continue", opts.Continue)
	}
	if opts.Selector != "" {
		q.Set("selector", opts.Selector)
	}
	if opts.Host != "" {
		q.Set("host", opts.Host)
	}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	if opts.Provider != "" {
		q.Set("provider", opts.Provider)
	}
	if opts.Project != "" {
		q.Set("project", opts.Project)
	}
	if opts.AllProjects {
		q.Set("all-projects", "true")
	}
	return q
}

// list fetches one page of a list route.
func list[T any](ctx context.Context, c *Client, path string, opts api.ListOptions) (*api.List[T], error) {
	var l api.List[T]
	if err := c.call(ctx, request{method: http.MethodGet, path: path, query: listQuery(opts)}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// listAll fetches every page of a list route, from opts.Continue on, with
// opts.Limit as the page size.
func listAll[T any](ctx context.Context, c *Client, path string, opts api.ListOptions) ([]T, error) {
	var all []T
	for {
		page, err := list[T](ctx, c, path, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Continue == "" {
			return all, nil
		}
		if page.Continue == opts.Continue {
			return nil, fmt.Errorf("list %s: server repeated continue token %q", path, page.Continue)
		}
		opts.Continue = page.Continue
	}
}
