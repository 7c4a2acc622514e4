package client

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// The routes of this file are the host agent's: they take the host token
// issued at registration (Config.Token), except Register.

// Register presents a join token and the host's status to the server, and
// returns the host's credentials. It sends no bearer token.
func (c *Client) Register(ctx context.Context, reg api.AgentRegister) (*api.AgentCredentials, error) {
	var creds api.AgentCredentials
	r := request{method: http.MethodPost, path: "/v1/agent/register", body: reg, noAuth: true}
	if err := c.call(ctx, r, &creds); err != nil {
		return nil, fmt.Errorf("register host %q: %w", reg.Host, err)
	}
	return &creds, nil
}

// PutHostStatus reports a host's status (the heartbeat) and returns the
// host as the server now sees it.
func (c *Client) PutHostStatus(ctx context.Context, host string, status api.HostStatus) (*api.Host, error) {
	var h api.Host
	r := request{method: http.MethodPut, path: route("/v1/agent/hosts/%s/status", host), body: status}
	if err := c.call(ctx, r, &h); err != nil {
		return nil, fmt.Errorf("report status of host %q: %w", host, err)
	}
	return &h, nil
}

// WatchHost follows a host's watch stream: the VMs placed on it, their
// removals and console stream requests. The channels behave as those of
// Events.
func (c *Client) WatchHost(ctx context.Context, host string) (<-chan api.AgentMessage, <-chan error) {
	r := request{method: http.MethodGet, path: route("/v1/agent/hosts/%s/watch", host)}
	return streamNDJSON[api.AgentMessage](ctx, c, r, fmt.Sprintf("watch stream of host %q", host))
}

// PutVMStatus reports what the host observed of a VM and returns the VM.
// key is the VM's key, "<project>/<name>" (api.Meta.Key).
func (c *Client) PutVMStatus(ctx context.Context, key string, status api.VMStatus) (*api.VM, error) {
	var vm api.VM
	project, name := agentVMPath(key)
	r := request{method: http.MethodPut, path: route("/v1/agent/vms/%s/%s/status", project, name), body: status}
	if err := c.call(ctx, r, &vm); err != nil {
		return nil, fmt.Errorf("report status of VM %q: %w", name, err)
	}
	return &vm, nil
}

// VMRemoved tells the server the host removed a VM being deleted, which
// completes the deletion.
func (c *Client) VMRemoved(ctx context.Context, key string) error {
	project, name := agentVMPath(key)
	r := request{method: http.MethodPost, path: route("/v1/agent/vms/%s/%s/removed", project, name)}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("report removal of VM %q: %w", name, err)
	}
	return nil
}

// DialStream opens the host end of a console stream the server asked for
// (api.StreamRequest) as a websocket of binary messages. ctx bounds the
// dial and the connection's life.
func (c *Client) DialStream(ctx context.Context, id string) (net.Conn, error) {
	conn, err := c.dialWebsocket(ctx, route("/v1/agent/streams/%s", id), nil)
	if err != nil {
		return nil, fmt.Errorf("dial stream %s: %w", id, err)
	}
	return conn, nil
}

// agentVMPath splits a VM key into its project and name.
func agentVMPath(key string) (project, name string) {
	project, name = api.SplitKey(key)
	if project == "" {
		project = api.DefaultProject
	}
	return project, name
}
