package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// dialWebsocket opens a websocket on an escaped path and returns it as a
// net.Conn of binary messages, bounded by ctx.
func (c *Client) dialWebsocket(ctx context.Context, path string, query url.Values) (net.Conn, error) {
	u := c.url(path, query)
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: c.headers(false),
	})
	if err != nil {
		// A refused upgrade carries the API's error in its first bytes.
		if resp != nil && resp.StatusCode >= http.StatusBadRequest && resp.Body != nil {
			defer resp.Body.Close()
			return nil, decodeError(resp)
		}
		return nil, fmt.Errorf("websocket %s: %w", path, err)
	}
	return websocket.NetConn(ctx, ws, websocket.MessageBinary), nil
}

// streamNDJSON reads a newline-delimited JSON stream of T. The first
// channel carries the items and is closed when the stream ends; the second
// then yields the reason, if any (ctx's error when it was cancelled, nil
// when the server ended the stream cleanly), and is closed.
func streamNDJSON[T any](ctx context.Context, c *Client, r request, what string) (<-chan T, <-chan error) {
	_, items, errc := openNDJSON[T](ctx, c, r, what)
	return items, errc
}

// openNDJSON is streamNDJSON that also returns the answer's headers (nil
// when the stream did not open).
func openNDJSON[T any](ctx context.Context, c *Client, r request, what string) (http.Header, <-chan T, <-chan error) {
	items := make(chan T, 16)
	errc := make(chan error, 1)
	// The stream is open when this returns: the server subscribes before it
	// answers, so nothing that happens after the call is missed.
	r.accept = "application/x-ndjson"
	resp, err := c.send(ctx, r)
	if err != nil {
		errc <- fmt.Errorf("open %s: %w", what, err)
		close(errc)
		close(items)
		return nil, items, errc
	}
	go func() {
		defer close(errc)
		defer close(items)
		defer resp.Body.Close()
		// A cancelled ctx ends a blocked read of the body.
		dec := json.NewDecoder(resp.Body)
		for {
			var v T
			if err := dec.Decode(&v); err != nil {
				switch {
				case ctx.Err() != nil:
					errc <- ctx.Err()
				case errors.Is(err, io.EOF):
				default:
					errc <- fmt.Errorf("read %s: %w", what, err)
				}
				return
			}
			select {
			case items <- v:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	return resp.Header, items, errc
}
