package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ReconfigureVM changes the CPUs and memory of a stopped VM (zero keeps a
// value) and returns its vm.reconfigure operation. The server answers
// conflict unless the VM is stopped, and unprocessable when the VM's
// provider lacks the capability "reconfigure".
func (c *Client) ReconfigureVM(ctx context.Context, name string, req api.VMReconfigure, opts VMActionOptions) (*api.Operation, error) {
	if req.VCPUs < 0 || req.MemoryMiB < 0 {
		return nil, fmt.Errorf("reconfigure VM %q: negative vcpus or memory", name)
	}
	if opts.IfMatch < 0 {
		return nil, fmt.Errorf("reconfigure VM %q: negative If-Match version %d", name, opts.IfMatch)
	}
	r := request{method: http.MethodPost, path: route("/v1/vms/%s/reconfigure", name), body: req, header: opts.header()}
	var op api.Operation
	if err := c.call(ctx, r, &op); err != nil {
		return nil, fmt.Errorf("reconfigure VM %q: %w", name, err)
	}
	return &op, nil
}

// ListSnapshots returns a VM's snapshots. The server answers unprocessable
// when the VM's driver or provider lacks the capability "snapshots".
func (c *Client) ListSnapshots(ctx context.Context, name string) ([]api.Snapshot, error) {
	var l api.List[api.Snapshot]
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/vms/%s/snapshots", name)}, &l); err != nil {
		return nil, fmt.Errorf("list snapshots of VM %q: %w", name, err)
	}
	return l.Items, nil
}

// CreateSnapshot takes a snapshot of a VM and returns its
// vm.snapshot.create operation.
func (c *Client) CreateSnapshot(ctx context.Context, name string, snap api.SnapshotCreate) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/vms/%s/snapshots", name), body: snap}, &op); err != nil {
		return nil, fmt.Errorf("snapshot VM %q as %q: %w", name, snap.Name, err)
	}
	return &op, nil
}

// RevertSnapshot returns a VM to one of its snapshots and returns the
// vm.snapshot.revert operation.
func (c *Client) RevertSnapshot(ctx context.Context, name, snapshot string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/vms/%s/snapshots/%s/revert", name, snapshot)}, &op); err != nil {
		return nil, fmt.Errorf("revert VM %q to snapshot %q: %w", name, snapshot, err)
	}
	return &op, nil
}

// DeleteSnapshot removes a snapshot of a VM and returns the
// vm.snapshot.delete operation.
func (c *Client) DeleteSnapshot(ctx context.Context, name, snapshot string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/vms/%s/snapshots/%s", name, snapshot)}, &op); err != nil {
		return nil, fmt.Errorf("delete snapshot %q of VM %q: %w", snapshot, name, err)
	}
	return &op, nil
}

// ConsoleTicket returns how to reach the console of a VM whose provider
// serves it itself (a vSphere WebMKS ticket). The server answers
// unprocessable for a VM on a Polyvisor host, whose console is Console.
// The ticket is a short-lived secret.
func (c *Client) ConsoleTicket(ctx context.Context, name string) (*api.ConsoleTicket, error) {
	var t api.ConsoleTicket
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/vms/%s/console/ticket", name)}, &t); err != nil {
		return nil, fmt.Errorf("get console ticket of VM %q: %w", name, err)
	}
	return &t, nil
}
