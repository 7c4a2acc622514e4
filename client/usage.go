package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/polyvisor/polyvisor/api"
)

// UsageRange says what part of a history to read: Since is a time (RFC
// 3339) or a duration back from Until ("24h", "7d"); Until a time (empty:
// now); Step a duration ("5m", "1h"; empty: the finest kept).
type UsageRange struct {
	Since, Until, Step string
}

func (r UsageRange) values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"since": r.Since, "until": r.Until, "step": r.Step} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// VMUsage reads a VM's usage history: CPU and memory over time, as its
// host sampled them.
func (c *Client) VMUsage(ctx context.Context, name string, r UsageRange) (*api.UsageHistory, error) {
	var u api.UsageHistory
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/vms/%s/usage", name), query: r.values()}, &u); err != nil {
		return nil, fmt.Errorf("get usage of VM %q: %w", name, err)
	}
	return &u, nil
}

// HostUsage reads a host's usage history: the sum of its VMs' CPU and
// memory over time (superadmins).
func (c *Client) HostUsage(ctx context.Context, name string, r UsageRange) (*api.UsageHistory, error) {
	var u api.UsageHistory
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/hosts/%s/usage", name), query: r.values()}, &u); err != nil {
		return nil, fmt.Errorf("get usage of host %q: %w", name, err)
	}
	return &u, nil
}
