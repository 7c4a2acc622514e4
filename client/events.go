package client

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// EventOptions select what FollowEvents follows.
type EventOptions struct {
	// Types are the event types (api.EventVM...); none means all.
	Types []string
	// Since is the revision of the last event the caller already has
	// (api.Event.Revision): the stream starts after it. 0 starts now.
	Since int64
}

// Events follows the event stream (GET /v1/events), restricted to the
// given types (api.EventVM...; none means all). The events channel is
// closed when the stream ends; the error channel then yields why, if for
// a reason (ctx's error once it is cancelled; nothing when the server
// closed the stream), and is closed. Cancel ctx to stop. FollowEvents
// goes on through a server's loss.
func (c *Client) Events(ctx context.Context, types ...string) (<-chan api.Event, <-chan error) {
	_, events, errc := c.openEvents(ctx, EventOptions{Types: types})
	return events, errc
}

func (c *Client) openEvents(ctx context.Context, opts EventOptions) (int64, <-chan api.Event, <-chan error) {
	r := request{method: "GET", path: "/v1/events", query: url.Values{}}
	if len(opts.Types) > 0 {
		r.query.Set("types", strings.Join(opts.Types, ","))
	}
	if opts.Since > 0 {
		r.query.Set("since", strconv.FormatInt(opts.Since, 10))
	}
	h, events, errc := openNDJSON[api.Event](ctx, c, r, "event stream")
	var after int64
	if h != nil {
		after, _ = strconv.ParseInt(h.Get(api.HeaderRevision), 10, 64)
	}
	return after, events, errc
}

// followRetry bounds the pause between attempts to open the stream again.
const (
	followRetryMin = 100 * time.Millisecond
	followRetryMax = 5 * time.Second
)

// FollowEvents follows the event stream as Events does (open when it
// returns), and when the stream is cut off (its server went away, or lost
// its store) opens it again, at whichever server answers, after the
// revision of the last event it delivered: no event is missed or given
// twice. It stops on an
// error a retry cannot mend, and yields it: credentials or permissions,
// a bad request, or a revision no longer kept (api.CodeGone: read the
// objects again, then follow from now). Cancel ctx to stop.
func (c *Client) FollowEvents(ctx context.Context, opts EventOptions) (<-chan api.Event, <-chan error) {
	out := make(chan api.Event, 16)
	errc := make(chan error, 1)
	// The first stream is open when this returns, as with Events: from
	// now means from the call, not from some later moment.
	after, events, serr := c.openEvents(ctx, EventOptions{Types: opts.Types, Since: opts.Since})
	go func() {
		defer close(errc)
		defer close(out)
		last := opts.Since
		pause := followRetryMin
		for first := true; ; first = false {
			if !first {
				after, events, serr = c.openEvents(ctx, EventOptions{Types: opts.Types, Since: last})
			}
			if last == 0 {
				last = after
			}
			got := false
			for ev := range events {
				got = true
				if ev.Revision > 0 {
					last = ev.Revision
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			}
			err := <-serr
			if ctx.Err() != nil {
				errc <- ctx.Err()
				return
			}
			if err != nil && !retryable(err) {
				errc <- err
				return
			}
			if got {
				pause = followRetryMin
			}
			select {
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, followRetryMax)
		}
	}()
	return out, errc
}

// retryable says whether opening the event stream again may succeed
// where err failed: a server or the network was down, not the request.
func retryable(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return true // transport: the server or the way to it
	}
	switch ae.Code {
	case api.CodeUnavailable, api.CodeInternal, api.CodeTooManyRequests:
		return true
	}
	return false
}
