package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// MigrateVM moves a running VM to another host while it runs; an empty
// req.Host lets the scheduler pick. The operation reports the migration's
// progress in the VM's status.migration and can be cancelled while it
// runs (CancelOperation): the VM then keeps running where it was.
func (c *Client) MigrateVM(ctx context.Context, name string, req api.VMMigrate) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/vms/%s/migrate", name), body: req}, &op); err != nil {
		return nil, fmt.Errorf("migrate VM %q: %w", name, err)
	}
	return &op, nil
}

// DrainHost cordons a host and starts a host.drain operation that moves
// every VM placed on it to other hosts, one after another (running ones
// live, stopped ones with their disks copied); DrainResult reads each
// move from the operation.
func (c *Client) DrainHost(ctx context.Context, name string) (*api.Operation, error) {
	var op api.Operation
	if err := c.call(ctx, request{method: http.MethodPost, path: route("/v1/hosts/%s/drain", name)}, &op); err != nil {
		return nil, fmt.Errorf("drain host %q: %w", name, err)
	}
	return &op, nil
}

// DrainResult is the HostDrain a host.drain operation carries as its
// result: what became of each VM so far.
func DrainResult(op *api.Operation) (*api.HostDrain, error) {
	var d api.HostDrain
	if len(op.Result) == 0 {
		return &d, nil
	}
	if err := json.Unmarshal(op.Result, &d); err != nil {
		return nil, fmt.Errorf("reading the result of operation %s: %w", op.ID, err)
	}
	return &d, nil
}

// PutAgentMigration records the destination's side of a migration.
func (c *Client) PutAgentMigration(ctx context.Context, m api.AgentMigration) (*api.AgentMigration, error) {
	var out api.AgentMigration
	if err := c.call(ctx, request{method: http.MethodPut, path: route("/v1/agent/migrations/%s", m.Operation), body: m}, &out); err != nil {
		return nil, fmt.Errorf("record migration %s: %w", m.Operation, err)
	}
	return &out, nil
}

// AgentMigration reads the destination's side of a migration.
func (c *Client) AgentMigration(ctx context.Context, op string) (*api.AgentMigration, error) {
	var out api.AgentMigration
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/agent/migrations/%s", op)}, &out); err != nil {
		return nil, fmt.Errorf("read migration %s: %w", op, err)
	}
	return &out, nil
}
