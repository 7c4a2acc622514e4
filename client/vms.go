package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/polyvisor/polyvisor/api"
)

// CreateOptions are the options of CreateVM.
type CreateOptions struct {
	// IdempotencyKey, when set, is sent as the Idempotency-Key header: a
	// retried create with the same key returns the first operation instead
	// of making a second VM.
	IdempotencyKey string
}

// CreateVM asks for a new VM (POST /v1/vms) and returns its vm.create
// operation.
func (c *Client) CreateVM(ctx context.Context, vm api.VMCreate, opts CreateOptions) (*api.Operation, error) {
	r := request{method: http.MethodPost, path: "/v1/vms", body: vm}
	if opts.IdempotencyKey != "" {
		r.header = http.Header{"Idempotency-Key": {opts.IdempotencyKey}}
	}
	var op api.Operation
	if err := c.call(ctx, r, &op); err != nil {
		return nil, fmt.Errorf("create VM %q: %w", vm.Name, err)
	}
	return &op, nil
}

// GetVM returns a VM.
func (c *Client) GetVM(ctx context.Context, name string) (*api.VM, error) {
	var vm api.VM
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/vms/%s", name)}, &vm); err != nil {
		return nil, fmt.Errorf("get VM %q: %w", name, err)
	}
	return &vm, nil
}

// ListVMs returns one page of VMs; opts.Host, opts.State and opts.Provider
// (a provider's name, or "none" for the VMs on Polyvisor's own hosts)
// filter it.
func (c *Client) ListVMs(ctx context.Context, opts api.ListOptions) (*api.List[api.VM], error) {
	l, err := list[api.VM](ctx, c, "/v1/vms", opts)
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	return l, nil
}

// ListAllVMs returns every VM, following the continue tokens.
func (c *Client) ListAllVMs(ctx context.Context, opts api.ListOptions) ([]api.VM, error) {
	all, err := listAll[api.VM](ctx, c, "/v1/vms", opts)
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	return all, nil
}

// VMActionOptions are the options of the VM actions, delete and
// reconfigure.
type VMActionOptions struct {
	// IfMatch, when not zero, is sent as the If-Match header: the VM
	// version (api.Meta.Version, the ETag of GET /v1/vms/{name}) the
	// action is based on. The server answers conflict when the VM has
	// changed since.
	IfMatch int64
}

// header returns the headers the options ask for, or nil.
func (o VMActionOptions) header() http.Header {
	if o.IfMatch == 0 {
		return nil
	}
	return http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(o.IfMatch, 10))}}
}

// DeleteVM asks for a VM's removal and returns its vm.delete operation.
// keepDisks leaves the VM's disks on its host.
func (c *Client) DeleteVM(ctx context.Context, name string, keepDisks bool) (*api.Operation, error) {
	return c.DeleteVMWithOptions(ctx, name, keepDisks, VMActionOptions{})
}

// DeleteVMWithOptions is DeleteVM with options (If-Match).
func (c *Client) DeleteVMWithOptions(ctx context.Context, name string, keepDisks bool, opts VMActionOptions) (*api.Operation, error) {
	if opts.IfMatch < 0 {
		return nil, fmt.Errorf("delete VM %q: negative If-Match version %d", name, opts.IfMatch)
	}
	r := request{method: http.MethodDelete, path: route("/v1/vms/%s", name), header: opts.header()}
	if keepDisks {
		r.query = url.Values{"keepDisks": {"true"}}
	}
	var op api.Operation
	if err := c.call(ctx, r, &op); err != nil {
		return nil, fmt.Errorf("delete VM %q: %w", name, err)
	}
	return &op, nil
}

// VMAction asks for a lifecycle action (api.ActionStart...) on a VM and
// returns its operation. stop is the optional body of stop and restart.
func (c *Client) VMAction(ctx context.Context, name, action string, stop *api.VMStop) (*api.Operation, error) {
	return c.VMActionWithOptions(ctx, name, action, stop, VMActionOptions{})
}

// VMActionWithOptions is VMAction with options (If-Match).
func (c *Client) VMActionWithOptions(ctx context.Context, name, action string, stop *api.VMStop, opts VMActionOptions) (*api.Operation, error) {
	switch action {
	case api.ActionStart, api.ActionStop, api.ActionRestart, api.ActionPause, api.ActionResume:
	default:
		return nil, fmt.Errorf("%s VM %q: unknown action", action, name)
	}
	if opts.IfMatch < 0 {
		return nil, fmt.Errorf("%s VM %q: negative If-Match version %d", action, name, opts.IfMatch)
	}
	r := request{method: http.MethodPost, path: route("/v1/vms/%s/%s", name, action), header: opts.header()}
	if stop != nil {
		if action != api.ActionStop && action != api.ActionRestart {
			return nil, fmt.Errorf("%s VM %q: only stop and restart take stop options", action, name)
		}
		r.body = stop
	}
	var op api.Operation
	if err := c.call(ctx, r, &op); err != nil {
		return nil, fmt.Errorf("%s VM %q: %w", action, name, err)
	}
	return &op, nil
}

// StartVM starts a VM.
func (c *Client) StartVM(ctx context.Context, name string) (*api.Operation, error) {
	return c.VMAction(ctx, name, api.ActionStart, nil)
}

// StopVM stops a VM; stop may be nil for the VM's own stop timeout.
func (c *Client) StopVM(ctx context.Context, name string, stop *api.VMStop) (*api.Operation, error) {
	return c.VMAction(ctx, name, api.ActionStop, stop)
}

// RestartVM restarts a VM; stop may be nil for the VM's own stop timeout.
func (c *Client) RestartVM(ctx context.Context, name string, stop *api.VMStop) (*api.Operation, error) {
	return c.VMAction(ctx, name, api.ActionRestart, stop)
}

// PauseVM pauses a running VM.
func (c *Client) PauseVM(ctx context.Context, name string) (*api.Operation, error) {
	return c.VMAction(ctx, name, api.ActionPause, nil)
}

// ResumeVM resumes a paused VM.
func (c *Client) ResumeVM(ctx context.Context, name string) (*api.Operation, error) {
	return c.VMAction(ctx, name, api.ActionResume, nil)
}

// ConsoleLog returns the last bytes of a VM's recorded serial output; bytes
// 0 lets the server choose (64 KiB).
func (c *Client) ConsoleLog(ctx context.Context, name string, bytes int64) ([]byte, error) {
	r := request{method: http.MethodGet, path: route("/v1/vms/%s/console/log", name), accept: "text/plain"}
	if bytes > 0 {
		r.query = url.Values{"bytes": {strconv.FormatInt(bytes, 10)}}
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("get console log of VM %q: %w", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read console log of VM %q: %w", name, err)
	}
	return b, nil
}

// Console opens a console of a VM ("serial" or "vnc"; "" lets the server
// choose) as a websocket carrying the console's bytes both ways. ctx bounds
// the dial and the connection's life; Close ends it.
func (c *Client) Console(ctx context.Context, name, kind string) (net.Conn, error) {
	var q url.Values
	if kind != "" {
		q = url.Values{"type": {kind}}
	}
	conn, err := c.dialWebsocket(ctx, route("/v1/vms/%s/console", name), q)
	if err != nil {
		return nil, fmt.Errorf("open console of VM %q: %w", name, err)
	}
	return conn, nil
}

// VMStats samples what a running VM uses on its host.
func (c *Client) VMStats(ctx context.Context, name string) (*api.VMStats, error) {
	var st api.VMStats
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/vms/%s/stats", name)}, &st); err != nil {
		return nil, fmt.Errorf("get stats of VM %q: %w", name, err)
	}
	return &st, nil
}
