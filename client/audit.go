package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// AuditStatus returns the audit log's state: size, limits, whether records
// can be written, and its alarms (superadmin).
func (c *Client) AuditStatus(ctx context.Context) (*api.AuditStatus, error) {
	var st api.AuditStatus
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/audit/status"}, &st); err != nil {
		return nil, fmt.Errorf("get audit status: %w", err)
	}
	return &st, nil
}

// VerifyAudit has the server read its whole audit log and check the hash
// chain (superadmin).
func (c *Client) VerifyAudit(ctx context.Context) (*api.AuditVerification, error) {
	var v api.AuditVerification
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/audit/verify"}, &v); err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	return &v, nil
}

// ListAlarms returns the conditions that need an operator now (superadmin).
func (c *Client) ListAlarms(ctx context.Context) ([]api.Alarm, error) {
	var l api.List[api.Alarm]
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/alarms"}, &l); err != nil {
		return nil, fmt.Errorf("list alarms: %w", err)
	}
	return l.Items, nil
}
