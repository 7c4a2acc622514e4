package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// An agent of a control plane of several servers knows every server's URL
// (the client's servers, refreshed from GET /v1/agent/servers at each
// watch it opens). A request that cannot reach the server in use goes to
// the next (the client fails over); a heartbeat that fails on the
// network, or that the server answers with a server error (it lost the
// store), moves the agent to the next server at once and reopens the
// watch there, so that the host reports to a live server within a
// heartbeat or two. VMs run on whatever happens to the servers.

// heartbeatTimeout bounds one heartbeat: a server that stopped answering
// (cut off from the network) is given up on after it.
func (a *Agent) heartbeatTimeout() time.Duration {
	return min(max(2*a.cfg.HeartbeatInterval, 2*time.Second), 10*time.Second)
}

// watchIdleTimeout ends a watch on which nothing arrived for this long:
// the server sends a ping every 15s.
const watchIdleTimeout = 40 * time.Second

// serverLost tells whether a failed request says the server in use is
// gone or unfit: nothing answered, or it answered with a server error.
func serverLost(err error) bool {
	if err == nil {
		return false
	}
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.Status >= 500
	}
	return true
}

// moveOn fails over to the next server, if there is one, and reopens the
// watch there.
func (a *Agent) moveOn(why error) {
	from := a.c.URL()
	if !a.c.Failover() {
		return
	}
	a.log.Warn("the server does not answer; moving to another", "from", from, "to", a.c.URL(), "err", why)
	a.rewatch.cancel()
}

// learnServers refreshes the client's servers from the one in use.
func (a *Agent) learnServers(ctx context.Context) {
	if isUnix(a.c.URL()) {
		return // the built-in agent talks to its own server only
	}
	lctx, cancel := context.WithTimeout(ctx, a.heartbeatTimeout())
	defer cancel()
	urls, err := a.c.AgentServers(lctx)
	if err != nil || len(urls) == 0 {
		if err != nil && client.ErrorCode(err) != api.CodeNotFound {
			a.log.Debug("learning the servers' addresses", "err", err)
		}
		return
	}
	// The server in use stays first: it answers.
	cur := a.c.URL()
	merged := []string{cur}
	for _, u := range urls {
		if !slices.Contains(merged, u) {
			merged = append(merged, u)
		}
	}
	if slices.Equal(merged, a.c.Servers()) {
		return
	}
	if err := a.c.SetServers(merged); err != nil {
		a.log.Warn("keeping the servers' addresses", "err", err)
		return
	}
	if a.cfg.OnServers != nil {
		a.cfg.OnServers(a.c.Servers())
	}
}

func isUnix(u string) bool { return strings.HasPrefix(u, "unix:") || strings.HasPrefix(u, "/") }

// streamClient is the client to dial a console stream back on: the server
// that waits for it, when it names one among the known servers.
func (a *Agent) streamClient(ctx context.Context, req api.StreamRequest) (*client.Client, error) {
	if req.Server == "" || req.Server == a.c.URL() {
		return a.c, nil
	}
	if !slices.Contains(a.c.Servers(), req.Server) {
		a.learnServers(ctx)
	}
	if !slices.Contains(a.c.Servers(), req.Server) {
		return nil, fmt.Errorf("the stream names server %s, which is not one of the control plane's servers", req.Server)
	}
	return a.c.WithServer(req.Server)
}

// atomicCancel holds the cancel function of the current watch.
type atomicCancel struct {
	mu sync.Mutex
	f  context.CancelFunc
}

func (c *atomicCancel) set(f context.CancelFunc) {
	c.mu.Lock()
	c.f = f
	c.mu.Unlock()
}

func (c *atomicCancel) cancel() {
	c.mu.Lock()
	f := c.f
	c.mu.Unlock()
	if f != nil {
		f()
	}
}
